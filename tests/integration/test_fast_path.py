"""The relay's hot path: frames forwarded as the text they came in as, the writers (sent at once
when the socket is idle, queued in order behind a slow one, bounded), the session handing its
messages to them without a task hop, the media fast parse, the silence check skipped while audio
plays, ScoreTurn called before the annotation's dispatch returns, the in-process transport's
answers taken at the next frame (`LoopInbox`), every task of a call named for it, the start-up
heap frozen once, the process tuned at the app's start-up, and the descriptor table reserved
before any call."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import pytest
from starlette.websockets import WebSocketState

from mirror_bridge import plivo_protocol as pp
from mirror_bridge import transport as transport_module
from mirror_bridge import tuning as tuning_module
from mirror_bridge.call_scope import CallScope, RelayStats
from mirror_bridge.outbound import _Writer
from mirror_bridge.relay import CallRelay
from mirror_bridge.session import SessionIO
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import StaticTenants, TenantConfig
from mirror_bridge.transport import FunctionError, LoopInbox, loop_inbox
from mirror_dev import in_process as in_process_module
from mirror_dev.in_process import InProcessTransport
from tests.conftest import run
from tests.fakes.session import CALL_ID, STREAM_ID, frame, make_session, start_event, turn, until
from tests.fakes.transport import ALLOW, INTERVENE, FakeTransport

pytestmark = pytest.mark.integration

PAYLOAD = base64.b64encode(bytes(range(160))).decode()
# Plivo's and the agent's own spelling (spaces, key order): forwarded byte for byte
PLIVO_MEDIA = (
    '{ "sequenceNumber": 7, "event": "media", "streamId": "%s", "media": '
    '{"track": "inbound", "timestamp": "1705312200000", "chunk": 3, "payload": "%s"} }'
)
AGENT_AUDIO = (
    f'{{"media": {{"payload": "{PAYLOAD}", "sampleRate": 8000, "contentType": "audio/x-mulaw"}},'
    '  "event": "playAudio"}'
)


# --- Frame and the media fast parse -----------------------------------------------------------


def test_a_decoded_frame_keeps_its_text_until_it_is_changed() -> None:
    text = PLIVO_MEDIA % ("s1", PAYLOAD)
    raw = pp.decode_frame(text)
    assert isinstance(raw, dict) and raw == json.loads(text)
    assert pp.wire_text(raw) is text
    for change in (
        lambda f: f.__setitem__("x", 1),
        lambda f: f.pop("chunk", None),
        lambda f: f.update(x=1),
        lambda f: f.setdefault("x", 1),
        lambda f: f.__delitem__("event"),
        lambda f: f.clear(),
        lambda f: f.popitem(),
    ):
        changed = pp.decode_frame(text)
        change(changed)
        assert changed.text is None
        assert json.loads(pp.wire_text(changed)) == dict(changed)
    kept = pp.decode_frame(text)
    kept.setdefault("event", "other")  # present: nothing changes
    assert pp.wire_text(kept) is text
    assert pp.wire_text({"event": "clearAudio", "streamId": "s"}) == (
        '{"event":"clearAudio","streamId":"s"}'
    )
    assert pp.decode_frame(text.encode()).text is None  # bytes: no text to keep


@pytest.mark.parametrize(
    "media",
    [
        {"track": "inbound", "timestamp": "17", "chunk": 3, "payload": PAYLOAD},
        {"payload": PAYLOAD},
        {"timestamp": 1705312200000, "chunk": "3", "payload": PAYLOAD},  # the general path
        {"chunk": True, "payload": PAYLOAD},  # a bool is no chunk number
    ],
)
def test_media_fast_parse_gives_what_the_general_parse_gives(media: dict[str, Any]) -> None:
    raw = {"event": "media", "sequenceNumber": 4, "streamId": "s", "media": media}
    event = pp.parse_event(raw)
    assert isinstance(event, pp.MediaEvent) and event.raw is raw
    chunk = media.get("chunk")
    timestamp = media.get("timestamp")
    assert (event.stream_id, event.sequence_number, event.payload) == ("s", 4, PAYLOAD)
    assert event.track == media.get("track")
    assert event.timestamp == (None if timestamp is None else str(timestamp))
    assert event.chunk == (None if chunk is None or chunk is True else int(chunk))
    for bad in ({"payload": 5}, "x", None):
        with pytest.raises(pp.PlivoProtocolError):
            pp.parse_event({"event": "media", "media": bad})


def test_outbound_base64_check_is_unchanged_for_odd_payloads() -> None:
    def ok(payload: str) -> bool:
        try:
            pp.check_outbound({"event": "playAudio", "media": {"payload": payload}})
        except pp.PlivoProtocolError:
            return False
        return True

    def old_rule(payload: str) -> bool:
        try:
            base64.b64decode(payload, validate=True)
        except ValueError:  # binascii.Error included
            return False
        return True

    odd = [PAYLOAD, "", "////", "=", "==", "a===", "ab=c", "abc", "ab==", "abc=", "ab cd", "é"]
    odd += ["A" * n + "=" * p for n in range(6) for p in range(4)]
    assert [ok(p) for p in odd] == [old_rule(p) for p in odd]
    assert ok(PAYLOAD) and not ok("ab=c")


# --- the writers ------------------------------------------------------------------------------


class Socket:
    """A send that takes each message at once, or waits while `gate` is clear."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_at = fail_at
        self.on_send: Any = None

    async def send(self, text: str) -> None:
        if not self.gate.is_set():
            await self.gate.wait()
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            raise ConnectionError("gone")
        self.sent.append(text)
        if self.on_send is not None:
            self.on_send(text)


