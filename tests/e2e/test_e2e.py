"""End to end on real sockets: the real app (`create_app` with the production session factory,
`CallSession`) served by uvicorn on loopback, the real ScoreTurn, GateTool and GenerateCorrection
handlers run in-process (`InProcessTransport`) against moto DynamoDB, the scripted Plivo peer and
the scripted agent over real WebSockets. Speech is the pre-rendered clips (espeak-ng, even when
installed, is not used: the bytes on the wire are then known exactly).

The dialogue is one Tier 0 catches with no LLM: the caller takes back "large pepperoni" and the
agent reads it back anyway (retraction check: intervene), then plans `place_order` with it
(retraction and confirmation checks: block).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mirror.models import CallContext, MirrorConfig
from mirror.state import DynamoDBStateStore
from mirror_bridge.call_end import InMemoryEventSink
from mirror_bridge.tts import GENERIC_CLIP, OfflineTTS, clip_key, load_clip
from mirror_dev.in_process import InProcessTransport
from mirror_dev.plivo_peer import signed_headers
from mirror_dev.scripted_agent import (
    PIZZA_CUSTOMER,
    PIZZA_MISTAKE,
    AgentCall,
    ScriptedAgent,
    idle,
    retracted_pizza_order,
)
from tests.conftest import AUTH_TOKEN, run
from tests.support.harness import NUMBER, TENANT, SupervisedBridge

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

CUSTOMER, MISTAKE = PIZZA_CUSTOMER, PIZZA_MISTAKE
CLEAN_TURNS = [
    ("t1", "Two large pizzas please.", "Great, two large pizzas."),
    ("t2", "Yes, that's all, thanks.", "Thank you, have a nice evening."),
]
BUFFER_LINE = MirrorConfig().buffer_text
BUFFER_AUDIO = load_clip(clip_key(BUFFER_LINE)) or b""
CORRECTION_AUDIO = load_clip(GENERIC_CLIP) or b""  # a correction has no clip of its own


@pytest.fixture
def stack(
    call_state_table: str, dynamodb_client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The handlers' environment (as a Lambda function's), one in-process container per
    function, the call table's store and a CallEnded sink."""
    monkeypatch.setenv("CALL_TABLE", call_state_table)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MirrorBridgeE2E")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "mirror-bridge-e2e")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "ERROR")
    monkeypatch.delenv("MIRROR_CONFIG", raising=False)
    transport = InProcessTransport(containers=1)
    yield {
        "transport": transport,
        "store": DynamoDBStateStore(call_state_table, client=dynamodb_client),
        "events": InMemoryEventSink(),
    }
    transport.shutdown()


def start_bridge(agent: ScriptedAgent, stack: dict[str, Any], **kw: Any) -> SupervisedBridge:
    """Served with its lifespan, as in production: the handlers are loaded and the buffer line
    rendered before the first call."""
    kw.setdefault("hold_budget_s", 2.0)  # the verdict, not the budget, releases or drops audio
    return SupervisedBridge(
        agent.url,
        transport=stack["transport"],
        tts=OfflineTTS(espeak=""),
        store=stack["store"],
        events=stack["events"],
        lifespan=True,
        **kw,
    )


def meta(bridge: SupervisedBridge, call_id: str) -> dict[str, Any]:
    found = bridge.store.get_call_meta(CallContext(call_id=call_id, tenant_id=TENANT), time.time())
    assert found is not None, "no call state stored"
    return found


def verdicts(bridge: SupervisedBridge, call_id: str) -> dict[str, str]:
    ctx = CallContext(call_id=call_id, tenant_id=TENANT)
    return {
        r.turn_id: r.verdict.decision
        for r in bridge.store.list_verdicts(ctx, time.time())  # type: ignore[attr-defined]
    }


def audio_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in messages)


# --- a) the scripted mistake: intervention and tool block ----------------------------------


