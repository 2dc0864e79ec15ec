"""The tool gate when the transport fails in a way it did not announce (issue 13, item 4): any
exception out of the transport is a `ScoringFailure` of kind `transport`, so the agent always
gets a tool decision, and an irreversible call is held."""

from __future__ import annotations

from typing import Any

import pytest

from mirror_bridge.scoring import CallScope, ScoringClient, ScoringFailure
from tests.conftest import run
from tests.fakes.session import LOOKUP, PLACE, gate_request, make_session, turn, until
from tests.fakes.transport import FakeTransport, gate_result

pytestmark = pytest.mark.unit


def _raise(payload: dict[str, Any]) -> Any:
    raise ConnectionResetError("body read failed")


def test_any_transport_exception_is_a_scoring_failure() -> None:
    from mirror_bridge.agent_protocol import parse_mirror_message

    client = ScoringClient(FakeTransport({"score_turn": [(0.0, _raise)]}), CallScope("c", "acme"))
    failure = run(client.score(parse_mirror_message(turn("t1")), "t1"))  # type: ignore[arg-type]
    assert isinstance(failure, ScoringFailure)
    assert failure.kind == "transport" and "ConnectionResetError" in failure.detail


async def _gate(script: Any) -> tuple[dict[str, Any], Any]:
    transport = FakeTransport({"gate_tool": [(0.0, script)]})
    session, wire, _ = make_session(transport)
    await session.on_mirror_message(gate_request(PLACE, LOOKUP))
    await until(lambda: bool(wire.agent))
    await session.close("stop")
    return wire.agent[0], session


def test_a_transport_exception_holds_irreversible_calls_and_answers_the_agent() -> None:
    message, session = run(_gate(_raise))
    assert message["event"] == "mirror.tool_decision" and message["request_id"] == "r1"
    decisions = {d["name"]: d for d in message["result"]["decisions"]}
    assert message["result"]["decision"] == "hold"
    assert decisions["place_order"]["decision"] == "hold"
    assert decisions["place_order"]["failure"] == "internal_error"
    assert decisions["lookup_order"]["decision"] == "allow"
    assert session.counts["gate_failures"] == 1
    assert session.counts["internal_errors"] == 0  # handled, not a crashed task


def test_a_working_transport_still_decides() -> None:
    """The allow twin: GateTool's own allow goes through unchanged."""
    message, session = run(_gate(lambda payload: gate_result("allow")))
    assert message["result"]["decision"] == "allow"
    assert session.counts["gate_failures"] == 0