def msg(n: int) -> dict[str, Any]:
    return {"event": "n", "n": n}


def numbers(sock: Socket) -> list[int]:
    return [json.loads(t)["n"] for t in sock.sent]


def test_writer_sends_at_once_to_an_idle_socket() -> None:
    async def scenario() -> None:
        sock = Socket()
        writer = _Writer("agent", sock.send, size=4, call_id=CALL_ID)
        assert writer.offer(msg(1))
        assert numbers(sock) == [1]  # on the wire before offer returned: no task, no loop turn
        await writer.put(msg(2))
        assert numbers(sock) == [1, 2] and writer.sent == 2 and writer._task is None
        raw = pp.decode_frame(AGENT_AUDIO)
        assert writer.offer(raw) and sock.sent[-1] is AGENT_AUDIO  # as it came
        await writer.finish(1.0)

    run(scenario())


def test_writer_writes_straight_to_a_push_socket_and_falls_back_to_the_awaited_send() -> None:
    async def scenario() -> None:
        sock = Socket()
        sock.gate.clear()  # the awaited send waits (the transport's buffer is full)
        written: list[str] = []
        room = [True]

        def write_now(text: str) -> bool:
            if not room[0]:
                return False
            written.append(text)
            return True

        writer = _Writer("agent", sock.send, size=4, write_now=write_now, call_id=CALL_ID)
        assert writer.offer(msg(1))
        await writer.put(msg(2))
        assert [json.loads(t)["n"] for t in written] == [1, 2] and sock.sent == []
        raw = pp.decode_frame(AGENT_AUDIO)
        assert writer.offer(raw) and written[-1] is AGENT_AUDIO  # as it came
        room[0] = False  # paused: queued, sent by the awaited path, in order
        assert writer.offer(msg(3))
        room[0] = True
        assert writer.offer(msg(4))  # behind 3, not past it
        assert [json.loads(t)["n"] for t in written[:2]] == [1, 2] and len(written) == 3
        sock.gate.set()
        await until(lambda: writer._task is None)
        assert numbers(sock) == [3, 4] and writer.sent == 5
        assert writer.offer(msg(5)) and json.loads(written[-1])["n"] == 5  # idle again

        def broken(text: str) -> bool:
            raise ConnectionError("gone")

        dead = _Writer("plivo", sock.send, size=4, write_now=broken, call_id=CALL_ID)
        assert dead.offer(msg(1)) and dead.dead  # as a failed send: given up
        await dead.put(msg(2))  # dropped, never raises
        await writer.finish(1.0)

    run(scenario())


