"""CallSession: holding a turn's audio while it is scored, and the intervention sequence.

Pure asyncio with fakes (scripted transport with delays, FakeTTS, recording sockets)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from mirror.models import CallContext
from mirror.state import InMemoryStateStore
from mirror_bridge.call_end import StoreStateWriter
from mirror_bridge.outbound import _Writer
from mirror_bridge.transport import FunctionError
from tests.conftest import run
from tests.fakes.session import CALL_ID, frame, make_session, played, start_event, turn, until
from tests.fakes.transport import ALLOW, CORRECTION, INTERVENE, FakeTransport

pytestmark = pytest.mark.unit


def test_allowed_audio_is_held_then_released_in_order_within_the_budget() -> None:
    async def scenario() -> None:
        transport = FakeTransport({"score_turn": [(0.02, ALLOW)]})
        session, wire, _ = make_session(transport, hold_budget_s=0.1)
        await session.on_start(start_event())
        await session.on_mirror_message(turn("t1"))
        t0 = time.monotonic()
        for n in range(5):
            await session.on_agent_audio(frame(n))
        await session.on_agent_audio({"event": "checkpoint", "streamId": "s", "name": "agent-1"})
        await asyncio.sleep(0.005)
        assert wire.plivo == []  # held while the verdict is pending
        await until(lambda: len(wire.plivo) == 6)
        assert wire.plivo_at[0] - t0 < 0.1  # released by the verdict, not the budget
        for n in range(5, 8):  # after the verdict: straight through, behind the held ones
            await session.on_agent_audio(frame(n))
        await until(lambda: len(wire.plivo) == 9)
        await asyncio.sleep(0.15)  # the budget timer firing later must not resend anything
        expected = [frame(n) for n in range(5)]
        expected.append({"event": "checkpoint", "streamId": "s", "name": "agent-1"})
        expected += [frame(n) for n in range(5, 8)]
        assert wire.plivo == expected
        assert session.counts["budget_expired"] == 0
        assert wire.agent[0]["event"] == "mirror.verdict" and wire.agent[0]["turn_id"] == "t1"
        payload = transport.named("score_turn")[0].payload
        assert payload["call_id"] and payload["tenant_id"] == "acme"
        assert payload["turn_id"] == "t1" and payload["agent_text"] == "One large coming up."
        await session.close("stop")

    run(scenario())


def test_budget_expiry_releases_audio_and_counts_it() -> None:
    async def scenario() -> None:
        transport = FakeTransport({"score_turn": [(0.3, ALLOW)]})
        session, wire, _ = make_session(transport, hold_budget_s=0.05)
        await session.on_start(start_event())
        await session.on_mirror_message(turn("t1"))
        t0 = time.monotonic()
        for n in range(3):
            await session.on_agent_audio(frame(n))
        await until(lambda: len(wire.plivo) == 3)
        assert 0.04 <= wire.plivo_at[0] - t0 < 0.25  # the budget, long before the verdict
        assert session.counts["budget_expired"] == 1
        await until(lambda: bool(wire.agent))  # the late allow releases nothing twice
        await asyncio.sleep(0.01)
        assert wire.plivo == [frame(n) for n in range(3)]
        await session.close("stop")

    run(scenario())


def test_score_failure_fails_open_at_once_and_counts() -> None:
    async def scenario() -> None:
        for answer in (
            FunctionError("score_turn", "timeout", "slow"),
            FunctionError("score_turn", "error_response", "state_unavailable"),
        ):
            transport = FakeTransport({"score_turn": [(0.01, answer)]})
            session, wire, _ = make_session(transport, hold_budget_s=1.0)
            await session.on_mirror_message(turn("t1"))
            await session.on_agent_audio(frame(1))
            t0 = time.monotonic()
            await until(lambda w=wire: len(w.plivo) == 1)  # type: ignore[misc]
            assert time.monotonic() - t0 < 0.5  # the failure released it, not the 1 s budget
            assert session.counts["score_failures"] == 1
            assert not any(m["event"] == "clearAudio" for m in wire.plivo)
            await session.close("stop")

    run(scenario())


def test_a_new_turn_releases_the_previous_turns_audio_first() -> None:
    async def scenario() -> None:
        transport = FakeTransport({"score_turn": [(0.2, ALLOW)]})
        session, wire, _ = make_session(transport, hold_budget_s=1.0)
        await session.on_mirror_message(turn("t1"))
        await session.on_agent_audio(frame(1))
        await session.on_mirror_message(turn("t2"))
        await session.on_agent_audio(frame(2))
        await until(lambda: len(wire.plivo) == 2)
        assert wire.plivo == [frame(1), frame(2)]
        await session.close("stop")

    run(scenario())


async def _intervene_to_buffer(transport: FakeTransport, **config: object):  # type: ignore[no-untyped-def]
    session, wire, sink = make_session(transport, hold_budget_s=0.5, **config)
    await session.on_start(start_event())
    await session.on_mirror_message(turn("t1"))
    for n in range(3):
        await session.on_agent_audio(frame(n))
    await until(lambda: len(wire.checkpoints()) == 1)
    return session, wire, sink


def test_intervention_sequence_on_the_wire() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.01, INTERVENE)], "generate_correction": [(0.03, CORRECTION)]}
        )
        session, wire, sink = await _intervene_to_buffer(transport)
        buffer_name = wire.checkpoints()[0]
        events = wire.events()
        assert events[0] == "clearAudio" and wire.plivo[0]["streamId"]
        assert set(events[1:-1]) == {"playAudio"} and events[-1] == "checkpoint"
        assert all(m != frame(n) for m in wire.plivo for n in range(3))  # held audio dropped
        await session.on_agent_audio(frame(9))  # the intervened turn's audio stops here
        # the correction was requested in parallel, before the buffer line was played
        assert transport.named("generate_correction")
        request = transport.named("generate_correction")[0]
        assert request.payload["verdict"]["decision"] == "intervene"
        assert request.payload["turn_id"] == "t1"
        await asyncio.sleep(0.06)
        assert len(wire.checkpoints()) == 1  # nothing more until the buffer's playedStream
        await session.on_plivo_event({"event": "clearedAudio", "streamId": "x"})  # our ack
        await session.on_plivo_event(played(buffer_name))
        await until(lambda: len(wire.checkpoints()) == 2)
        correction_name = wire.checkpoints()[1]
        assert correction_name != buffer_name and buffer_name.endswith("-buffer")
        tail = wire.events()[len(events) :]
        assert set(tail[:-1]) == {"playAudio"} and tail[-1] == "checkpoint"
        assert [m["event"] for m in wire.agent] == ["mirror.verdict"]  # override not yet
        await session.on_plivo_event(played(correction_name))
        await until(lambda: len(wire.agent) == 2)
        override = wire.agent[1]
        assert override["event"] == "mirror.override"
        assert override["note"] == CORRECTION["override_note"] and override["turn_id"] == "t1"
        assert frame(9) not in wire.plivo
        # the buffer line came from the cache, the correction from the TTS
        buffer_audio = [m for m in wire.plivo[1 : len(events) - 1]]
        assert sum(len(m["media"]["payload"]) for m in buffer_audio) > 0
        assert session.tts.calls[0][0] == "Let me make sure I got that right."  # type: ignore[attr-defined]
        assert session.tts.calls[1][0] == CORRECTION["correction_text"]  # type: ignore[attr-defined]
        assert session.counts["interventions_completed"] == 1
        await session.close("stop")
        assert len(sink.events) == 1

    run(scenario())


def test_wrong_name_played_stream_does_not_resolve_the_wait() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _intervene_to_buffer(transport)
        name = wire.checkpoints()[0]
        for wrong in (name + "x", name[:-1], "agent-1", name.replace("buffer", "correction")):
            await session.on_plivo_event(played(wrong))
        await session.on_plivo_event({**played(name), "streamId": "another-stream"})
        await asyncio.sleep(0.05)
        assert len(wire.checkpoints()) == 1
        await session.on_plivo_event({"event": "played", "name": name})  # alias, no streamId
        await until(lambda: len(wire.checkpoints()) == 2)
        assert session.checkpoints.stale == 5
        await session.close("stop")

    run(scenario())


def test_two_interventions_in_a_row_never_cross_resolve() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _intervene_to_buffer(transport)
        first = wire.checkpoints()[0]
        await session.on_plivo_event(played(first))
        await until(lambda: len(wire.checkpoints()) == 2)
        await session.on_plivo_event(played(wire.checkpoints()[1]))
        await until(lambda: len(wire.agent) == 2)
        # a second intervene right after: the session adds no cooldown of its own
        await session.on_mirror_message(turn("t2"))
        await until(lambda: len(wire.checkpoints()) == 3)
        second = wire.checkpoints()[2]
        assert len(set(wire.checkpoints())) == 3
        for old in wire.checkpoints()[:2]:  # late duplicate acks of the first intervention
            await session.on_plivo_event(played(old))
        await asyncio.sleep(0.05)
        assert len(wire.checkpoints()) == 3  # still waiting for its own buffer ack
        await session.on_plivo_event(played(second))
        await until(lambda: len(wire.checkpoints()) == 4)
        await session.on_plivo_event(played(wire.checkpoints()[3]))
        await until(lambda: len(wire.agent) == 4)
        assert session.counts["interventions_completed"] == 2
        assert session.counts["stale_played"] == 2
        await session.close("stop")

    run(scenario())


def test_unsolicited_cleared_audio_is_counted_and_fails_no_wait() -> None:
    """A clearedAudio that answers no clear of ours (repeated or late) must not cancel the
    intervention (issue 13, item 12; tests/unit/test_intervention_faults.py has the rest)."""

    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _intervene_to_buffer(transport, checkpoint_margin_s=5.0)
        await session.on_plivo_event({"event": "clearedAudio", "streamId": "s"})  # acks ours
        await asyncio.sleep(0.02)
        assert session.checkpoints.pending  # still waiting
        await session.on_plivo_event({"event": "clearedAudio", "streamId": "s"})  # not ours
        await asyncio.sleep(0.02)
        assert session.checkpoints.pending == wire.checkpoints()  # still waiting
        assert session.counts["unsolicited_cleared"] == 1
        assert session.interventions[0].outcome == "running"
        assert session.counts["internal_errors"] == 0
        await session.on_agent_audio(frame(7))  # the call goes on
        await session.close("stop")

    run(scenario())


def test_checkpoint_watchdog_fires_and_is_counted() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _intervene_to_buffer(transport, checkpoint_margin_s=0.05)
        # no ack ever comes: the watchdog (queued audio ~34 ms + 50 ms) moves on
        await until(lambda: len(wire.checkpoints()) == 2, timeout=1.0)
        assert session.counts["checkpoint_timeouts"] >= 1
        await session.close("stop")

    run(scenario())


def test_hang_up_mid_intervention_cancels_the_wait_stores_and_emits_once() -> None:
    async def scenario() -> None:
        store = InMemoryStateStore()
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.15, CORRECTION)]}
        )
        session, wire, sink = make_session(
            transport, hold_budget_s=0.5, extra={"state": StoreStateWriter(store)}
        )
        await session.on_start(start_event())
        await session.on_mirror_message(turn("t1"))
        await until(lambda: len(wire.checkpoints()) == 1)
        await asyncio.gather(session.close("hangup"), session.close("socket_closed"))
        fetch = transport.named("generate_correction")[0]
        assert fetch.finished is not None  # close waited for the correction (it stores the note)
        assert len(sink.events) == 1
        detail_type, detail = sink.events[0]
        assert detail_type == "CallEnded" and detail["reason"] == "hangup"
        assert detail["counts"]["interventions"] == 1
        assert session.interventions[0].outcome == "ended"
        assert len(wire.checkpoints()) == 1 and not any(
            m["event"] == "mirror.override" for m in wire.agent
        )
        meta = store.get_call_meta(
            CallContext(call_id=detail["call_id"], tenant_id="acme"), time.time()
        )
        assert meta is not None and meta["end_reason"] == "hangup" and meta["ended_at"]
        assert meta["bridge_interventions"] == 1
        await session.on_agent_audio(frame(1))  # after close: ignored, no error
        assert session.counts["internal_errors"] == 0

    run(scenario())


def test_call_ended_exactly_once_under_concurrent_close_paths() -> None:
    async def scenario() -> None:
        session, _, sink = make_session(FakeTransport({"score_turn": [(0.05, ALLOW)]}))
        await session.on_mirror_message(turn("t1"))
        await asyncio.gather(
            session.on_plivo_event({"event": "stop", "streamId": "s"}),
            session.close("hangup"),
            session.close("socket_closed"),
            session.close("agent_closed"),
        )
        await session.close("again")
        assert [t for t, _ in sink.events] == ["CallEnded"]
        detail = sink.events[0][1]
        assert detail["reason"] == "stop" and detail["tenant_id"] == "acme"
        assert set(detail) == {"tenant_id", "call_id", "ended_at", "reason", "counts"}
        assert detail["counts"]["turns"] == 1

    run(scenario())


def test_unidirectional_stream_falls_back_to_rest_speak() -> None:
    class FakeRest:
        def __init__(self) -> None:
            self.calls: list[tuple[str, ...]] = []

        async def speak(self, call_uuid: str, text: str) -> None:
            self.calls.append(("speak", call_uuid, text))

        async def stop(self, call_uuid: str) -> None:
            self.calls.append(("stop", call_uuid))

    async def scenario() -> None:
        rest = FakeRest()
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = make_session(
            transport, extra={"rest": rest}, rest_speech_s=lambda text: 0.01
        )
        await session.on_start(start_event(bidirectional=False))
        await session.on_mirror_message(turn("t1"))
        await until(lambda: any(m["event"] == "mirror.override" for m in wire.agent))
        assert wire.plivo == []  # nothing Plivo would ignore on a one-way stream
        assert [c[0] for c in rest.calls] == ["stop", "speak", "speak"]
        assert rest.calls[1][2] == "Let me make sure I got that right."
        assert rest.calls[2][2] == CORRECTION["correction_text"]
        await session.close("stop")

    run(scenario())


def test_the_agent_sees_caller_events_and_its_own_acks_but_not_mirrors() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = make_session(transport, hold_budget_s=0.5)
        await session.on_start(start_event())
        media = {"event": "media", "streamId": "s", "media": {"payload": "/w==", "chunk": 1}}
        dtmf = {"event": "dtmf", "streamId": "s", "dtmf": {"digit": "5"}}
        await session.on_plivo_event(media)
        await session.on_plivo_event(dtmf)
        # the agent's own checkpoint and clear (no turn pending: straight through)
        await session.on_agent_audio({"event": "checkpoint", "streamId": "s", "name": "agent-1"})
        await session.on_agent_audio({"event": "clearAudio", "streamId": "s"})
        await until(lambda: len(wire.plivo) == 2)
        await session.on_plivo_event(played("agent-1"))
        await session.on_plivo_event({"event": "clearedAudio", "streamId": "s"})  # the agent's
        assert wire.agent == [media, dtmf, played("agent-1"), {"event": "clearedAudio",
                                                                "streamId": "s"}]  # fmt: skip
        # an intervention: its clear's ack and its checkpoints' acks stay with Mirror
        await session.on_mirror_message(turn("t1"))
        await until(lambda: len(wire.checkpoints()) == 2)  # agent-1, then the buffer's
        await session.on_plivo_event({"event": "clearedAudio", "streamId": "s"})  # Mirror's
        await session.on_plivo_event(played(wire.checkpoints()[1]))
        await until(lambda: len(wire.checkpoints()) == 3)
        await session.on_plivo_event(played(wire.checkpoints()[2]))
        await until(lambda: wire.agent[-1]["event"] == "mirror.override")
        assert [m["event"] for m in wire.agent[4:]] == ["mirror.verdict", "mirror.override"]
        # a clear nobody here sent (e.g. Plivo's own): the agent hears of it
        await session.on_plivo_event({"event": "clearedAudio", "streamId": "s"})
        assert wire.agent[-1] == {"event": "clearedAudio", "streamId": "s"}
        assert session.counts["unsolicited_cleared"] == 1
        await session.close("stop")
        await session.on_plivo_event(media)  # after close: nothing more to the agent
        assert wire.agent[-1]["event"] == "clearedAudio"

    run(scenario())


def test_close_lets_what_is_queued_for_plivo_go_out_first() -> None:
    async def scenario() -> None:
        session, wire, sink = make_session(FakeTransport())
        sent: list[str] = []

        async def slow_send(message: str) -> None:  # a busy socket
            await asyncio.sleep(0.01)
            sent.append(message)

        # the relay's Plivo queue, on a busy socket
        queue = _Writer("plivo", slow_send, 10, call_id=CALL_ID)
        session.io = type(session.io)(plivo=queue, send_agent=wire.send_agent)
        for n in range(5):  # queued behind the busy socket, in order
            await session.on_agent_audio(frame(n))
        await session.close("stop")
        await queue.finish(1.0)  # as the relay does after the session's close
        assert sent == [json.dumps(frame(n), separators=(",", ":")) for n in range(5)]
        assert len(sink.events) == 1

    run(scenario())
