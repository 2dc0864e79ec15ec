"""The call-length guard (MAX_CALL_S) and the silence watchdog (CALLER_SILENCE_S): the guard
ends a call cleanly (the agent told, both sockets closed, the final state written, CallEnded
once); the watchdog tells the agent when the caller has gone quiet, and only then."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from mirror.models import CallContext
from mirror_bridge.agent_protocol import MirrorCallEnding, MirrorCallerSilent
from mirror_bridge.app import stream_xml
from mirror_bridge.audio import is_loud, lin2ulaw
from mirror_bridge.settings import Settings
from mirror_dev.plivo_peer import SILENCE
from mirror_dev.scripted_agent import AgentCall, ScriptedAgent, idle
from tests.conftest import run
from tests.fakes.session import frame, make_session, start_event, turn, until
from tests.fakes.transport import ALLOW, FakeTransport
from tests.support.harness import TENANT, SupervisedBridge

pytestmark = pytest.mark.integration

LOUD = lin2ulaw((3000).to_bytes(2, "little", signed=True) * 160)  # a 20 ms tone-ish frame
QUIET = lin2ulaw((200).to_bytes(2, "little", signed=True) * 160)  # line noise, not speech


def media(audio: bytes) -> dict[str, Any]:
    return {
        "event": "media",
        "streamId": "s",
        "media": {"payload": base64.b64encode(audio).decode()},
    }


def silent_notices(agent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in agent if m.get("event") == "mirror.caller_silent"]


def test_loudness_test_for_both_stream_formats() -> None:
    assert is_loud(LOUD, "audio/x-mulaw", 500)
    assert not is_loud(SILENCE, "audio/x-mulaw", 500)
    assert not is_loud(QUIET, "audio/x-mulaw", 500)
    assert not is_loud(b"", "audio/x-mulaw", 500)
    pcm = (-4000).to_bytes(2, "little", signed=True) + b"\x00\x00" * 10
    assert is_loud(pcm, "audio/x-l16", 500) and not is_loud(b"\x00" * 40, "audio/x-l16", 500)


def test_max_call_duration_ends_the_call_cleanly_once() -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport(), max_call_s=0.3)
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    t0 = time.monotonic()
                    with contextlib.suppress(ConnectionClosed):  # the bridge closes it
                        await peer.media(100)  # 2 s of audio; the guard stops the call first
                    await asyncio.wait_for(peer.closed.wait(), 5)
                    ended_after = time.monotonic() - t0
                call = agent.calls[0]
                await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()
        assert 0.25 < ended_after < 2.0
        assert peer.close_code == 1000
        ending = call.events("mirror.call_ending")
        assert ending == [{"event": "mirror.call_ending", "reason": "max_duration",
                           "max_call_s": 0.3}]  # fmt: skip
        assert MirrorCallEnding.model_validate(ending[0]).model_dump() == ending[0]  # documented
        assert call.events()[-1] == ending[0]  # the last thing the agent heard; no stop invented
        assert "stop" not in [m["event"] for m in call.events()]
        (ended,) = bridge.call_ended()
        assert ended["reason"] == "max_duration" and ended["tenant_id"] == TENANT
        meta = bridge.store.get_call_meta(
            CallContext(call_id=peer.call_id, tenant_id=TENANT), time.time()
        )
        assert meta is not None and meta["end_reason"] == "max_duration"
        assert bridge.relays[0].end_reason == "max_duration"

    run(main())


def test_stream_timeout_backs_up_the_guard_and_is_absent_without_one() -> None:
    with_limit = Settings(auth_token="t", public_base_url="https://b.example.com", max_call_s=90.5)
    assert 'streamTimeout="151"' in stream_xml(with_limit, "1", "acme")
    without = Settings(auth_token="t", public_base_url="https://b.example.com", max_call_s=0)
    assert "streamTimeout" not in stream_xml(without, "1", "acme")


def test_silence_notices_repeat_while_it_lasts_and_caller_activity_restarts_them() -> None:
    async def scenario() -> None:
        session, wire, _ = make_session(FakeTransport(), caller_silence_s=0.1)
        await session.on_start(start_event())
        for _ in range(15):  # 0.3 s of silent and quiet frames: they are not the caller
            await session.on_plivo_event(media(SILENCE))
            await session.on_plivo_event(media(QUIET))
            await asyncio.sleep(0.02)
        notices = silent_notices(wire.agent)
        assert [n["notice"] for n in notices[:2]] == [1, 2]
        assert notices[0]["silent_s"] >= 0.1 and notices[1]["silent_s"] >= 0.2
        # the caller speaks for 0.3 s: no notice meanwhile
        before = len(silent_notices(wire.agent))
        for _ in range(15):
            await session.on_plivo_event(media(LOUD))
            await asyncio.sleep(0.02)
        assert len(silent_notices(wire.agent)) == before
        await until(lambda: len(silent_notices(wire.agent)) == before + 1)
        assert silent_notices(wire.agent)[-1]["notice"] == 1  # a new silence, counted anew
        # a key press and a caller turn are the caller too
        for activity in ({"event": "dtmf", "streamId": "s", "dtmf": {"digit": "1"}},
                         turn("t1")):  # fmt: skip
            count = len(silent_notices(wire.agent))
            if activity["event"] == "dtmf":
                await session.on_plivo_event(activity)
            else:
                await session.on_mirror_message(activity)
            await until(lambda c=count: len(silent_notices(wire.agent)) == c + 1)  # type: ignore[misc]
            assert silent_notices(wire.agent)[-1]["notice"] == 1
        assert session.counts["caller_silent_notices"] == len(silent_notices(wire.agent))
        await session.close("stop")
        assert session._silence_task is not None and session._silence_task.done()  # stopped

    run(scenario())


def test_audio_playing_to_the_caller_is_not_their_silence() -> None:
    async def scenario() -> None:
        session, wire, _ = make_session(FakeTransport(), caller_silence_s=0.1)
        await session.on_start(start_event())
        t0 = time.monotonic()
        await session.on_agent_audio(
            {
                "event": "playAudio",
                "media": {
                    "contentType": "audio/x-mulaw",
                    "sampleRate": 8000,
                    "payload": base64.b64encode(LOUD * 20).decode(),
                },
            }
        )  # fmt: skip  (0.4 s of agent speech)
        await until(lambda: bool(silent_notices(wire.agent)), timeout=3)
        assert time.monotonic() - t0 >= 0.45  # the speech's end + the silence limit
        await session.close("stop")

    run(scenario())


def test_watchdog_off_by_default_in_the_session_and_no_notice_for_a_talking_caller() -> None:
    async def scenario() -> None:
        session, wire, _ = make_session(FakeTransport({"score_turn": [(0.0, ALLOW)]}))
        await session.on_start(start_event())
        await session.on_agent_audio(frame(1))
        assert session._silence_task is None
        await session.close("stop")
        assert silent_notices(wire.agent) == []

    run(scenario())


def test_silent_caller_on_loopback_gets_the_agent_a_notice() -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport(), caller_silence_s=0.2)
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    await peer.media(5)  # silent frames
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    call = agent.calls[0]
                    notice = await call.wait_event("mirror.caller_silent", timeout=5)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                await bridge.wait_ended()
        assert notice["notice"] == 1 and notice["silent_s"] >= 0.2
        assert MirrorCallerSilent.model_validate(notice).model_dump() == notice  # documented
        assert len(call.events("media")) == 5  # the caller's frames still reached the agent

    run(main())
