"""The relay under hostile input and faults, on loopback (issue 13, items 2, 7 and 11): every
stream ends, promptly, with both sockets closed, no task left behind, and CallEnded written
when a call was built.

- a stalled agent (it stops reading) cannot keep a call open after the caller hangs up;
- a `start` with an identifier over 256 characters is refused before the agent is dialled;
- a call that fails while it is being built still closes both sockets and its tasks;
- an unsupported media format is refused at `start`; a socket that never sends `start` is
  closed; a Plivo frame far over any real one is refused by the socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from mirror_bridge.app import create_app
from mirror_bridge.plivo_socket import PLIVO_MAX_MESSAGE_BYTES, WS_PROTOCOL
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import StaticTenants, TenantConfig
from mirror_dev.plivo_peer import signed_headers
from mirror_dev.scripted_agent import ScriptedAgent, idle
from tests.conftest import AUTH_TOKEN, run
from tests.fakes.transport import FakeTransport
from tests.support.harness import SupervisedBridge
from tests.support.live_server import LiveServer, free_port
from tests.support.relay import NUMBER, Bridge

pytestmark = pytest.mark.integration

SERVERS = [WS_PROTOCOL, "auto"]


# --- item 2: a stalled agent ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stalled_agent() -> AsyncIterator[tuple[str, list[ServerConnection]]]:
    """An agent that accepts the call and then never reads a message (its socket's buffers
    fill, then the bridge's queue for it)."""
    conns: list[ServerConnection] = []

    async def handler(conn: ServerConnection) -> None:
        conns.append(conn)
        await conn.wait_closed()  # never reads

    async with serve(
        handler, "127.0.0.1", 0, max_queue=1, compression=None, ping_interval=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/agent", conns


@pytest.mark.parametrize("ws", SERVERS)
def test_a_stalled_agent_cannot_keep_the_call_open_after_the_caller_hangs_up(ws: str) -> None:
    async def main() -> None:
        async with stalled_agent() as (url, conns):
            bridge = SupervisedBridge(
                url, transport=FakeTransport(), queue_size=4, agent_write_timeout_s=0.5,
                caller_silence_s=0.0,
            )  # fmt: skip
            bridge.server = LiveServer(bridge.app, bridge.port, ws=ws)
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    # ~24 MB of caller audio: more than the sockets' buffers and the queue hold
                    big = [bytes([i % 251]) * 12_000 for i in range(1_500)]
                    t0 = time.monotonic()
                    # the caller hangs up after its audio: before the fix, the stop waited
                    # behind a delivery to the agent that never completed. Now the stalled
                    # agent ends the call (the stream may close under the sender) or the
                    # stop is taken at once.
                    with contextlib.suppress(ConnectionClosed):
                        await asyncio.wait_for(peer.media(big, paced=False), 15)
                        await peer.stop()
                    hung_up = time.monotonic()
                    await bridge.wait_ended(1, timeout=10)
                    ended_after = time.monotonic() - hung_up
                    await asyncio.wait_for(peer.closed.wait(), 5)
                relay = bridge.relays[0]
                assert relay.end_reason in ("agent_stalled", "stop")
                assert ended_after < 3.0  # not MAX_CALL_S: promptly
                assert hung_up - t0 < 10.0
                assert len(bridge.call_ended()) == 1  # CallEnded once
                # the bridge dropped its end of the agent's socket (the agent, reading nothing,
                # may never notice): its connection is closed, not left to the keepalive
                agent_conn = relay.agent
                deadline = time.monotonic() + 5
                while agent_conn.state is not State.CLOSED:
                    assert time.monotonic() < deadline, "the agent's socket was left open"
                    await asyncio.sleep(0.02)
                assert conns  # the stalled agent was dialled

    run(main(), timeout=60)


def test_an_agent_that_reads_is_never_taken_for_a_stalled_one() -> None:
    """The allow twin: the same burst to an agent that reads ends with Plivo's stop."""

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(
                agent.url, transport=FakeTransport(), queue_size=4, agent_write_timeout_s=0.5,
                caller_silence_s=0.0,
            )  # fmt: skip
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    await peer.media([bytes([i % 251]) * 12_000 for i in range(300)], False)
                    await agent.calls[0].wait_event("media", count=300, timeout=20)
                    await peer.stop()
                    await bridge.wait_ended(1)
                    await asyncio.wait_for(peer.closed.wait(), 5)
                assert bridge.relays[0].end_reason == "stop"
                assert agent.calls[0].events()[-1]["event"] == "stop"  # forwarded as it came

    run(main(), timeout=60)


# --- item 7: identifiers over 256 characters, a call that fails while built --------------------


@pytest.mark.parametrize("field", ["call_id", "stream_id"])
def test_an_identifier_over_256_characters_is_refused_before_the_agent_is_dialled(
    field: str,
) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport())
            with bridge.server:
                async with bridge.peer(**{field: "c" * 257}) as peer:
                    await peer.start()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                    assert peer.close_code == 1008
                assert agent.calls == []  # never dialled: no socket to leak
                assert bridge.relays[0].end_reason == "invalid_start"
                assert bridge.sessions == []

    run(main())


def test_a_256_character_call_id_is_a_call_like_any_other() -> None:
    """The allow twin: the longest identifier the functions take makes a normal call."""

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport())
            with bridge.server:
                async with bridge.peer(call_id="c" * 256) as peer:
                    await peer.start()
                    await agent.connected.wait()
                    await peer.stop()
                    await bridge.wait_ended(1)
                    await asyncio.wait_for(peer.closed.wait(), 5)
                assert bridge.relays[0].end_reason == "stop"
                assert bridge.call_ended()[0]["call_id"] == "c" * 256

    run(main())


