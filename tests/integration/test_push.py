"""Push delivery (mirror_bridge.framing), the agent connection (agent_socket.AgentConnection) and
uvicorn's protocol for Plivo's stream (plivo_socket.PlivoWebSocketProtocol): messages in order
from data_received, the fast path agreeing with websockets' own parser, control frames, fragments
and errors through the sans-I/O protocol, back-pressure both ways, the end after the backlog,
and the deployed settings naming the protocol."""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import CLOSED, OPEN, State
from websockets.server import ServerProtocol

from mirror_bridge import framing
from mirror_bridge.agent_socket import AgentConnection, connect_agent
from mirror_bridge.framing import between_frames, frame
from mirror_bridge.plivo_socket import EXTENSION, WS_PROTOCOL
from tests.conftest import run
from tests.fakes.framing import Owner, Recorder, peer_frame

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# --- FrameReceiver on a fake transport ---------------------------------------------------------


@pytest.mark.parametrize("server_side", [True, False])
def test_whole_text_frames_go_to_the_handler_as_websockets_parses_them(server_side: bool) -> None:
    async def scenario() -> None:
        owner = Owner(server_side)
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        texts = ["x" * n for n in (0, 1, 125, 126, 127, 65535, 65536, 70000)] + ['{"é": "ü"}']
        for text in texts:
            owner.receiver.feed(peer_frame(owner, text))
        assert rec.got == texts
        assert owner.slow == []  # none needed the protocol
        assert owner.receiver.fast_frames == len(texts)

    run(scenario())


def test_frames_split_and_joined_across_reads_arrive_whole_and_in_order() -> None:
    async def scenario() -> None:
        owner = Owner()
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        texts = [f"message {i} " + "y" * (i * 37 % 300) for i in range(40)]
        stream = b"".join(peer_frame(owner, t) for t in texts)
        cuts = [0, 1, 2, 3, 7, 50, 51, 400, 401, 402, 1000, 1003, 2500, len(stream)]
        for a, b in zip(cuts, cuts[1:], strict=False):
            owner.receiver.feed(stream[a:b])
        assert rec.got == texts

    run(scenario())


def test_control_frames_fragments_and_binary_go_through_the_protocol_in_order() -> None:
    async def scenario() -> None:
        owner = Owner()
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        data = b"".join(
            [
                peer_frame(owner, "a"),
                peer_frame(owner, b"ping!", opcode=0x9),
                peer_frame(owner, "frag", opcode=0x1, fin=False),
                peer_frame(owner, "ment", opcode=0x0, fin=False),
                peer_frame(owner, "ed", opcode=0x0, fin=True),
                peer_frame(owner, b"\x00\x01", opcode=0x2),
                peer_frame(owner, b"", opcode=0xA),  # an unsolicited pong
                peer_frame(owner, "z"),
            ]
        )
        owner.receiver.feed(data)
        assert rec.got == ["a", "fragmented", b"\x00\x01", "z"]
        assert owner.pongs == 1
        # the ping was answered with a pong carrying its data
        assert any(w[0] == 0x8A and w.endswith(b"ping!") for w in owner.transport.written)
        assert owner.protocol.state is OPEN and between_frames(owner.protocol)
        assert owner.receiver.fast

    run(scenario())


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (lambda o: peer_frame(o, b"\xff\xfe", opcode=0x1), 1007),  # text that is not UTF-8
        (lambda o: bytes([0xC1]) + peer_frame(o, "x")[1:], 1002),  # a reserved bit
        (lambda o: bytes([0x83]) + peer_frame(o, "x")[1:], 1002),  # a reserved opcode
        (lambda o: peer_frame(o, "x" * 2000), 1009),  # over max_size (1000 here)
        (lambda o: Frame(Opcode.TEXT, b"x").serialize(mask=False), 1002),  # unmasked from a client
    ],
)
def test_frames_the_protocol_refuses_close_the_connection_as_websockets_does(
    bad: Callable[[Owner], bytes], code: int
) -> None:
    async def scenario() -> None:
        owner = Owner(max_size=1000)
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        owner.receiver.feed(peer_frame(owner, "before") + bad(owner) + peer_frame(owner, "after"))
        assert rec.got == ["before"]
        assert owner.protocol.state is not OPEN and owner.protocol.close_sent.code == code
        owner.receiver.feed(peer_frame(owner, "later"))  # the protocol discards it
        assert rec.got == ["before"]

    run(scenario())