def test_writer_queues_in_order_behind_a_slow_socket_and_bounds_the_queue() -> None:
    async def scenario() -> None:
        sock = Socket()
        sock.gate.clear()  # the peer stops reading
        writer = _Writer("plivo", sock.send, size=3, call_id=CALL_ID)
        assert writer.offer(msg(0))  # under way, waiting on the socket
        assert all(writer.offer(msg(n)) for n in (1, 2, 3))  # queued: 3 = size
        assert not writer.offer(msg(99))  # full: nothing queued
        waiting = [asyncio.create_task(writer.put(msg(n))) for n in (4, 5)]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in waiting)  # back-pressure
        assert not writer.offer(msg(98))  # a put is waiting: no overtaking it
        assert writer._task is not None  # the backlog's sender is the call's task
        assert writer._task.get_name() == f"{CALL_ID}::plivo-writer"
        sock.gate.set()
        await asyncio.gather(*waiting)
        await until(lambda: writer._task is None)
        assert numbers(sock) == [0, 1, 2, 3, 4, 5]
        await writer.finish(1.0)

    run(scenario())


def test_a_cancelled_put_passes_its_room_on() -> None:
    async def scenario() -> None:
        sock = Socket()
        sock.gate.clear()
        writer = _Writer("plivo", sock.send, size=1, call_id=CALL_ID)
        writer.offer(msg(0))
        writer.offer(msg(1))
        first = asyncio.create_task(writer.put(msg(2)))
        second = asyncio.create_task(writer.put(msg(3)))
        await asyncio.sleep(0.01)
        # 1 leaves the queue and `first` is given its room; it is cancelled before it runs
        sock.on_send = lambda text: first.cancel() if json.loads(text)["n"] == 1 else None
        sock.gate.set()
        await second
        await until(lambda: writer._task is None)
        assert first.cancelled()
        assert numbers(sock) == [0, 1, 3] and writer._admitted == 0 and not writer._room
        # and a put cancelled while it still waits for room just leaves the line
        sock.gate.clear()
        writer.offer(msg(4))
        writer.offer(msg(5))
        gone = asyncio.create_task(writer.put(msg(6)))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0)
        assert not writer._room
        sock.gate.set()
        await until(lambda: writer._task is None)
        assert numbers(sock) == [0, 1, 3, 4, 5]

    run(scenario())


def test_writer_gives_up_when_the_socket_fails_and_releases_waiting_puts() -> None:
    async def scenario() -> None:
        sock = Socket(fail_at=1)
        sock.gate.clear()
        writer = _Writer("agent", sock.send, size=1, call_id=CALL_ID)
        writer.offer(msg(0))
        writer.offer(msg(1))
        waiting = asyncio.create_task(writer.put(msg(2)))
        await asyncio.sleep(0.01)
        sock.gate.set()
        await asyncio.wait_for(waiting, 1.0)
        assert writer.dead and numbers(sock) == [0]
        assert writer.offer(msg(3))  # dropped, never waits
        await writer.put(msg(4))
        assert numbers(sock) == [0]

    run(scenario())


def test_finish_sends_the_backlog_or_gives_up_on_a_stalled_peer() -> None:
    async def scenario() -> None:
        sock = Socket()
        sock.gate.clear()
        writer = _Writer("plivo", sock.send, size=8, call_id=CALL_ID)
        for n in range(3):
            writer.offer(msg(n))
        finishing = asyncio.create_task(writer.finish(1.0))
        await asyncio.sleep(0.01)
        assert writer.offer(msg(9))  # closing: dropped
        sock.gate.set()
        await finishing
        assert numbers(sock) == [0, 1, 2]

        stalled = Socket()
        stalled.gate.clear()
        writer = _Writer("agent", stalled.send, size=8, call_id=CALL_ID)
        writer.offer(msg(0))
        writer.offer(msg(1))
        started = time.monotonic()
        await writer.finish(0.05)
        assert time.monotonic() - started < 0.5 and writer.dead and stalled.sent == []

    run(scenario())