def test_a_call_that_fails_while_built_closes_both_sockets_and_leaves_no_task() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def refusing_factory(ctx: Any, io: Any) -> Any:
        loops.append(asyncio.get_running_loop())
        raise ValueError("the session cannot be built")

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = Bridge(agent.url, session_factory=refusing_factory)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await asyncio.wait_for(agent.calls[0].closed.wait(), 5)  # the agent's socket
                call_id = peer.call_id
                deadline = time.monotonic() + 5
                while True:  # the server's loop, read from here: retried until it settles
                    try:
                        left = [
                            t.get_name()
                            for t in asyncio.all_tasks(loops[0])
                            if call_id in t.get_name() and not t.done()
                        ]
                    except RuntimeError:  # the set changed while it was read
                        continue
                    if not left or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.02)
                assert left == []
                assert bridge.app.state.relays[0].end_reason == "error"

    run(main())


# --- item 11: media format, start timeout, frame size ------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate"), [("audio/x-mulaw", 16000), ("audio/opus", 48000), ("audio/x-l16", 44100)]
)
def test_an_unsupported_media_format_is_refused_at_start(encoding: str, rate: int) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport())
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start(encoding=encoding, sample_rate=rate)
                    await asyncio.wait_for(peer.closed.wait(), 5)
                    assert peer.close_code == 1003
                assert agent.calls == [] and bridge.sessions == []
                assert bridge.relays[0].end_reason == "unsupported_media_format"

    run(main())


@pytest.mark.parametrize(
    ("encoding", "rate"), [("audio/x-mulaw", 8000), ("audio/x-l16", 8000), ("audio/x-l16", 16000)]
)
def test_every_format_the_bridge_speaks_is_accepted(encoding: str, rate: int) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport())
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start(encoding=encoding, sample_rate=rate)
                    await agent.connected.wait()
                    await peer.stop()
                    await bridge.wait_ended(1)
                assert bridge.relays[0].end_reason == "stop"

    run(main())


def _signed(url: str) -> dict[str, str]:
    return signed_headers(AUTH_TOKEN, url.replace("ws://", "http://"))


def _bridge(agent_url: str, **settings: Any) -> tuple[Any, LiveServer, str]:
    port = free_port()
    config = Settings(
        auth_token=AUTH_TOKEN, public_base_url=f"http://127.0.0.1:{port}", close_drain_s=0.5,
        **settings,
    )  # fmt: skip
    tenants = StaticTenants({NUMBER: TenantConfig(tenant_id="acme", agent_url=agent_url)})
    app = create_app(config, tenants=tenants)
    return app, LiveServer(app, port), f"ws://127.0.0.1:{port}/plivo/stream"