def test_a_handler_that_waits_pauses_reading_and_keeps_the_order() -> None:
    async def scenario() -> None:
        owner = Owner()
        rec = Recorder()
        rec.hold = {"2", "4"}
        owner.receiver.start(rec, rec.on_end)
        owner.receiver.feed(b"".join(peer_frame(owner, str(i)) for i in range(1, 4)))
        assert rec.got == ["1", "2"] and owner.transport.paused
        owner.receiver.feed(peer_frame(owner, "4"))  # read before the pause took effect
        owner.receiver.feed(peer_frame(owner, "5"))
        assert rec.got == ["1", "2"]
        rec.release("2")
        await asyncio.sleep(0)
        assert rec.got == ["1", "2", "3", "4"] and owner.transport.paused
        rec.release("4")
        await asyncio.sleep(0)
        assert rec.got == ["1", "2", "3", "4", "5"] and not owner.transport.paused

    run(scenario())


def test_messages_before_start_wait_with_reading_paused() -> None:
    async def scenario() -> None:
        owner = Owner()
        owner.receiver.feed(peer_frame(owner, "early") + peer_frame(owner, "too"))
        assert owner.transport.paused
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        assert rec.got == ["early", "too"] and not owner.transport.paused

    run(scenario())


def test_the_end_comes_once_after_what_was_received_before_it() -> None:
    async def scenario() -> None:
        owner = Owner()
        rec = Recorder()
        rec.hold = {"1"}
        owner.receiver.start(rec, rec.on_end)
        owner.receiver.feed(peer_frame(owner, "1") + peer_frame(owner, "2"))
        owner.protocol.receive_eof()  # the connection is lost while "1" is handled
        owner.receiver.eof()
        owner.receiver.eof()
        assert rec.got == ["1"] and rec.ended == 0
        rec.release("1")
        await asyncio.sleep(0)
        assert rec.got == ["1", "2"] and rec.ended == 1
        owner.receiver.eof()
        assert rec.ended == 1

    run(scenario())


def test_after_stop_nothing_is_delivered_and_the_protocol_gets_everything() -> None:
    async def scenario() -> None:
        owner = Owner()
        rec = Recorder()
        rec.hold = {"1"}
        owner.receiver.start(rec, rec.on_end)
        owner.receiver.feed(peer_frame(owner, "1") + peer_frame(owner, "2"))
        owner.receiver.stop()
        assert not owner.transport.paused
        owner.receiver.feed(
            peer_frame(owner, "3") + Frame(Opcode.CLOSE, b"\x03\xe8").serialize(mask=True)
        )
        rec.release("1")
        await asyncio.sleep(0)
        owner.receiver.eof()
        assert rec.got == ["1"] and rec.ended == 0
        assert owner.protocol.close_rcvd is not None  # the close handshake went on

    run(scenario())


def test_frames_are_serialised_as_websockets_serialises_them() -> None:
    for n in (0, 5, 125, 126, 65535, 65536):
        payload = os.urandom(n)
        assert frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)
        assert frame(payload, framing.BINARY) == Frame(Opcode.BINARY, payload).serialize(mask=False)
        masked = frame(payload, masked=True)
        server = ServerProtocol(state=State.OPEN, max_size=None)
        server.receive_data(masked)
        [event] = server.events_received()
        assert event.opcode is Opcode.TEXT and event.data == payload
        text = "é" * n
        assert framing.text_frame(text) == frame(text.encode())
        server = ServerProtocol(state=State.OPEN, max_size=None)
        server.receive_data(framing.masked_text_frame(text))
        [event] = server.events_received()
        assert event.opcode is Opcode.TEXT and event.data.decode() == text
    keys = {frame(b"x", masked=True)[2:6] for _ in range(3000)}
    assert len(keys) > 2990  # a fresh key each frame (across refills of the key block)


# --- AgentConnection against a websockets server -----------------------------------------------


class Agent:
    """A websockets server; `handler(conn)` runs per connection."""

    def __init__(self, handler: Callable[[ServerConnection], Any], **kw: Any) -> None:
        self.handler = handler
        self.kw = kw
        self.headers: list[dict[str, str]] = []

    async def __aenter__(self) -> Agent:
        async def handle(conn: ServerConnection) -> None:
            assert conn.request is not None
            self.headers.append(dict(conn.request.headers.raw_items()))
            await self.handler(conn)

        self.server = await serve(handle, "127.0.0.1", 0, compression=None, **self.kw)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/agent"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def collect(conn: AgentConnection) -> tuple[list[str | bytes], asyncio.Event]:
    got: list[str | bytes] = []
    ended = asyncio.Event()
    conn.start_delivery(lambda m: got.append(m), ended.set)  # type: ignore[func-returns-value]
    return got, ended