# --- the relay, sockets faked -----------------------------------------------------------------


class FakePlivo:
    """The app's side of Plivo's socket, as CallRelay uses it."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[str] = []
        self.application_state = WebSocketState.CONNECTED

    def text(self, text: str) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000) -> None:
        self.application_state = WebSocketState.DISCONNECTED


class FakeAgent:
    """The agent connection (websockets' ClientConnection, as CallRelay uses it)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[str] = []

    def __aiter__(self) -> FakeAgent:
        return self

    async def __anext__(self) -> str:
        text = await self.inbox.get()
        if text is None:
            raise StopAsyncIteration
        return text

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self) -> None:
        self.inbox.put_nowait(None)


def _started_relay() -> tuple[CallRelay, FakePlivo, FakeAgent, list[Any], asyncio.Task[None]]:
    """A relay between faked sockets, its call started (on the running loop): the relay, both
    sockets, the sessions it made and the task running it."""
    transport = FakeTransport({"score_turn": [(0.0, ALLOW)]})
    sessions: list[Any] = []

    def factory(ctx: Any, io: Any) -> Any:
        session, _, _ = make_session(transport)
        session.io = io  # the relay's writers, offers included
        sessions.append(session)
        return session

    plivo, agent = FakePlivo(), FakeAgent()

    async def connect(url: str, headers: dict[str, str]) -> Any:
        return agent

    settings = Settings(auth_token="t", public_base_url="http://b", max_call_s=0)
    tenants = StaticTenants({"1": TenantConfig(tenant_id="acme", agent_url="ws://agent")})
    relay = CallRelay(plivo, settings, tenants, factory, connect)  # type: ignore[arg-type]
    plivo.text(json.dumps({**start_event(), "extra_headers": "mirrorNumber=1"}))
    return relay, plivo, agent, sessions, asyncio.create_task(relay.run())


def test_the_relay_forwards_both_ways_byte_for_byte() -> None:
    async def scenario() -> None:
        relay, plivo, agent, sessions, task = _started_relay()
        media = [PLIVO_MEDIA % (STREAM_ID, PAYLOAD.replace("A", c)) for c in "BCD"]
        for text in media:
            plivo.text(text)
        agent.inbox.put_nowait(AGENT_AUDIO)
        agent.inbox.put_nowait(json.dumps({"event": "checkpoint", "name": "a", "streamId": "s"}))
        await until(lambda: len(agent.sent) == 4 and len(plivo.sent) == 2)
        assert agent.sent[1:] == media  # caller media: the very texts Plivo sent
        assert plivo.sent[0] == AGENT_AUDIO  # the agent's audio: the very text it sent
        assert json.loads(plivo.sent[1])["name"] == "a"
        agent.inbox.put_nowait(json.dumps(turn("t1")))  # the session answers: its own JSON
        await until(lambda: any('"mirror.verdict"' in t for t in agent.sent))
        plivo.text(json.dumps({"event": "stop", "streamId": STREAM_ID}))
        await asyncio.wait_for(task, 5)
        assert relay.end_reason == "stop" and sessions[0].closed

    run(scenario())


def test_every_task_of_a_call_is_named_for_it_and_none_outlives_it() -> None:
    async def scenario() -> None:
        relay, plivo, agent, _, task = _started_relay()
        await until(lambda: len(agent.sent) == 1)  # the start, relayed: the call runs
        names = {t.get_name() for t in asyncio.all_tasks()}
        # neither fake socket pushes: each is read by a task of the call's
        assert {f"{CALL_ID}::plivo-reader", f"{CALL_ID}::agent-reader"} <= names
        plivo.text(json.dumps({"event": "stop", "streamId": STREAM_ID}))
        await asyncio.wait_for(task, 5)
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(CALL_ID)]
        assert left == []

    run(scenario())


