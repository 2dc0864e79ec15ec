"""Campaign: the bridge fuzzed on loopback. The real app under uvicorn (tests/support/harness.py),
mirror_dev's Plivo peer on one side and a chaotic scripted agent on the other, and a seeded random
scenario per call: malformed, oversized, out-of-order and replayed Plivo frames, floods, events
before `start` and after `stop`, turns that intervene, scoring that fails or times out, agents
that send garbage or vanish, and callers that hang up abruptly (mid-intervention included).

What must hold for every call, whatever happened in it: it ends, and its CallEnded reaches the
event sink exactly once; and when all calls are over, no call task is still running and no socket
is left open (descriptors back to where they started).

`make test` runs MIRROR_FUZZ_ITERATIONS=24 calls (the default); `make campaign` runs many more.
The seed is fixed per iteration, so a failing call is reproduced by its index (in the message).
Issue 13's defects the fuzz reproduced are their own tests below, each with its allow twin.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mirror_bridge.transport import FunctionError
from mirror_dev.plivo_peer import SILENCE, PlivoPeer
from mirror_dev.scripted_agent import AgentCall, ScriptedAgent
from tests.conftest import run
from tests.fakes.transport import ALLOW, CORRECTION, INTERVENE, FakeTransport
from tests.support.campaign import Tally
from tests.support.harness import SupervisedBridge

pytestmark = pytest.mark.e2e

ITERATIONS = int(os.environ.get("MIRROR_FUZZ_ITERATIONS", "24"))
CONCURRENCY = 4
END_WITHIN_S = 8.0
"""A call's CallEnded must be out this long after the caller's last frame (the close budget,
the agent's close and slack for a 2-core machine under the whole suite)."""


def _score(payload: dict[str, Any]) -> dict[str, Any]:
    """ScoreTurn as the fuzz sees it: allow, intervene, or a failure, by the turn's id."""
    kind = sum(map(ord, str(payload.get("turn_id")))) % 4
    if kind == 3:
        raise FunctionError("score_turn", "transport", "fuzz: scoring down")
    return INTERVENE if kind == 2 else ALLOW


def transport() -> FakeTransport:
    return FakeTransport(
        {
            "score_turn": [(0.0, _score)],
            "generate_correction": [(0.05, CORRECTION)],
            # gate_tool unscripted: every gate is a transport failure, which must hold, not hang
        }
    )


# --- the agent ---------------------------------------------------------------------------------


AGENT_GARBAGE = [
    "{",
    "null",
    "[]",
    '{"event": 1}',
    "x" * 100_000,
    '{"event": "playAudio", "media": {"payload": "@@"}}',
    '{"event": "mirror.turn"}',
    '{"event": "clearAudio"}',
]


async def chaotic_agent(call: AgentCall) -> None:
    """Per call (seeded by the call id): idle, a turn that intervenes then speech, a tool gate,
    garbage, a flood of audio, or vanishing mid-call."""
    rng = random.Random(call.call_id)
    for _ in range(rng.randint(1, 4)):
        action = rng.choice(["turn", "say", "gate", "garbage", "flood", "vanish", "wait"])
        if action == "turn":
            tid = rng.choice(["t1", "t2", "t3", "t4", "t" + "9" * 300])
            await call.turn(tid, "A large pepperoni, actually medium.", "One large pepperoni.")
        elif action == "say":
            await call.say(frames=rng.randint(1, 20), checkpoint=rng.choice([None, "cp"]))
        elif action == "gate":
            await call.tool_gate("g" + str(rng.randint(0, 3)), [{"id": "c1", "name": "place_order",
                                                                 "args": {"n": 1}}])  # fmt: skip
        elif action == "garbage":
            await call.send(rng.choice(AGENT_GARBAGE))
        elif action == "flood":
            await call.say(frames=rng.randint(50, 300))
        elif action == "vanish":
            await call.conn.close()
            return
        else:
            await asyncio.sleep(rng.random() * 0.2)
    await call.closed.wait()


# --- the caller --------------------------------------------------------------------------------


def _garbage(rng: random.Random, peer: PlivoPeer) -> str | bytes | dict[str, Any]:
    frame = peer.media_frame()
    return rng.choice(
        [
            "{",
            "",
            "null",
            "[1, 2]",
            '{"event": null}',
            '{"event": "start"}',
            '{"event": "media", "media": {"payload": "not base64!"}}',
            {**frame, "media": {**frame["media"], "payload": 12}},
            {**frame, "sequenceNumber": -1},
            {**frame, "sequenceNumber": "1e309"},
            {"event": "clearedAudio", "streamId": peer.stream_id, "sequenceNumber": 7},
            {"event": "playedStream", "streamId": peer.stream_id, "name": "cp"},
            {"event": "\u202e\u200b", "x": [[[[[[]]]]]]},
            b"\x00\xff binary",
            json.dumps({"event": "media", "media": {"payload": "A" * 1_000_000}}),
            "[" * 50_000 + "]" * 50_000,
        ]
    )


async def _send(peer: PlivoPeer, message: str | bytes | dict[str, Any]) -> None:
    if isinstance(message, bytes):
        assert peer._ws is not None
        await peer._ws.send(message)
    else:
        await peer.send_raw(message)


async def fuzz_call(bridge: SupervisedBridge, index: int) -> tuple[str, str]:
    """One fuzzed call; returns (call id, how it ended)."""
    rng = random.Random(index)
    peer = bridge.peer(speed=50.0)
    ending = "?"
    try:
        async with peer:
            if rng.random() < 0.1:  # garbage before start
                await _send(peer, _garbage(rng, peer))
            await peer.start()
            for _ in range(rng.randint(1, 12)):
                action = rng.choice(["media", "garbage", "dtmf", "replay", "reorder", "flood",
                                     "restart", "pause"])  # fmt: skip
                if action == "media":
                    await peer.media(rng.randint(1, 20), paced=False)
                elif action == "garbage":
                    await _send(peer, _garbage(rng, peer))
                elif action == "dtmf":
                    await peer.dtmf(rng.choice(["1", "#", "", "12", "\u0661"]))
                elif action == "replay" and peer.sent:
                    await _send(peer, rng.choice(peer.sent))
                elif action == "reorder":
                    frames = [peer.media_frame() for _ in range(5)]
                    rng.shuffle(frames)
                    for f in frames:
                        await _send(peer, f)
                elif action == "flood":
                    await peer.media([SILENCE] * rng.randint(100, 400), paced=False)
                elif action == "restart":
                    await peer.start()  # a replayed start on the same socket
                else:
                    await asyncio.sleep(rng.random() * 0.3)
            ending = rng.choice(["stop", "stop_nested", "abrupt", "stop_then_more"])
            if ending.startswith("stop"):
                await peer.stop(nested=ending == "stop_nested")
            if ending == "stop_then_more":
                await peer.media(5, paced=False)
                await peer.dtmf("1")
    except (ConnectionClosed, OSError):
        ending += "+closed_by_bridge"
    return peer.call_id, ending


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _live_call_tasks(call_ids: set[str]) -> list[str]:
    """Names of unfinished asyncio tasks that belong to one of the calls (tasks.spawn names
    them `{call_id}::...`)."""
    names = []
    for obj in gc.get_objects():
        try:
            if type(obj) is not asyncio.Task or obj.done():
                continue
        except ReferenceError:  # a dead weak proxy
            continue
        name = obj.get_name()
        if name.split("::", 1)[0] in call_ids:
            names.append(name)
    return names


def test_fuzzed_calls_all_end_with_their_call_ended_and_leak_nothing() -> None:
    tally = Tally("bridge_fuzz")

    async def main() -> None:
        async with ScriptedAgent(chaotic_agent) as agent:
            bridge = SupervisedBridge(agent.url, transport=transport())
            with bridge.server:
                await asyncio.sleep(0.1)
                fds_before = _open_fds()
                endings: dict[str, str] = {}
                sem = asyncio.Semaphore(CONCURRENCY)

                async def one(i: int) -> None:
                    async with sem:
                        call_id, ending = await fuzz_call(bridge, i)
                        endings[call_id] = f"#{i}:{ending}"

                await asyncio.gather(*(one(i) for i in range(ITERATIONS)))
                # A call exists once the bridge accepted its start (then it dials the agent); a
                # refused start (garbage first, then a start without ids) is no call and has no
                # CallEnded, but its stream must have been closed all the same.
                accepted = {c.call_id for c in agent.calls}
                deadline = time.monotonic() + END_WITHIN_S
                while time.monotonic() < deadline:
                    ended = [d["call_id"] for d in bridge.call_ended()]
                    if accepted <= set(ended):
                        break
                    await asyncio.sleep(0.05)
                ended = [d["call_id"] for d in bridge.call_ended()]
                for call_id, how in endings.items():
                    tally.saw(how.split(":", 1)[1].split("+")[0])
                    if call_id in accepted and call_id not in ended:
                        tally.lost_events += 1
                crashed = [r for r in bridge.relays if getattr(r, "end_reason", None) is None]
                tally.crashes += len(crashed)
                assert len(accepted) >= ITERATIONS * 0.8, (len(accepted), endings)  # real calls
                lost = {endings[c] for c in accepted if c not in ended}
                assert not lost, f"calls without CallEnded: {sorted(lost)}"
                twice = {c for c in ended if ended.count(c) > 1}
                assert not twice, f"CallEnded more than once: {twice}"
                await asyncio.sleep(0.5)  # the agent sockets' close handshakes
                leaked = _live_call_tasks(set(endings))
                assert not leaked, f"call tasks still running: {leaked[:10]}"
                fds_after = _open_fds()
            assert fds_after <= fds_before + 2, (fds_before, fds_after)
            assert not crashed, [(r.end_reason, getattr(r, "session", None)) for r in crashed]

    try:
        run(main(), timeout=60 + ITERATIONS * 3)
    finally:
        tally.write()


async def _stream(bridge: SupervisedBridge, call_id: str) -> PlivoPeer:
    peer = bridge.peer(call_id=call_id)
    await peer.connect()
    return peer


def test_a_call_id_over_256_characters_is_refused_cleanly() -> None:
    """Issue 13 item 7 (it crashed the relay and leaked the agent socket, a descriptor and a
    keepalive task): the start is refused, the stream closed, nothing of the call left."""

    async def main() -> None:
        async with ScriptedAgent() as agent:
            bridge = SupervisedBridge(agent.url, transport=transport())
            with bridge.server:
                await asyncio.sleep(0.1)
                fds_before = _open_fds()
                peer = await _stream(bridge, "C" * 300)
                with contextlib.suppress(ConnectionClosed):
                    await peer.start()
                    await peer.media(3, paced=False)
                    await peer.stop()
                await asyncio.wait_for(peer.closed.wait(), 5)
                await peer.close()
                await asyncio.sleep(0.3)
                (relay,) = bridge.relays
                assert relay.end_reason is not None  # it ended, it did not crash
                assert all(c.closed.is_set() for c in agent.calls)  # no agent socket left
                assert not _live_call_tasks({"C" * 300})
                assert _open_fds() <= fds_before

    run(main())


def test_a_long_call_id_twin_at_the_limit_is_an_ordinary_call() -> None:
    """The allow twin: a 200-character call id is a call like any other."""

    async def main() -> None:
        async with ScriptedAgent() as agent:
            bridge = SupervisedBridge(agent.url, transport=transport())
            with bridge.server:
                peer = await _stream(bridge, "C" * 200)
                await peer.start()
                await peer.media(3, paced=False)
                await peer.stop()
                await bridge.wait_ended(timeout=5)
                await peer.close()
                assert bridge.call_ended()[0]["call_id"] == "C" * 200

    run(main())


async def _stalled_agent(call: AgentCall) -> None:
    """Stops reading: the bridge's writes to it back up in the socket and then wait."""
    transport = call.conn.transport
    transport.pause_reading()
    await asyncio.sleep(3600)


async def _flood_then_hang_up(bridge: SupervisedBridge) -> None:
    """~24 MB of media in 60 KB frames and 3000 key presses, then `stop`: toward a stalled
    agent the socket's buffer fills with the media, the writer's queue with the key presses, and
    the bridge's read of Plivo waits for room (each send bounded, so the caller's side
    gives up when the bridge stops reading it)."""
    peer = bridge.peer()
    await peer.connect()
    await peer.start()
    big = base64.b64encode(b"\xff" * 45_000).decode()
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        for _ in range(400):
            frame = peer.media_frame()
            frame["media"]["payload"] = big
            await asyncio.wait_for(peer.send_raw(frame), 2)
        for _ in range(3000):  # key presses are never dropped: they wait for room
            await asyncio.wait_for(peer.dtmf("1"), 2)
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        await asyncio.wait_for(peer.stop(), 2)
    try:
        await bridge.wait_ended(timeout=12)
    finally:
        await peer.close()


def test_a_stalled_agent_does_not_keep_the_call_open_after_the_caller_hangs_up() -> None:
    """Issue 13 item 2: before AGENT_WRITE_TIMEOUT_S the call was still open 22 s later, with
    no CallEnded."""

    async def main() -> None:
        async with ScriptedAgent(_stalled_agent) as agent:
            bridge = SupervisedBridge(agent.url, transport=transport(), agent_write_timeout_s=1.0)
            with bridge.server:
                await _flood_then_hang_up(bridge)

    run(main(), timeout=40)


def test_a_reading_agent_twin_ends_the_same_flood_promptly() -> None:
    """The allow twin of the stalled agent: the same flood to an agent that reads ends fine."""

    async def main() -> None:
        async with ScriptedAgent() as agent:
            bridge = SupervisedBridge(agent.url, transport=transport())
            with bridge.server:
                await _flood_then_hang_up(bridge)

    run(main(), timeout=40)


def test_raw_websocket_without_a_signature_is_refused_and_records_nothing() -> None:
    """A raw client (no Plivo headers) is turned away before any call exists."""

    async def main() -> None:
        async with ScriptedAgent() as agent:
            bridge = SupervisedBridge(agent.url, transport=transport())
            with bridge.server:
                with pytest.raises(Exception):  # noqa: B017  (HTTP 403 at the upgrade)
                    async with connect(bridge.stream_url, open_timeout=5) as ws:
                        await ws.send('{"event": "start"}')
                        await ws.recv()
                assert bridge.call_ended() == [] and agent.calls == []

    run(main())