def test_the_agent_connection_pushes_messages_and_writes_straight_to_the_socket() -> None:
    async def agent(conn: ServerConnection) -> None:
        async for message in conn:
            await conn.send(f"echo {message}")
            if message == "bye":
                await conn.close()

    async def scenario() -> None:
        async with Agent(agent) as server:
            conn = await connect_agent(server.url, {"X-Tenant": "acme"}, open_timeout=3)
            assert isinstance(conn, AgentConnection)
            assert server.headers[0]["X-Tenant"] == "acme"
            got, ended = await collect(conn)
            for i in range(50):
                assert conn.write_now(f"m{i}")
            await conn.send("sent")  # the awaited path still works
            assert conn.write_now("bye")
            await asyncio.wait_for(ended.wait(), 5)
            assert got == [f"echo m{i}" for i in range(50)] + ["echo sent", "echo bye"]
            assert conn.receiver.fast_frames == len(got)
            assert conn.protocol.state is CLOSED and conn.close_code == 1000
            assert not conn.write_now("late")  # closed: the awaited send raises instead
            with pytest.raises(ConnectionClosed):
                await conn.send("late")
            with pytest.raises(TypeError):
                await conn.recv()

    run(scenario())


def test_the_agent_connection_closes_cleanly_and_answers_pings() -> None:
    closed: list[int | None] = []

    async def agent(conn: ServerConnection) -> None:
        latency = await (await conn.ping(b"hi"))
        await conn.send(f"pong in {latency >= 0}")
        await conn.wait_closed()
        closed.append(conn.close_code)

    async def scenario() -> None:
        async with Agent(agent) as server:
            conn = await connect_agent(server.url, {}, open_timeout=3)
            got, ended = await collect(conn)
            while not got:
                await asyncio.sleep(0.01)
            assert got == ["pong in True"]
            latency = await asyncio.wait_for(await conn.ping(), 5)  # keepalive's ping: answered
            assert latency >= 0 and conn.latency == latency
            conn.stop_delivery()
            await asyncio.wait_for(conn.close(), 5)
            assert conn.protocol.state is CLOSED and conn.close_code == 1000
            while not closed:
                await asyncio.sleep(0.01)
            assert closed == [1000]
            assert not ended.is_set()  # stopped: no end is reported

    run(scenario())


def test_the_agent_connection_refuses_an_oversize_message_with_1009() -> None:
    async def agent(conn: ServerConnection) -> None:
        await conn.send("small")
        await conn.send("x" * (2**20 + 1))
        await conn.send("never read")
        await conn.wait_closed()

    async def scenario() -> None:
        async with Agent(agent, max_size=None) as server:
            conn = await connect_agent(server.url, {}, open_timeout=3)
            got, ended = await collect(conn)
            await asyncio.wait_for(ended.wait(), 5)
            assert got == ["small"]
            assert conn.protocol.close_sent is not None and conn.protocol.close_sent.code == 1009

    run(scenario())


def test_the_agent_leaving_mid_stream_ends_delivery_after_what_it_sent() -> None:
    async def agent(conn: ServerConnection) -> None:
        for i in range(20):
            await conn.send(str(i))
        conn.transport.abort()  # gone without a close frame

    async def scenario() -> None:
        async with Agent(agent) as server:
            conn = await connect_agent(server.url, {}, open_timeout=3)
            got, ended = await collect(conn)
            await asyncio.wait_for(ended.wait(), 5)
            assert got == [str(i) for i in range(20)]
            with pytest.raises(ConnectionClosed):
                await conn.send("x")

    run(scenario())


def test_the_agent_connection_waits_for_room_when_the_agent_reads_slowly() -> None:
    release = asyncio.Event()
    received: list[str] = []

    async def agent(conn: ServerConnection) -> None:
        conn.transport.pause_reading()  # a stalled agent: its socket buffers fill up
        await release.wait()
        conn.transport.resume_reading()
        async for message in conn:
            received.append(str(message))
            if message == "last":
                return

    async def scenario() -> None:
        async with Agent(agent) as server:
            conn = await connect_agent(server.url, {}, open_timeout=3)
            await collect(conn)
            chunk = "z" * 60_000
            written = 0
            while conn.write_now(chunk):  # until the transport says it is full
                written += 1
                assert written < 10_000, "never paused"
            assert conn.paused
            send = asyncio.create_task(conn.send("last"))
            await asyncio.sleep(0.1)
            assert not send.done()  # the awaited send waits for room
            release.set()
            await asyncio.wait_for(send, 10)
            while "last" not in received:
                await asyncio.sleep(0.01)
            assert received == [chunk] * written + ["last"]
            await conn.close()

    run(scenario(), timeout=40)


def test_connect_agent_times_out_on_a_silent_server() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError):
            await connect_agent(f"ws://127.0.0.1:{port}/", {}, open_timeout=0.2)
        server.close()

    run(scenario())


# --- Plivo's side under uvicorn, and the deployed settings -------------------------------------