def test_a_call_scope_runs_handlers_eagerly_in_named_tasks_and_logs_failures_with_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        call = CallScope("call-7", RelayStats())
        ran: list[str] = []

        async def quick() -> None:
            ran.append("quick")

        async def slow() -> None:
            await asyncio.sleep(0.01)
            ran.append("slow")

        async def broken() -> None:
            raise ValueError("boom")

        assert call.run(quick(), "quick") is None and ran == ["quick"]  # done at once
        waiting = call.run(slow(), "slow-job")
        assert waiting is not None and waiting.get_name() == "call-7::slow-job"
        assert waiting in call.inflight
        await waiting
        assert ran == ["quick", "slow"] and not call.inflight
        with caplog.at_level(logging.ERROR, logger="mirror_bridge.relay"):
            assert call.run(broken(), "plivo-event", "Plivo", "media") is None
        assert "call call-7: session failed on Plivo media" in caplog.text
        call.end("stop")
        call.end("agent_closed")  # the first end wins
        assert call.over() and call.ended.result() == "stop"

    run(scenario())


def test_an_answer_handed_to_the_loop_runs_at_the_next_frame_before_that_frame() -> None:
    """A function's answer posted while a frame is already waiting on the loop runs when that
    frame is handled, before it is relayed: not a loop turn later."""

    async def scenario() -> None:
        relay, plivo, agent, _, task = _started_relay()
        await until(lambda: len(agent.sent) == 1)  # the start, relayed: the call runs
        seen_at: list[int] = []
        plivo.text(PLIVO_MEDIA % (STREAM_ID, PAYLOAD))  # its reader is woken first...
        worker = threading.Thread(
            target=loop_inbox().post, args=(lambda: seen_at.append(len(agent.sent)),)
        )
        worker.start()
        worker.join()  # ...the answer second (the loop's own turn would run it after the frame)
        await until(lambda: len(agent.sent) == 2)
        assert seen_at == [1]  # it ran, once, before the media frame was relayed
        plivo.text(json.dumps({"event": "stop", "streamId": STREAM_ID}))
        await asyncio.wait_for(task, 5)
        assert seen_at == [1]

    run(scenario())


