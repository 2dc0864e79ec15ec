"""A turn that could not be scored is never silently unsupervised (issue 13, "visible failure"):
the agent gets `mirror.unsupervised` with the failure kind, the session counts it by kind. Run
through the real bridge (the app, the production session factory, a scripted agent and a
signed Plivo peer on loopback) with a function transport that fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mirror_bridge import agent_protocol
from mirror_bridge.transport import FunctionError
from mirror_dev.scripted_agent import AgentCall, ScriptedAgent
from tests.conftest import run
from tests.fakes.transport import ALLOW, FakeTransport
from tests.support.harness import SupervisedBridge

pytestmark = pytest.mark.integration

FAILURES: dict[str, tuple[float, Any]] = {
    "timeout": (10.0, ALLOW),  # slower than the session's 2 s score timeout
    "transport": (0.0, FunctionError("score_turn", "transport", "connection reset")),
    # the Lambda transport turns an `{"error": ...}` answer into this
    "error_response": (0.0, FunctionError("score_turn", "error_response", "state_unavailable")),
    "invalid_response": (0.0, {"decision": "maybe"}),  # not a verdict
    "function_error": (0.0, FunctionError("score_turn", "function_error", "Unhandled")),
}


async def _one_turn(transport: FakeTransport) -> tuple[AgentCall, Any]:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media")
        await call.turn("t1", "Two large pizzas please.", "Great, two large pizzas!")
        await call.say(frames=1)
        await call.closed.wait()

    async with ScriptedAgent(agent_script) as agent:
        bridge = SupervisedBridge(agent.url, transport=transport)
        with bridge.server:
            async with bridge.peer(speed=1.0) as peer:
                await peer.start()
                await peer.media(3)
                call = agent.calls[0]
                await call.wait_event("mirror.unsupervised", timeout=5)
                await peer.stop()
                await asyncio.wait_for(call.closed.wait(), 5)
            await bridge.wait_ended()
        return call, bridge


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_a_turn_score_turn_could_not_score_is_reported_to_the_agent(kind: str) -> None:
    transport = FakeTransport({"score_turn": [FAILURES[kind]]})
    call, bridge = run(_one_turn(transport))
    [notice] = call.events("mirror.unsupervised")
    assert notice == {
        "event": "mirror.unsupervised",
        "turn_id": "t1",
        "failure": kind,
        "message": "this turn could not be scored; it went out unsupervised",
    }
    assert (
        agent_protocol.MirrorUnsupervised.model_validate(notice).model_dump() == notice
    )  # documented
    assert call.events("mirror.verdict") == []  # no verdict was invented
    counts = bridge.sessions[0].counts
    assert counts["score_failures"] == 1 and counts[f"score_failure_{kind}"] == 1
    assert counts["unsupervised_notices"] == 1
    (ended,) = bridge.call_ended()
    assert ended["counts"][f"score_failure_{kind}"] == 1  # in CallEnded's counts, by kind


def test_a_scored_turn_gets_its_verdict_and_no_unsupervised_notice() -> None:
    """The allow twin: a working ScoreTurn is not reported as a failure."""

    async def main() -> tuple[AgentCall, Any]:
        async def agent_script(call: AgentCall) -> None:
            await call.wait_event("media")
            await call.turn("t1", "Two large pizzas please.", "Great, two large pizzas!")
            await call.closed.wait()

        async with ScriptedAgent(agent_script) as agent:
            bridge = SupervisedBridge(
                agent.url, transport=FakeTransport({"score_turn": [(0.0, ALLOW)]})
            )
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    await peer.media(3)
                    call = agent.calls[0]
                    await call.wait_event("mirror.verdict", timeout=5)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()
            return call, bridge

    call, bridge = run(main())
    assert call.events("mirror.unsupervised") == []
    counts = bridge.sessions[0].counts
    assert counts["score_failures"] == 0 and counts["unsupervised_notices"] == 0
