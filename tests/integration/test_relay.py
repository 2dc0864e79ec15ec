"""The relay on real loopback sockets: uvicorn serving the app, the scripted Plivo peer as the
client, the scripted agent as the upstream server."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mirror_bridge.plivo_socket import WS_PROTOCOL
from mirror_dev.plivo_peer import signed_headers
from mirror_dev.scripted_agent import AgentCall, ScriptedAgent, idle
from tests.conftest import AUTH_TOKEN, run
from tests.support.live_server import free_port
from tests.support.relay import NUMBER, Bridge

pytestmark = pytest.mark.integration

SERVERS = [WS_PROTOCOL, "auto"]
"""uvicorn's WebSocket protocol: the bridge's (the relay's push path) and uvicorn's own (the
relay reads Plivo's frames through ASGI)."""


def frames_payloads(messages: list[dict[str, Any]], key: str = "media") -> list[str]:
    return [m[key]["payload"] for m in messages]


@pytest.mark.parametrize("ws", SERVERS)
def test_clean_call_relays_every_frame_in_order_both_ways(ws: str) -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media", count=25)
        for i in range(10):  # distinct payloads so order is checked
            await call.say(frames=1, audio=bytes([i]) * 160)
        await call.send({"event": "checkpoint", "streamId": call.stream_id, "name": "agent-1"})
        await call.wait_event("dtmf")
        await call.send({"event": "sendDTMF", "dtmf": "12#"})
        await call.send({"event": "clearAudio", "streamId": call.stream_id})
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = Bridge(agent.url, ws=ws)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    frames = [bytes([i % 256]) * 160 for i in range(25)]
                    await peer.media(frames)
                    await agent.calls[0].wait_event("playedStream")
                    await peer.dtmf("5")
                    await peer.wait_for(lambda p: p.events("clearAudio"))
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await bridge.wait_closed_sessions()
                call = agent.calls[0]
                await asyncio.wait_for(call.closed.wait(), 5)

        # Plivo -> agent: start, 25 media frames in order, playedStream, dtmf, clearedAudio, stop
        got = [m["event"] for m in call.events()]
        assert got == ["start"] + ["media"] * 25 + ["playedStream", "dtmf", "clearedAudio", "stop"]
        sent = {json.dumps(m, sort_keys=True) for m in peer.sent}
        for m in call.events():  # relayed unchanged: every message equals one Plivo sent
            assert json.dumps(m, sort_keys=True) in sent
        assert [m["media"]["chunk"] for m in call.events("media")] == list(range(1, 26))
        assert frames_payloads(call.events("media")) == [
            base64.b64encode(f).decode() for f in frames
        ]
        assert call.events("playedStream")[0]["name"] == "agent-1"
        assert call.stream_id == peer.stream_id and call.call_id == peer.call_id
        # agent -> Plivo: 10 playAudio in order, the checkpoint, sendDTMF, clearAudio
        got_plivo = [m["event"] for m in peer.events()]
        assert got_plivo == ["playAudio"] * 10 + ["checkpoint", "sendDTMF", "clearAudio"]
        assert [base64.b64decode(p)[0] for p in frames_payloads(peer.events("playAudio"))] == list(
            range(10)
        )
        assert peer.events("sendDTMF")[0] == {"event": "sendDTMF", "dtmf": "12#"}
        assert bytes(peer.heard) == b"".join(bytes([i]) * 160 for i in range(10))
        assert peer.errors == [] or all("reader" in e for e in peer.errors)
        session = bridge.sessions[0]
        assert session.starts == 1 and session.closes == ["stop"]
        assert session.ctx.tenant.tenant_id == "acme" and session.ctx.number == NUMBER

    run(main())


@pytest.mark.parametrize("ws", SERVERS)
def test_agent_disconnect_mid_call_ends_the_call_cleanly(ws: str) -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media", count=3)
        await call.say(frames=2)
        await call.conn.close()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = Bridge(agent.url, ws=ws)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await peer.media(3)  # the agent leaves after the third frame
                    await asyncio.wait_for(peer.closed.wait(), 5)
                    assert len(peer.events("playAudio")) == 2  # sent before the agent left
                    assert peer.close_code == 1000
                await bridge.wait_closed_sessions()
                await asyncio.sleep(0.1)  # a second close would land here
                assert bridge.sessions[0].closes == ["agent_closed"]
                # the service is still up: a second call relays normally
                async with bridge.peer() as peer2:
                    await peer2.start()
                    await agent.connected.wait()
                    await peer2.stop()
                    await asyncio.wait_for(peer2.closed.wait(), 5)
                await bridge.wait_closed_sessions(2)
                assert bridge.sessions[1].closes == ["stop"]

    run(main())


@pytest.mark.parametrize("ws", SERVERS)
def test_plivo_disconnect_mid_call_closes_session_once_and_the_agent_socket(ws: str) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = Bridge(agent.url, ws=ws)
            with bridge.server:
                peer = await bridge.peer().connect()
                await peer.start()
                await peer.media(3)
                call_ready = agent.connected.wait()
                await asyncio.wait_for(call_ready, 5)
                await agent.calls[0].wait_event("media", count=3)
                await peer.close()  # abrupt: no stop
                await bridge.wait_closed_sessions()
                await asyncio.wait_for(agent.calls[0].closed.wait(), 5)
                await asyncio.sleep(0.1)
                assert bridge.sessions[0].closes == ["plivo_closed"]
                assert "stop" not in [m["event"] for m in agent.calls[0].events()]

    run(main())


@pytest.mark.parametrize("knob", ["bad_signature", "missing_headers", "other_url"])
def test_bad_signature_gets_403_and_no_stream(knob: str) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = Bridge(agent.url)
            with bridge.server:
                kw: dict[str, Any] = {}
                if knob == "other_url":
                    kw["signed_url"] = "http://evil.example.com/plivo/stream"
                else:
                    kw[knob] = True
                with pytest.raises(InvalidStatus) as info:
                    await bridge.peer(**kw).connect()
                assert info.value.response.status_code == 403
                await asyncio.sleep(0.05)
                assert agent.calls == [] and bridge.sessions == []
                assert bridge.app.state.relays == []

    run(main())


@pytest.mark.parametrize(
    "variant",
    [
        "http://127.0.0.1:{port}/plivo/stream",
        "https://127.0.0.1:{port}/plivo/stream",
        "http://127.0.0.1:{port}/plivo/stream/websocket",
        "https://127.0.0.1:{port}/plivo/stream/websocket",
    ],
)
def test_upgrade_accepts_every_signed_url_variant(variant: str) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = Bridge(agent.url)
            with bridge.server:
                async with bridge.peer(signed_url=variant.format(port=bridge.port)) as peer:
                    await peer.start()
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                assert len(bridge.sessions) == 1

    run(main())


@pytest.mark.parametrize("ws", SERVERS)
def test_malformed_and_unknown_plivo_frames_are_skipped_and_the_call_goes_on(ws: str) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = Bridge(agent.url, ws=ws)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.send_raw(peer.media_frame())  # before start: skipped
                    await peer.start()
                    assert peer._ws is not None
                    for bad in ["not json", "[1, 2]", '{"no": "event"}',
                                '{"event": "media", "media": {"payload": 5}}',
                                '{"event": "playedStream"}', '{"event": "dtmf", "dtmf": 7}',
                                '{"event": "playFailed", "reason": "x"}',
                                '{"event": "muteStream"}']:  # fmt: skip
                        await peer.send_raw(bad)
                    await peer._ws.send(b"\x00\x01binary")
                    await peer.send_raw(peer.media_frame(numeric_timestamp=True))
                    await peer.dtmf("7")
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await agent.calls[0].wait_event("dtmf")
                    await peer.stop(nested=True)
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await bridge.wait_closed_sessions()
                relay = bridge.app.state.relays[0]
        events = [m["event"] for m in agent.calls[0].events()]
        assert events == ["start", "media", "dtmf", "stop"]
        assert agent.calls[0].events("media")[0]["media"]["chunk"] == 2
        assert bridge.sessions[0].closes == ["stop"]
        skipped = relay.stats.skipped
        assert skipped["plivo_before_start"] == 1
        assert skipped["plivo_malformed"] == 6
        assert skipped["plivo_unknown"] == 2
        assert skipped["plivo_binary"] == 1

    run(main())


def test_checkpoint_ack_variants_reach_the_session() -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.say(frames=2, checkpoint="c1")
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = Bridge(agent.url)
            with bridge.server:
                async with bridge.peer(omit_seq=True, legacy_played=True) as peer:
                    await peer.start()
                    await agent.connected.wait()
                    await agent.calls[0].wait_event("played")
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                # the bridge closed the agent socket before the server stops
                await asyncio.wait_for(agent.calls[0].closed.wait(), 5)
        assert bridge.sessions[0].plivo_events == ["playedStream"]
        assert agent.calls[0].events("played")[0]["name"] == "c1"

    run(main())


def test_mirror_messages_get_replies_and_never_drop_the_call() -> None:
    async def agent_script(call: AgentCall) -> None:
        await call.send({"event": "mirror.bogus", "turn_id": "x1"})
        await call.send({"event": "mirror.turn", "customer_text": "hi"})  # no turn_id
        await call.turn("t1", "hi", "hello")
        await call.send({"event": "media", "media": {"payload": ""}})  # a Plivo inbound event
        await call.send("{not json")
        await call.send({"event": "playAudio", "media": {"payload": "%%%"}})  # not base64
        await call.say(frames=1)
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = Bridge(agent.url)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await peer.wait_for(lambda p: p.events("playAudio"))
                    await agent.calls[0].wait_event("mirror.error", count=6)
                    await peer.media(2)
                    await agent.calls[0].wait_event("media", count=2)
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
        errors = agent.calls[0].events("mirror.error")
        assert [(e["code"], e.get("ref_event"), e.get("ref_id")) for e in errors] == [
            ("unknown_event", None, "x1"),  # the unknown name is not echoed
            ("invalid_message", "mirror.turn", None),
            ("not_configured", "mirror.turn", "t1"),
            ("unsupported_frame", "media", None),
            ("malformed_frame", None, None),
            ("invalid_message", "playAudio", None),
        ]
        assert "turn_id" in errors[1]["message"]
        assert errors[2]["message"] == "scoring not configured"
        assert len(peer.events("playAudio")) == 1  # only the valid one reached Plivo
        assert bridge.sessions[0].closes == ["stop"]

    run(main())


def test_unreachable_agent_closes_the_stream_without_a_session() -> None:
    async def main() -> None:
        bridge = Bridge(f"ws://127.0.0.1:{free_port()}/agent")
        with bridge.server:
            async with bridge.peer() as peer:
                await peer.start()
                await asyncio.wait_for(peer.closed.wait(), 5)
                assert peer.close_code == 1011
        assert bridge.sessions == []
        assert bridge.app.state.relays[0].end_reason == "agent_unreachable"

    run(main())


def test_start_without_a_tenant_or_default_agent_is_refused() -> None:
    """A raw websockets client (no peer helper) with valid headers: the upgrade succeeds, but a
    start naming no known number, with no default agent, closes the stream with 1008."""

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = Bridge(agent.url)
            with bridge.server:
                url = bridge.stream_url
                headers = signed_headers(AUTH_TOKEN, url.replace("ws://", "http://"))
                async with connect(url, additional_headers=headers) as ws:
                    start = {"event": "start", "extra_headers": "mirrorNumber=19999999999",
                             "start": {"callId": "c", "streamId": "s"}}  # fmt: skip
                    await ws.send(json.dumps(start))
                    await asyncio.wait_for(ws.wait_closed(), 5)
                    assert ws.close_code == 1008
                assert agent.calls == [] and bridge.sessions == []
                assert bridge.app.state.relays[0].end_reason == "no_tenant"

    run(main())