def test_loop_inbox_runs_each_item_once_in_order_and_survives_a_failing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    async def scenario() -> LoopInbox:
        inbox = loop_inbox()
        assert loop_inbox(asyncio.get_running_loop()) is inbox  # one per loop
        items = [(ran.append, ("a",)), (boom, ()), (ran.append, ("b",))]
        worker = threading.Thread(target=lambda: [inbox.post(f, *a) for f, a in items])
        worker.start()
        worker.join()
        assert ran == [] and len(inbox.pending) == 3  # nothing runs off the loop
        inbox.drain()  # as a frame handler does
        assert ran == ["a", "b"] and not inbox.pending
        await asyncio.sleep(0.01)  # the loop's own turns (one per post) find nothing left
        assert ran == ["a", "b"]
        threading.Thread(target=inbox.post, args=(ran.append, "c")).start()
        await until(lambda: ran == ["a", "b", "c"])  # no frame: the loop's turn runs it
        return inbox

    with caplog.at_level(logging.ERROR, logger="mirror_bridge.transport"):
        inbox = run(scenario())
    assert any("work handed to the loop failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError):  # its loop is closed: the poster is told
        inbox.post(ran.append, "d")

    async def other() -> LoopInbox:
        return loop_inbox()

    assert run(other()) is not inbox  # another loop, another inbox


# --- the session's hand-over ------------------------------------------------------------------


class OfferingWire:
    """Recording sockets as the relay's writers see them: Plivo's is the relay's own queue
    (`_Writer`) over a push socket whose transport takes `room` messages at once, then says no
    (its buffer is full) and the awaited send waits until `gate` opens; the agent's takes all."""

    def __init__(self, room: int) -> None:
        self.plivo: list[dict[str, Any]] = []
        self.agent: list[dict[str, Any]] = []
        self.room = room
        self.written = 0
        self.gate = asyncio.Event()

    def write_now(self, text: str) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.written += 1
        self.plivo.append(json.loads(text))
        return True

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.plivo.append(json.loads(text))

    def offer_agent(self, message: dict[str, Any]) -> bool:
        self.agent.append(message)
        return True

    async def send_agent(self, message: dict[str, Any]) -> None:
        self.agent.append(message)

    def io(self) -> SessionIO:
        queue = _Writer("plivo", self.send_text, 100, self.write_now, call_id=CALL_ID)
        return SessionIO(queue, self.send_agent, self.offer_agent)


def test_session_hands_audio_over_at_once_and_never_reorders_when_the_queue_is_full() -> None:
    async def scenario() -> None:
        session, _, _ = make_session(FakeTransport())
        wire = OfferingWire(room=2)
        session.io = wire.io()
        await session.on_start(start_event())
        for n in range(2):
            await session.on_agent_audio(frame(n))
        assert wire.written == 2  # written at once: no task hop
        for n in range(2, 5):  # the transport is full: queued behind the awaited send
            await session.on_agent_audio(frame(n))
        wire.room = 10  # room again, but frames 2-4 are still ahead: nothing may pass them
        await session.on_agent_audio(frame(5))
        assert wire.written == 2
        wire.gate.set()
        await until(lambda: len(wire.plivo) == 6)
        assert [m["media"]["payload"] for m in wire.plivo] == [
            frame(n)["media"]["payload"] for n in range(6)
        ]
        await session.on_agent_audio(frame(6))  # queue drained: written at once again
        assert wire.written == 3 and session.counts["agent_frames_sent"] == 7
        await session.close("stop")

    run(scenario())


def test_caller_media_and_agent_audio_are_taken_without_a_coroutine_when_nothing_waits() -> None:
    async def scenario() -> None:
        session, _, _ = make_session(FakeTransport())
        wire = OfferingWire(room=100)
        session.io = wire.io()
        await session.on_start(start_event())
        media = {"event": "media", "media": {"payload": PAYLOAD}}
        assert session.take_plivo_event(dict(media)) is None  # offered: done
        assert wire.agent == [media] and session.counts["caller_frames"] == 1
        session.take_agent_audio(frame(1))
        assert wire.plivo == [frame(1)] and session.counts["agent_frames_sent"] == 1
        # the agent's writer is full: the rest comes back as a coroutine, which sends it
        wire.offer_agent = lambda message: False  # type: ignore[method-assign]
        session.io = wire.io()
        rest = session.take_plivo_event(dict(media))
        assert rest is not None and wire.agent == [media]
        await rest
        assert wire.agent == [media, media] and session.counts["caller_frames"] == 2
        # anything but media is on_plivo_event's
        dtmf = session.take_plivo_event({"event": "dtmf", "dtmf": {"digit": "1"}})
        assert dtmf is not None
        await dtmf
        assert session.counts["dtmf"] == 1
        await session.close("stop")

    run(scenario())


def test_clear_audio_on_intervene_is_handed_over_before_the_verdict_returns() -> None:
    async def scenario() -> None:
        transport = FakeTransport({"score_turn": [(0.0, INTERVENE)]})
        session, _, _ = make_session(transport)
        wire = OfferingWire(room=100)
        session.io = wire.io()
        await session.on_start(start_event())
        await session.on_mirror_message(turn("t1"))
        assert transport.named("score_turn")  # called before the dispatch returned
        await until(lambda: any(m["event"] == "clearAudio" for m in wire.plivo))
        assert [m["event"] for m in wire.plivo][0] == "clearAudio"
        assert session._clears_on_wire[0] == "mirror"
        await session.close("stop")

    run(scenario())


def test_silence_check_is_skipped_only_while_audio_plays_to_the_caller() -> None:
    async def scenario() -> None:
        session, _, _ = make_session(FakeTransport(), caller_silence_s=5.0)
        checked: list[float] = []
        loud = session._caller_loud

        def counting(raw: dict[str, Any]) -> bool:
            checked.append(time.monotonic())
            return loud(raw)

        session._caller_loud = counting  # type: ignore[method-assign]
        await session.on_start(start_event())
        caller = {"event": "media", "media": {"payload": base64.b64encode(b"\x00" * 160).decode()}}
        before = time.monotonic()
        await session.on_plivo_event(dict(caller))  # loud, nothing playing: heard now
        assert len(checked) == 1 and session._caller_heard_at >= before
        await session.on_agent_audio(frame(1))  # 3 bytes: plays for ~0.4 ms
        session.playout.end = time.monotonic() + 0.05  # audio queued at Plivo for 50 ms
        heard = session._caller_heard_at
        await session.on_plivo_event(dict(caller))
        assert len(checked) == 1 and session._caller_heard_at == heard  # silence counts from
        assert max(session._caller_heard_at, session.playout.end) == session.playout.end  # end
        await asyncio.sleep(0.06)
        await session.on_plivo_event(dict(caller))  # played out: the caller is heard again
        assert len(checked) == 2 and session._caller_heard_at > session.playout.end
        await session.close("stop")

    run(scenario())


# --- the in-process transport -----------------------------------------------------------------


def test_in_process_transport_errors_and_a_call_cancelled_before_it_started() -> None:
    ran: list[int] = []
    release = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ran.append(event["n"])
        if event["n"] == 0:
            release.wait(2)
        if event["n"] == 2:
            raise ValueError("boom")
        return {"n": event["n"]}

    transport = InProcessTransport({"score_turn": handler}, containers=1, max_workers=1)

    async def scenario() -> None:
        busy = asyncio.create_task(transport.invoke("score_turn", {"n": 0}, 2.0))
        await asyncio.sleep(0.02)
        with pytest.raises(FunctionError) as timed_out:  # waits for the container, times out
            await transport.invoke("score_turn", {"n": 1}, 0.05)
        assert timed_out.value.kind == "timeout"
        release.set()
        assert await busy == {"n": 0}
        with pytest.raises(FunctionError) as failed:
            await transport.invoke("score_turn", {"n": 2}, 2.0)
        assert failed.value.kind == "function_error" and "boom" in failed.value.detail
        assert await transport.invoke("score_turn", {"n": 3}, 2.0) == {"n": 3}
        assert ran == [0, 2, 3]  # the timed-out call never ran; the container came back

    run(scenario())
    transport.shutdown()


def test_in_process_handlers_run_with_the_longer_switch_interval_and_json_round_trips() -> None:
    seen: list[float] = []
    received: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        seen.append(sys.getswitchinterval())
        received.append(event)
        assert context.function_name == "score_turn" and context.get_remaining_time_in_millis()
        return {"echo": event["shared"], "when": ("a", 1)}  # a tuple: a list after JSON

    def unserialisable(event: dict[str, Any], context: Any) -> Any:
        return {"x": object()}

    transport = InProcessTransport(
        {"score_turn": handler, "generate_correction": unserialisable}, containers=1
    )
    interval = sys.getswitchinterval()

    async def scenario() -> None:
        shared = {"k": [1, 2]}
        answer = await transport.invoke("score_turn", {"shared": shared}, 2.0)
        assert seen == [pytest.approx(in_process_module.HANDLER_SWITCH_INTERVAL_S)]
        assert received[0]["shared"] == shared and received[0]["shared"] is not shared
        assert answer == {"echo": {"k": [1, 2]}, "when": ["a", 1]}
        idle = transport_module.GIL_SWITCH_INTERVAL_S  # once the worker is done
        await until(lambda: sys.getswitchinterval() == pytest.approx(idle))
        with pytest.raises(FunctionError) as failed:  # not JSON: a function error, as Lambda's
            await transport.invoke("generate_correction", {}, 2.0)
        assert failed.value.kind == "function_error"

    try:
        run(scenario())
    finally:
        sys.setswitchinterval(interval)
        transport.shutdown()


# --- the start-up heap ------------------------------------------------------------------------


def test_the_start_up_heap_is_frozen_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[bool] = []
    monkeypatch.setattr(tuning_module, "_heap_frozen", False)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    interval = sys.getswitchinterval()
    try:
        assert tuning_module.freeze_startup_heap() is True
        assert tuning_module.freeze_startup_heap() is False
        assert frozen == [True]
        assert sys.getswitchinterval() == pytest.approx(transport_module.GIL_SWITCH_INTERVAL_S)
    finally:
        sys.setswitchinterval(interval)


def test_the_process_is_tuned_once_at_the_apps_start_up_not_when_it_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The descriptor table before the app's own start-up (which may open sockets), the heap
    frozen after it (its warmed handlers are start-up state too); nothing when the app is
    built, nothing per call."""
    from contextlib import asynccontextmanager

    from mirror_bridge import app as app_module

    order: list[str] = []
    monkeypatch.setattr(app_module, "reserve_fd_table", lambda: order.append("reserve") or 4096)
    monkeypatch.setattr(app_module, "freeze_startup_heap", lambda: order.append("freeze") or True)

    @asynccontextmanager
    async def warm(app: Any) -> Any:
        order.append("warm")
        yield
        order.append("shutdown")

    settings = Settings(auth_token="t", public_base_url="http://b")
    app = app_module.create_app(settings, tenants=StaticTenants({}), lifespan=warm)
    plain = app_module.create_app(settings, tenants=StaticTenants({}))
    assert order == []

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            assert order == ["reserve", "warm", "freeze"]
        assert order[-1] == "shutdown"
        order.clear()
        async with plain.router.lifespan_context(plain):
            assert order == ["reserve", "freeze"]
        order.clear()
        relay, plivo, _, _, task = _started_relay()  # a call: tunes nothing
        plivo.text(json.dumps({"event": "stop", "streamId": STREAM_ID}))
        await asyncio.wait_for(task, 5)
        assert relay.end_reason == "stop" and order == []

    run(scenario())


# --- the descriptor table ---------------------------------------------------------------------

RESERVE_PROBE = """
import json, os, resource, sys, threading
from mirror_bridge.tuning import reserve_fd_table

def fd_size():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))