def test_the_deployed_server_offers_the_push_path_and_the_relay_uses_it() -> None:
    from mirror_dev.scripted_agent import ScriptedAgent, echo
    from tests.support.relay import Bridge

    async def main() -> None:
        async with ScriptedAgent(echo) as agent:
            bridge = Bridge(agent.url)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await peer.media(20)
                    await peer.wait_for(lambda p: len(p.events("playAudio")) == 20)
                    relay = bridge.app.state.relays[0]
                    plivo = relay.plivo.scope["extensions"][EXTENSION]
                    # start came through ASGI; frames queued before the relay took over too
                    assert plivo.receiver is not None and plivo.receiver.delivered == 20
                    assert plivo.receiver.fast_frames >= 15
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await bridge.wait_closed_sessions()
        assert bridge.sessions[0].closes == ["stop"]

    run(main())


def test_the_image_main_py_and_the_benchmark_all_serve_with_the_push_protocol() -> None:
    dockerfile = (REPO / "bridge" / "Dockerfile").read_text()
    cmd = json.loads(
        re.search(r"^CMD (\[.*?\])\s*$", dockerfile, re.M | re.S)[1].replace("\\\n", "")
    )  # type: ignore[index]
    assert cmd[cmd.index("--ws") + 1] == WS_PROTOCOL
    assert "ws=WS_PROTOCOL" in (REPO / "bridge" / "main.py").read_text()
    bench = (REPO / "benchmarks" / "bridge.py").read_text()
    assert f'DEPLOYED_WS = "{WS_PROTOCOL}"' in bench
    module, _, name = WS_PROTOCOL.partition(":")
    import importlib

    assert getattr(importlib.import_module(module), name).__name__ == name


def test_a_64_bit_length_is_never_read_as_a_short_frame() -> None:
    async def scenario() -> None:
        owner = Owner(max_size=None)
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        payload = b"q" * 70000
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, len(payload))
        key = b"\x01\x02\x03\x04"
        from websockets.utils import apply_mask

        owner.receiver.feed(head + key + apply_mask(payload, key))
        assert rec.got == ["q" * 70000]

    run(scenario())


@pytest.mark.parametrize("early", ["media", "gone"])
def test_what_plivo_sent_while_the_agent_was_dialled_is_delivered_then_its_end(
    early: str,
) -> None:
    """Frames (or the hang-up) that came while the agent was being dialled waited in uvicorn's
    queue: the push path delivers them first, in order, then the end."""
    from mirror_bridge.app import create_app
    from mirror_bridge.relay import agent_connector
    from mirror_bridge.settings import Settings
    from mirror_bridge.tenants import StaticTenants, TenantConfig
    from mirror_dev.plivo_peer import PlivoPeer
    from mirror_dev.scripted_agent import ScriptedAgent, idle
    from tests.conftest import AUTH_TOKEN
    from tests.support.live_server import LiveServer, free_port
    from tests.support.relay import NUMBER, RecordingSession

    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            port = free_port()
            settings = Settings(
                auth_token=AUTH_TOKEN, public_base_url=f"http://127.0.0.1:{port}",
                close_drain_s=0.5,
            )  # fmt: skip
            dial = agent_connector(settings)

            async def slow_connect(url: str, headers: dict[str, str]) -> Any:
                await asyncio.sleep(0.3)  # Plivo's frames queue meanwhile
                return await dial(url, headers)

            sessions: list[RecordingSession] = []
            tenants = StaticTenants({NUMBER: TenantConfig(tenant_id="acme", agent_url=agent.url)})
            app = create_app(
                settings, tenants=tenants, connect_agent=slow_connect,
                session_factory=lambda ctx, io: RecordingSession(ctx, io, sessions),
            )  # fmt: skip
            with LiveServer(app, port):
                peer = PlivoPeer(
                    f"ws://127.0.0.1:{port}/plivo/stream", auth_token=AUTH_TOKEN,
                    extra_headers=f"mirrorNumber={NUMBER}", speed=20.0,
                )  # fmt: skip
                await peer.connect()
                await peer.start()
                if early == "media":
                    await peer.media(5)
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await agent.calls[0].wait_event("media", count=5)
                    await peer.stop()
                else:
                    await peer.close()  # gone before the agent answered
                for _ in range(500):
                    if sessions and sessions[0].closes:
                        break
                    await asyncio.sleep(0.01)
                relay = app.state.relays[0]
        assert sessions[0].closes == (["stop"] if early == "media" else ["plivo_closed"])
        if early == "media":
            assert [m["event"] for m in agent.calls[0].events()] == ["start"] + ["media"] * 5 + [
                "stop"
            ]
            assert relay.plivo.scope["extensions"][EXTENSION].receiver is not None

    run(main())
