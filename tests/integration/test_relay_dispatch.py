"""A slow ScoreTurn (or a slow session) never stalls the relay: on real loopback sockets, the
caller's audio keeps reaching the agent, the agent's audio is released by the hold budget, and
later control messages are answered long before the slow verdict."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from mirror_bridge.agent_protocol import error_reply
from mirror_bridge.relay import PassThroughSession
from mirror_dev.scripted_agent import AgentCall, ScriptedAgent
from tests.conftest import run
from tests.fakes.transport import ALLOW, FakeTransport
from tests.support.harness import SupervisedBridge
from tests.support.relay import Bridge

pytestmark = pytest.mark.integration

SLOW_S = 1.5
GATE_ANSWER: dict[str, Any] = {  # a whole GateResult: the session validates GateTool's answer
    "call_id": "c",
    "tenant_id": "acme",
    "decision": "allow",
    "decisions": [
        {
            "tool_call_id": "c1",
            "name": "lookup_menu",
            "decision": "allow",
            "irreversible": False,
            "decided_by": "not_gated",
        }
    ],
}


def _at(call: AgentCall, event: str, n: int = 1) -> float:
    return [t for t, m in call.received if m.get("event") == event][n - 1]


def test_a_slow_score_turn_delays_neither_direction_nor_later_control_messages() -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media")
        await call.turn("t1", "Two large pizzas please.", "Great, two large pizzas!")
        for i in range(5):
            await call.say(frames=1, audio=bytes([i + 1]) * 160)
        await call.send({"event": "checkpoint", "streamId": call.stream_id, "name": "a1"})
        await call.tool_gate("g1", [{"id": "c1", "name": "lookup_menu", "args": {}}])
        await call.send({"event": "mirror.bogus", "turn_id": "x"})
        await call.closed.wait()

    async def main() -> None:
        transport = FakeTransport(
            {"score_turn": [(SLOW_S, ALLOW)], "gate_tool": [(0.0, GATE_ANSWER)]}
        )
        async with ScriptedAgent(agent_script) as agent:
            bridge = SupervisedBridge(agent.url, transport=transport, hold_budget_s=0.05)
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    frames = [bytes([i]) * 160 for i in range(40)]  # 0.8 s of paced audio
                    await peer.media(frames)
                    call = agent.calls[0]
                    verdict = await call.wait_event("mirror.verdict", timeout=5)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()
        assert verdict["verdict"] == ALLOW and verdict["turn_id"] == "t1"
        verdict_at = _at(call, "mirror.verdict")
        # Plivo -> agent: every caller frame, in order, promptly, all before the slow verdict
        media = call.events("media")
        assert [m["media"]["payload"] for m in media] == [
            base64.b64encode(f).decode() for f in frames
        ]
        media_sent = [t for t, m in zip(peer.sent_at, peer.sent, strict=True)
                      if m["event"] == "media"]  # fmt: skip
        media_got = [t for t, m in call.received if m.get("event") == "media"]
        assert max(g - s for s, g in zip(media_sent, media_got, strict=True)) < 0.25
        assert media_got[-1] < verdict_at
        # agent -> Plivo: the audio released by the 50 ms budget, in order, not by the verdict
        assert [m["event"] for m in peer.events()] == ["playAudio"] * 5 + ["checkpoint"]
        payloads = [base64.b64decode(m["media"]["payload"])[0] for m in peer.events("playAudio")]
        assert payloads == [1, 2, 3, 4, 5]
        assert peer.received[-1].at < verdict_at - 0.5
        assert _at(call, "playedStream") < verdict_at  # the agent's own ack came back too
        # control messages sent after the turn are answered while ScoreTurn is still running
        decision = call.events("mirror.tool_decision")[0]
        assert decision["request_id"] == "g1" and decision["result"] == GATE_ANSWER
        error = call.events("mirror.error")[0]
        assert error["code"] == "unknown_event" and error["ref_event"] is None
        assert max(_at(call, "mirror.tool_decision"), _at(call, "mirror.error")) < verdict_at - 0.5
        session = bridge.sessions[0]
        assert session.counts["budget_expired"] == 1
        assert bridge.relays[0].stats.skipped["agent_mirror_slow"] == 0  # the session was quick

    run(main())


class SlowSession(PassThroughSession):
    """A session that takes 1 s over each Mirror message (the relay must not wait for it)."""

    async def on_mirror_message(self, message: Any) -> None:
        await asyncio.sleep(1.0)
        await self.io.send_agent(error_reply("not_configured", "slow", message.model_dump()))


def test_a_slow_session_does_not_stall_the_agents_audio_and_its_reply_still_comes() -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.turn("t1", "hi", "hello")
        for i in range(3):
            await call.say(frames=1, audio=bytes([i + 1]) * 160)
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = Bridge(agent.url, session_factory=SlowSession)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await peer.wait_for(lambda p: len(p.events("playAudio")) == 3, timeout=5)
                    call = agent.calls[0]
                    reply = await call.wait_event("mirror.error", timeout=5)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                relay = bridge.app.state.relays[0]
        assert reply["message"] == "slow" and reply["ref_id"] == "t1"
        assert peer.received[2].at < _at(call, "mirror.error") - 0.5  # audio first, by far
        assert relay.stats.skipped["agent_mirror_slow"] == 1

    run(main())
