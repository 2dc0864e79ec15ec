"""CallSession's tool gate: GateTool's answer goes back to the agent; failures hold
irreversible calls and allow reversible ones."""

from __future__ import annotations

from typing import Any

import pytest

from mirror_bridge.transport import FunctionError
from tests.conftest import run
from tests.fakes.session import LOOKUP, PLACE, gate_request, make_session, until
from tests.fakes.transport import FakeTransport, gate_result

pytestmark = pytest.mark.unit


async def _decide(script: Any, *calls: dict[str, Any], timeout_s: float = 1.0) -> tuple:
    transport = FakeTransport({"gate_tool": [script]})
    session, wire, _ = make_session(transport, gate_timeout_s=timeout_s)
    await session.on_mirror_message(gate_request(*calls))
    await until(lambda: bool(wire.agent))
    await session.close("stop")
    return wire.agent[0], transport, session


@pytest.mark.parametrize("decision", ["allow", "block", "hold"])
def test_gate_decision_goes_back_to_the_agent(decision: str) -> None:
    message, transport, _ = run(_decide((0.0, gate_result(decision)), PLACE))
    assert message == {
        "event": "mirror.tool_decision",
        "request_id": "r1",
        "result": gate_result(decision),
    }
    payload = transport.named("gate_tool")[0].payload
    assert payload["tool_calls"] == [PLACE] and payload["tenant_id"] == "acme"
    assert payload["customer_text"] == "yes please" and "event" not in payload


def test_gate_timeout_holds_irreversible_and_allows_reversible() -> None:
    message, _, session = run(_decide((5.0, gate_result("allow")), PLACE, LOOKUP, timeout_s=0.05))
    decisions = {d["name"]: d for d in message["result"]["decisions"]}
    assert message["result"]["decision"] == "hold"
    assert decisions["place_order"]["decision"] == "hold"
    assert decisions["place_order"]["failure"] == "tier_timeout"
    assert decisions["place_order"]["spoken_line"]
    assert decisions["lookup_order"]["decision"] == "allow"
    assert session.counts["gate_failures"] == 1


def test_gate_error_answer_holds_irreversible() -> None:
    error = FunctionError("gate_tool", "error_response", "state_unavailable")
    message, _, _ = run(_decide((0.0, error), PLACE))
    (decision,) = message["result"]["decisions"]
    assert decision["decision"] == "hold" and decision["failure"] == "store_unavailable"


def test_gate_answer_that_does_not_validate_holds_irreversible() -> None:
    message, _, session = run(_decide((0.0, {"decision": "allow"}), PLACE, LOOKUP))
    decisions = {d["name"]: d for d in message["result"]["decisions"]}
    assert message["result"]["decision"] == "hold"
    assert decisions["place_order"]["failure"] == "internal_error"
    assert decisions["lookup_order"]["decision"] == "allow"
    assert session.counts["gate_failures"] == 1


def test_gate_request_that_does_not_validate_is_answered_and_never_gated() -> None:
    async def scenario() -> None:
        transport = FakeTransport({"gate_tool": [(0.0, gate_result("allow"))]})
        session, wire, _ = make_session(transport)
        bad = {"id": "c9", "name": "place_order", "args": "not-a-dict"}
        await session.on_mirror_message(gate_request(bad))
        assert wire.agent[0]["event"] == "mirror.error"
        assert wire.agent[0]["code"] == "invalid_message" and wire.agent[0]["ref_id"] == "r1"
        assert transport.named("gate_tool") == []
        await session.close("stop")

    run(scenario())


def test_unknown_mirror_message_gets_an_error_not_a_dropped_call() -> None:
    async def scenario() -> None:
        session, wire, _ = make_session(FakeTransport())
        await session.on_mirror_message({"event": "mirror.nonsense", "turn_id": "t1"})
        assert wire.agent[0]["event"] == "mirror.error"
        assert wire.agent[0]["code"] == "unknown_event" and wire.agent[0]["ref_id"] == "t1"
        await session.close("stop")

    run(scenario())