def test_a_socket_that_never_sends_start_is_closed() -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            app, server, url = _bridge(agent.url, start_timeout_s=0.3)
            with server:
                async with connect(url, additional_headers=_signed(url), compression=None) as ws:
                    t0 = time.monotonic()
                    await ws.send(json.dumps({"event": "media", "media": {"payload": ""}}))
                    await asyncio.wait_for(ws.wait_closed(), 5)
                    assert time.monotonic() - t0 < 2.0
                    assert ws.close_code == 1008
                assert agent.calls == []
                assert app.state.relays[0].end_reason == "start_timeout"

    run(main())


def test_a_start_in_time_is_not_timed_out() -> None:
    """The allow twin: a start within the limit makes a call that outlives the limit."""

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            app, server, url = _bridge(agent.url, start_timeout_s=0.3)
            with server:
                async with connect(url, additional_headers=_signed(url), compression=None) as ws:
                    start = {"event": "start", "extra_headers": f"mirrorNumber={NUMBER}",
                             "start": {"callId": "c", "streamId": "s"}}  # fmt: skip
                    await ws.send(json.dumps(start))
                    await agent.connected.wait()
                    await asyncio.sleep(0.6)  # twice the start limit: still open
                    assert ws.close_code is None
                    await ws.send(json.dumps({"event": "stop", "streamId": "s"}))
                    await asyncio.wait_for(ws.wait_closed(), 5)
                assert app.state.relays[0].end_reason == "stop"

    run(main())


@pytest.mark.parametrize("before_start", [True, False])
def test_a_plivo_frame_over_the_limit_is_refused_by_the_socket(before_start: bool) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            app, server, url = _bridge(agent.url)
            with server:
                async with connect(
                    url, additional_headers=_signed(url), max_size=None, compression=None
                ) as ws:
                    start = {"event": "start", "extra_headers": f"mirrorNumber={NUMBER}",
                             "start": {"callId": "c", "streamId": "s"}}  # fmt: skip
                    if not before_start:
                        await ws.send(json.dumps(start))
                        await agent.connected.wait()
                    payload = "A" * (PLIVO_MAX_MESSAGE_BYTES + 1)
                    await ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
                    await asyncio.wait_for(ws.wait_closed(), 5)
                    assert ws.close_code == 1009  # message too big

    run(main())


def test_a_frame_under_the_limit_is_relayed() -> None:
    """The allow twin: a large but legal media frame reaches the agent."""

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            app, server, url = _bridge(agent.url)
            with server:
                async with connect(url, additional_headers=_signed(url), compression=None) as ws:
                    start = {"event": "start", "extra_headers": f"mirrorNumber={NUMBER}",
                             "start": {"callId": "c", "streamId": "s"}}  # fmt: skip
                    await ws.send(json.dumps(start))
                    await agent.connected.wait()
                    payload = "A" * (PLIVO_MAX_MESSAGE_BYTES - 100)
                    await ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
                    got = await agent.calls[0].wait_event("media")
                    assert len(got["media"]["payload"]) == len(payload)
                    await ws.send(json.dumps({"event": "stop", "streamId": "s"}))
                    await asyncio.wait_for(ws.wait_closed(), 5)

    run(main())


@pytest.mark.parametrize("ws", SERVERS)
def test_a_client_offering_compression_is_relayed_uncompressed(ws: str) -> None:
    """A client that offers permessage-deflate (websockets' default) gets no extension on
    Plivo's socket, and its media reaches the agent (before, the push path negotiated it and
    then dropped every compressed message)."""

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            app, server, url = _bridge(agent.url)
            server = LiveServer(app, server.port, ws=ws)
            with server:
                async with connect(url, additional_headers=_signed(url)) as client:
                    if ws == WS_PROTOCOL:
                        assert client.response is not None
                        assert "Sec-WebSocket-Extensions" not in client.response.headers
                    start = {"event": "start", "extra_headers": f"mirrorNumber={NUMBER}",
                             "start": {"callId": "c", "streamId": "s"}}  # fmt: skip
                    await client.send(json.dumps(start))
                    await agent.connected.wait()
                    await client.send(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))
                    got = await agent.calls[0].wait_event("media", timeout=3)
                    assert got["media"]["payload"] == "AAAA"
                    await client.send(json.dumps({"event": "stop", "streamId": "s"}))
                    await asyncio.wait_for(client.wait_closed(), 5)
                assert app.state.relays[0].end_reason == "stop"

    run(main())