soft = int(sys.argv[1])
if soft:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
threading.Thread(target=lambda: None).start()  # threaded, as the bridge is
r, w = os.pipe()
held = os.dup2(w, int(sys.argv[2])) if int(sys.argv[2]) else None  # a descriptor in the way
before = sorted(os.listdir("/proc/self/fd"))
size_before = fd_size()
reserved = reserve_fd_table(int(sys.argv[3]))
print(json.dumps({
    "reserved": reserved, "before": size_before, "after": fd_size(),
    "same_fds": sorted(os.listdir("/proc/self/fd")) == before,
    "held_works": held is None or os.write(held, b"x") == 1,
}))
"""


def _reserve(soft: int, in_the_way: int, size: int) -> dict[str, Any]:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "bridge"), str(root / "shared")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", RESERVE_PROBE, str(soft), str(in_the_way), str(size)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_descriptor_table_is_reserved_without_touching_a_descriptor() -> None:
    grown = _reserve(soft=0, in_the_way=0, size=2048)
    assert grown["reserved"] == 2048 and grown["before"] < 2048 <= grown["after"]
    assert grown["same_fds"]  # the probe's descriptors are closed again
    # the soft limit caps it; a descriptor already at the target is left alone and working
    capped = _reserve(soft=700, in_the_way=699, size=4096)
    assert capped["reserved"] == 700 and capped["after"] >= 700
    assert capped["same_fds"] and capped["held_works"]