def test_retracted_item_intervention_on_the_wire_then_the_tool_call_is_blocked(
    stack: dict[str, Any],
) -> None:
    async def main() -> None:
        # the turn reading back the retracted item, its audio, then (after the override) the
        # tool-gate request for place_order, still with the retracted item
        async with ScriptedAgent(retracted_pizza_order) as agent:
            bridge = start_bridge(agent, stack)
            with bridge.server:
                async with bridge.peer(speed=20.0) as peer:
                    await peer.start()
                    await peer.media(5)
                    call = await _call(agent)
                    await call.wait_event("mirror.tool_decision", timeout=15)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()

        # Plivo's side, exactly: clearAudio, the buffer line and its checkpoint, then (after the
        # peer's playedStream) the correction and its checkpoint. No agent audio, ever.
        got = [r.event for r in peer.received]
        k = -(-len(BUFFER_AUDIO) // 1600)
        m = -(-len(CORRECTION_AUDIO) // 1600)
        assert got == ["clearAudio"] + ["playAudio"] * k + ["checkpoint"] + ["playAudio"] * m + [
            "checkpoint"
        ]
        clear, buffer_cp, correction_cp = (peer.received[i].message for i in (0, k + 1, -1))
        assert clear == {"event": "clearAudio", "streamId": peer.stream_id}
        assert audio_of(peer.events("playAudio")[:k]) == BUFFER_AUDIO
        assert audio_of(peer.events("playAudio")[k:]) == CORRECTION_AUDIO
        assert buffer_cp["name"].endswith("-buffer")
        assert correction_cp["name"].endswith("-correction")
        intervention_id = buffer_cp["name"].removesuffix("-buffer")
        assert correction_cp["name"] == f"{intervention_id}-correction"
        assert bytes(peer.heard) == BUFFER_AUDIO + CORRECTION_AUDIO  # the caller heard only us
        assert peer.errors == []
        # what the peer sent between: clearedAudio, then the buffer's playedStream strictly
        # before the correction went out, then the correction's
        sent = [(t, m) for t, m in zip(peer.sent_at, peer.sent, strict=True)
                if m["event"] != "media"]  # fmt: skip
        assert [m["event"] for _, m in sent] == [
            "start", "clearedAudio", "playedStream", "playedStream", "stop",
        ]  # fmt: skip
        assert [m.get("name") for _, m in sent[2:4]] == [buffer_cp["name"], correction_cp["name"]]
        first_correction_at = peer.received[k + 2].at
        assert peer.received[k + 1].at <= sent[2][0] <= first_correction_at

        # the agent: the verdict (a real Tier 0 intervene), the override, then the block
        mirror = [m for m in call.events() if str(m.get("event")).startswith("mirror.")]
        assert [m["event"] for m in mirror] == [
            "mirror.verdict", "mirror.override", "mirror.tool_decision",
        ]  # fmt: skip
        verdict = mirror[0]["verdict"]
        assert mirror[0]["turn_id"] == "t1"
        assert verdict["decision"] == "intervene" and verdict["decided_by"] == "tier0"
        assert "retraction" in {r["check"] for r in verdict["reasons"]}
        override = mirror[1]
        assert override["turn_id"] == "t1" and override["intervention_id"] == intervention_id
        assert "took back" in override["note"]  # GenerateCorrection's note, not the fallback
        decision = mirror[2]
        assert decision["request_id"] == "g1" and decision["result"]["decision"] == "block"
        (tool,) = decision["result"]["decisions"]
        assert tool["name"] == "place_order" and tool["decision"] == "block"
        assert "retraction" in {r["check"] for r in tool["reasons"]}
        assert "agent-t1" not in [m.get("name") for m in call.events("playedStream")]
        assert len(call.events("media")) == 5

        # the state: the verdict, the end, one CallEnded
        assert verdicts(bridge, peer.call_id) == {"t1": "intervene"}
        state = meta(bridge, peer.call_id)
        assert state["end_reason"] == "stop" and state["bridge_interventions"] == 1
        assert state["bridge_interventions_completed"] == 1
        (ended,) = bridge.call_ended()
        assert ended["reason"] == "stop" and ended["counts"]["gate_block"] == 1
        session = bridge.sessions[0]
        assert session.interventions[0].outcome == "completed"
        assert session.counts["internal_errors"] == 0

    run(main(), timeout=40)


# --- b) a clean call -------------------------------------------------------------------------


def test_clean_call_relays_every_frame_both_ways_in_order(stack: dict[str, Any]) -> None:
    caller = [bytes([i + 1]) * 160 for i in range(50)]
    spoken = {tid: [bytes([100 + 10 * n + i]) * 160 for i in range(10)]
              for n, (tid, _, _) in enumerate(CLEAN_TURNS)}  # fmt: skip

    async def agent_script(call: AgentCall) -> None:
        for n, (tid, customer, text) in enumerate(CLEAN_TURNS):
            await call.wait_event("media", count=10 * (n + 1))
            await call.turn(tid, customer, text)
            for chunk in spoken[tid]:
                await call.say(frames=1, audio=chunk)
            await call.send({"event": "checkpoint", "streamId": call.stream_id, "name": tid})
        await call.wait_event("dtmf")
        await call.send({"event": "sendDTMF", "dtmf": "1#"})
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = start_bridge(agent, stack, hold_budget_s=0.1)
            with bridge.server:
                async with bridge.peer(speed=5.0) as peer:
                    await peer.start()
                    await peer.media(caller)
                    await peer.dtmf("7")
                    call = await _call(agent)
                    await call.wait_event("playedStream", count=2, timeout=10)
                    await call.wait_event("mirror.verdict", count=2, timeout=10)
                    await peer.wait_for(lambda p: bool(p.events("sendDTMF")))
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()

        # Plivo -> agent: start, 50 media frames in order (unchanged), dtmf, the two acks, stop
        media = call.events("media")
        assert [m["media"]["chunk"] for m in media] == list(range(1, 51))
        assert audio_of(media) == b"".join(caller)
        sent_media = [m for m in peer.sent if m["event"] == "media"]
        assert media == sent_media  # relayed as sent, none dropped or duplicated
        plivo_events = [m["event"] for m in call.events() if not m["event"].startswith("mirror.")]
        assert plivo_events[0] == "start" and plivo_events[-1] == "stop"
        assert sorted(plivo_events[1:-1]) == sorted(
            ["media"] * 50 + ["dtmf"] + ["playedStream"] * 2
        )
        assert [m["name"] for m in call.events("playedStream")] == ["t1", "t2"]
        # agent -> Plivo: 20 playAudio in order, each turn's checkpoint after its audio, sendDTMF
        expected = []
        for tid, _, _ in CLEAN_TURNS:
            expected += ["playAudio"] * 10 + [f"checkpoint:{tid}"]
        expected.append("sendDTMF")
        got = [r.event + (f":{r.message['name']}" if r.event == "checkpoint" else "")
               for r in peer.received]  # fmt: skip
        assert got == expected
        agent_audio = b"".join(b"".join(spoken[tid]) for tid, _, _ in CLEAN_TURNS)
        assert audio_of(peer.events("playAudio")) == agent_audio
        assert bytes(peer.heard) == agent_audio  # played once each, in order
        # the real judge let both turns through
        assert [v["verdict"]["decision"] for v in call.events("mirror.verdict")] == ["allow"] * 2
        assert verdicts(bridge, peer.call_id) == {"t1": "allow", "t2": "allow"}
        (ended,) = bridge.call_ended()
        assert ended["reason"] == "stop"
        session = bridge.sessions[0]
        assert session.counts["agent_frames_dropped"] == 0 and session.counts["interventions"] == 0
        assert meta(bridge, peer.call_id)["end_reason"] == "stop"

    run(main(), timeout=40)


# --- c) the agent leaves -------------------------------------------------------------------


def test_agent_disconnecting_mid_call_ends_it_cleanly_and_saves_the_state(
    stack: dict[str, Any],
) -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media", count=3)
        tid, customer, text = CLEAN_TURNS[0]
        await call.turn(tid, customer, text)
        await call.say(frames=2)
        await call.wait_event("mirror.verdict", timeout=10)
        await call.conn.close()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = start_bridge(agent, stack)
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    with contextlib.suppress(ConnectionClosed):
                        await peer.media(200)  # 4 s of caller audio; the call ends sooner
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await bridge.wait_ended()
                await asyncio.wait_for(agent.calls[0].closed.wait(), 5)
        assert peer.close_code == 1000
        assert peer.events("playAudio") and len(peer.events("playAudio")) == 2
        (ended,) = bridge.call_ended()
        assert ended["reason"] == "agent_closed"
        state = meta(bridge, peer.call_id)
        assert state["end_reason"] == "agent_closed" and state["ended_at"]
        assert verdicts(bridge, peer.call_id) == {"t1": "allow"}
        assert bridge.relays[0].end_reason == "agent_closed"
        assert bridge.sessions[0].counts["internal_errors"] == 0

    run(main(), timeout=30)


# --- d) Plivo leaves mid-intervention --------------------------------------------------------


def test_plivo_disconnecting_mid_intervention_saves_the_state_and_ends_once(
    stack: dict[str, Any],
) -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media")
        await call.turn("t1", CUSTOMER, MISTAKE)
        await call.say(frames=10)
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = start_bridge(agent, stack)
            with bridge.server:
                peer = await bridge.peer(speed=1.0).connect()  # the buffer line takes 2 s
                await peer.start()
                await peer.media(2)
                await peer.wait_for(lambda p: bool(p.events("checkpoint")), timeout=15)
                await peer.close()  # abrupt: no stop, the buffer line not yet played
                await bridge.wait_ended()
                call = agent.calls[0]
                await asyncio.wait_for(call.closed.wait(), 5)
        assert [r.event for r in peer.received][0] == "clearAudio"
        assert "playedStream" not in [m["event"] for m in peer.sent]
        (ended,) = bridge.call_ended()
        assert ended["reason"] == "plivo_closed" and ended["counts"]["interventions"] == 1
        state = meta(bridge, peer.call_id)
        assert state["end_reason"] == "plivo_closed" and state["bridge_interventions"] == 1
        assert verdicts(bridge, peer.call_id) == {"t1": "intervene"}
        # the correction was still fetched (close waits for it) and its one-shot note stored
        ctx = CallContext(call_id=peer.call_id, tenant_id=TENANT)
        note = bridge.store.take_override(ctx, time.time())  # type: ignore[attr-defined]
        assert note is not None and "took back" in note
        session = bridge.sessions[0]
        assert session.interventions[0].outcome in ("cancelled", "ended")
        assert "mirror.override" not in [m["event"] for m in call.events()]
        assert session.counts["internal_errors"] == 0
        assert bridge.relays[0].end_reason == "plivo_closed"

    run(main(), timeout=40)


# --- e) signatures ---------------------------------------------------------------------------


def test_bad_signatures_get_403_and_no_stream(stack: dict[str, Any]) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = start_bridge(agent, stack)
            with bridge.server:
                for knob in ({"bad_signature": True}, {"missing_headers": True}):
                    with pytest.raises(InvalidStatus) as info:
                        await bridge.peer(**knob).connect()
                    assert info.value.response.status_code == 403
                base = f"http://127.0.0.1:{bridge.port}"
                form = {"CallUUID": "CA-403", "From": "14155550100", "To": NUMBER,
                        "Direction": "inbound"}  # fmt: skip
                async with httpx.AsyncClient(base_url=base) as client:
                    answers = {}
                    for name, token in (("bad", AUTH_TOKEN + "-wrong"), ("good", AUTH_TOKEN)):
                        for path in ("/plivo/answer", "/plivo/stream-status"):
                            headers = signed_headers(token, base + path, "POST", form)
                            r = await client.post(path, data=form, headers=headers)
                            answers[name, path] = (r.status_code, r.text)
                # a good signature still connects (the 403s are about the signature)
                async with bridge.peer() as peer:
                    await peer.start()
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await bridge.wait_ended()
        assert answers["bad", "/plivo/answer"][0] == 403
        assert answers["bad", "/plivo/stream-status"][0] == 403
        assert answers["good", "/plivo/answer"][0] == 200
        assert "<Stream" in answers["good", "/plivo/answer"][1]
        assert answers["good", "/plivo/stream-status"][0] == 200
        assert len(agent.calls) == 1 and len(bridge.relays) == 1 and len(bridge.sessions) == 1
        # the rejected status callback recorded nothing; the signed one did
        assert [s["call_id"] for s in bridge.app.state.stream_statuses] == ["CA-403"]

    run(main(), timeout=30)


# --- f) malformed frames -----------------------------------------------------------------------


def test_malformed_frames_from_either_side_are_skipped_and_the_call_goes_on(
    stack: dict[str, Any],
) -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media", count=2)
        for bad in ("{not json", "[1, 2]", {"event": "mirror.bogus", "turn_id": "x"},
                    {"event": "mirror.turn", "customer_text": "no id"},
                    {"event": "playAudio", "media": {"payload": "%%%"}},
                    {"event": "media", "media": {"payload": ""}}):  # fmt: skip
            await call.send(bad)
        await call.conn.send(b"\x00\x01")
        tid, customer, text = CLEAN_TURNS[0]
        await call.turn(tid, customer, text)
        await call.say(frames=3, checkpoint="after-junk")
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = start_bridge(agent, stack, hold_budget_s=0.5)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    assert peer._ws is not None
                    for bad in ("not json", "[1]", '{"no": "event"}', '{"event": "media"}',
                                '{"event": "playedStream"}', '{"event": "dtmf", "dtmf": 7}',
                                '{"event": "playFailed", "reason": "x"}'):  # fmt: skip
                        await peer.send_raw(bad)
                    await peer._ws.send(b"\x00binary")
                    await peer.media(2)
                    call = await _call(agent)
                    await call.wait_event("playedStream", timeout=10)
                    await call.wait_event("mirror.verdict", timeout=10)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()
                relay = bridge.relays[0]
        # Plivo's junk never reached the agent; the good frames did
        assert [m["event"] for m in call.events() if not m["event"].startswith("mirror.")] == [
            "start", "media", "media", "playedStream", "stop",
        ]  # fmt: skip
        skipped = relay.stats.skipped
        assert skipped["plivo_malformed"] == 6 and skipped["plivo_unknown"] == 1
        assert skipped["plivo_binary"] == 1
        # the agent's junk got errors back, and its good turn went on as usual
        errors = [(e["code"], e.get("ref_event")) for e in call.events("mirror.error")]
        assert errors == [
            ("malformed_frame", None), ("malformed_frame", None),
            ("unknown_event", None), ("invalid_message", "mirror.turn"),
            ("invalid_message", "playAudio"), ("unsupported_frame", "media"),
            ("unsupported_frame", None),
        ]  # fmt: skip
        assert [r.event for r in peer.received] == ["playAudio"] * 3 + ["checkpoint"]
        assert call.events("mirror.verdict")[0]["verdict"]["decision"] == "allow"
        (ended,) = bridge.call_ended()
        assert ended["reason"] == "stop"
        assert bridge.sessions[0].counts["internal_errors"] == 0

    run(main(), timeout=30)


async def _call(agent: ScriptedAgent) -> AgentCall:
    await asyncio.wait_for(agent.connected.wait(), 10)
    return agent.calls[0]
