"""The contract with websockets' and uvicorn's internals (`mirror_bridge.compat`), pinned to the
installed versions: exactly the internals the push path uses exist and behave as assumed. An
upgrade that changes any of them fails here first (and the bridge falls back to the public path,
tested at the end: the relay then reads both sockets through their public APIs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets.version
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from websockets.utils import apply_mask as python_apply_mask

from mirror_bridge import agent_socket, compat, framing
from mirror_bridge.agent_socket import AgentConnection, connect_agent
from mirror_bridge.plivo_socket import EXTENSION, PlivoWebSocketProtocol
from tests.conftest import run
from tests.fakes.framing import Owner, Recorder, peer_frame
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def masked(text: str | bytes, opcode: Opcode = Opcode.TEXT, fin: bool = True) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return Frame(opcode, data, fin).serialize(mask=True)


# --- the versions ------------------------------------------------------------------------------


def test_the_installed_versions_are_the_pinned_ones_everywhere() -> None:
    assert websockets.version.version == compat.PINNED["websockets"]
    assert uvicorn.__version__ == compat.PINNED["uvicorn"]
    for requirements in ("bridge/requirements.txt", "requirements-dev.txt"):
        pins = dict(
            line.split("==", 1)
            for line in (REPO / requirements).read_text().splitlines()
            if "==" in line and not line.startswith("#")
        )
        assert {k: pins[k].strip() for k in compat.PINNED} == compat.PINNED, requirements
    assert compat.MISSING == () and compat.push_path_available()


# --- websockets' sans-I/O protocol -------------------------------------------------------------


def test_the_parser_waits_in_at_eof_between_frames_and_nowhere_else() -> None:
    server = ServerProtocol(state=State.OPEN, max_size=None)
    assert compat.between_frames(server)  # fresh: waiting for a frame's first byte
    frame = masked("hello")
    server.receive_data(frame[:1])
    assert not compat.between_frames(server)  # a header byte waits in the reader's buffer
    server.receive_data(frame[1:6])  # the header and the mask key: the payload is awaited
    assert server.reader.buffer == b"" and not compat.between_frames(server)  # by the parser
    server.receive_data(frame[6:])
    assert compat.between_frames(server)
    [event] = server.events_received()
    assert event.data == b"hello"
    closed = ServerProtocol(state=State.OPEN)
    closed.receive_data(masked(b"\x03\xe8", Opcode.CLOSE))
    assert closed.state is not OPEN and not compat.between_frames(closed)


def test_current_size_says_whether_a_fragmented_message_is_open() -> None:
    server = ServerProtocol(state=State.OPEN, max_size=None)
    assert server.current_size is None
    server.receive_data(masked("frag", fin=False))
    assert server.current_size is not None  # a message is open: the fast path keeps off
    server.receive_data(masked(b"", Opcode.PING))
    assert server.current_size is not None  # a control frame in between changes nothing
    server.receive_data(masked("ment", Opcode.CONT, fin=True))
    assert server.current_size is None and compat.between_frames(server)


def test_reader_eof_and_the_message_limits() -> None:
    server = ServerProtocol(state=State.OPEN)
    for name in compat.SansIOState.__annotations__:  # everything the push path reads
        assert hasattr(server, name), name
    assert isinstance(server.reader.buffer, bytearray) and server.reader.eof is False
    assert not compat.protocol_at_eof(server)
    server.receive_eof()
    assert compat.protocol_at_eof(server)
    client = ClientProtocol(parse_uri("ws://a/"), state=State.OPEN, max_size=1000)
    assert (client.max_message_size, client.max_fragment_size) == (1000, None)
    assert compat.message_limit(client) == 1000
    unlimited = ClientProtocol(parse_uri("ws://a/"), state=State.OPEN, max_size=None)
    assert compat.message_limit(unlimited) is None


def test_apply_mask_is_the_speedup_and_masks_as_websockets_does() -> None:
    from websockets import speedups

    assert compat.apply_mask is speedups.apply_mask and framing.apply_mask is compat.apply_mask
    data, key = bytes(range(256)) * 3, b"\x01\x02\x03\x04"
    assert compat.apply_mask(data, key) == python_apply_mask(data, key)


# --- websockets' asyncio client connection -----------------------------------------------------


class Recording(AgentConnection):
    """AgentConnection, recording each hook websockets calls."""

    calls: list[str]

    def data_received(self, data: bytes) -> None:
        self.__dict__.setdefault("calls", []).append("data_received")
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        name = event.opcode.name if isinstance(event, Frame) else type(event).__name__
        self.__dict__.setdefault("calls", []).append(f"process_event:{name}")
        super().process_event(event)


def test_the_client_connection_hooks_and_state_are_where_assumed() -> None:
    async def agent(conn: ServerConnection) -> None:
        await conn.send("one")
        assert await conn.recv() == "go"
        await conn.send("two")
        await conn.wait_closed()

    async def scenario() -> None:
        for name in compat.CLIENT_HOOKS:
            assert callable(getattr(ClientConnection, name))
        async with serve(agent, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            conn = await connect(
                f"ws://127.0.0.1:{port}/", compression=None, create_connection=Recording
            )
            assert isinstance(conn, Recording)
            assert conn.paused is False and conn.close_deadline is None
            assert conn.close_timeout == 10 and conn.response is not None  # websockets' default
            assert conn.loop is asyncio.get_running_loop()
            got: list[Any] = []
            ended = asyncio.Event()
            conn.start_delivery(got.append, ended.set)  # type: ignore[arg-type]
            while not got:
                await asyncio.sleep(0.01)
            assert conn.calls[:2] == ["data_received", "process_event:Response"]  # handshake
            fast = conn.receiver.fast_frames
            assert conn.write_now("go")
            while len(got) < 2:
                await asyncio.sleep(0.01)
            # a later frame: read by data_received, parsed on the fast path, not an event
            assert got == ["one", "two"] and conn.receiver.fast_frames == fast + 1
            assert conn.calls[-1] == "data_received"
            # a frame the fast path leaves to the protocol comes back through process_event
            pong_waiter = await conn.ping(b"p")
            await asyncio.wait_for(pong_waiter, 5)
            assert "process_event:PONG" in conn.calls
            # 1007 as websockets fails it: the close frame goes out, the close timer starts
            compat.client_fail_invalid_data(conn, "bad text")
            assert conn.protocol.close_sent is not None
            assert conn.protocol.close_sent.code == 1007
            assert conn.close_deadline is not None
            await asyncio.wait_for(ended.wait(), 5)

    run(scenario())


# --- uvicorn's sans-I/O WebSocket protocol -----------------------------------------------------


def test_uvicorn_queues_reads_and_assembles_as_assumed() -> None:
    """On a live uvicorn: the state the push path reads is there with the assumed types, what
    uvicorn queued for the app is taken off its queue in order with reading resumed, and a
    fragmented message is assembled in `frames` before `send_receive_event_to_app`."""
    for name in compat.UVICORN_HOOKS:
        assert callable(getattr(compat.UvicornSansIOProtocol, name))
    assert issubclass(PlivoWebSocketProtocol, compat.UvicornSansIOProtocol)
    seen: dict[str, Any] = {}
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        proto = websocket.scope["extensions"][EXTENSION]  # registered by handle_connect
        await websocket.accept()
        seen["state_missing"] = compat.uvicorn_state_missing(proto)
        seen["types"] = {
            "conn": type(proto.conn) is ServerProtocol,
            "queue": isinstance(proto.queue, asyncio.Queue),
            "writable": isinstance(proto.writable, asyncio.Event),
            "flags": all(
                isinstance(getattr(proto, n), bool)
                for n in ("read_paused", "close_sent", "disconnected", "handshake_complete")
            ),
            "frames": proto.frames == [] and proto.curr_msg_data_type in ("text", "bytes"),
            "max_size": compat.uvicorn_max_size(proto) == 4096,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while proto.queue.empty():  # the client's first message, queued by uvicorn
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        seen["paused_before"] = proto.read_paused  # uvicorn paused reading after it
        queued, seen["ended"] = compat.take_uvicorn_queue(proto)
        seen["paused_after"] = proto.read_paused
        if len(queued) < 2:  # the second came in a later read: reading resumed, so it comes
            queued.append(await websocket.receive_bytes())
        seen["queued"] = queued
        assert proto.write_now("written now")
        message = await websocket.receive_text()  # a fragmented message, through ASGI
        seen["fragmented"] = message
        await websocket.close()

    server = LiveServer(app)
    server.server.config.ws_max_size = 4096

    async def client() -> None:
        async with connect(f"ws://{server.base}/ws") as conn:
            await conn.send("a")
            await conn.send(b"b")
            assert await conn.recv() == "written now"
            await conn.send(["frag", "ment"])  # two frames: one message
            await conn.wait_closed()

    with server:
        run(client())
    assert seen["state_missing"] == [] and all(seen["types"].values()), seen["types"]
    assert seen["paused_before"] and not seen["paused_after"]
    assert seen["queued"] == ["a", b"b"] and seen["ended"] is False
    assert seen["fragmented"] == "fragment"


def test_uvicorn_message_takes_the_assembled_frames() -> None:
    class Fake:
        frames = [b"ab", b"cd"]
        close_sent = False
        curr_msg_data_type = "text"

    fake: Any = Fake()
    assert compat.uvicorn_message(fake) == (b"abcd", True) and fake.frames == []
    fake.frames, fake.curr_msg_data_type = [b"x"], "bytes"
    assert compat.uvicorn_message(fake) == (b"x", False)
    fake.frames, fake.close_sent = [b"late"], True
    assert compat.uvicorn_message(fake) is None and fake.frames == []


# --- the named fallback ------------------------------------------------------------------------


def test_a_missing_internal_is_named_and_turns_the_push_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compat, "_AT_EOF", None)
    monkeypatch.setattr(compat, "UVICORN_HOOKS", (*compat.UVICORN_HOOKS, "gone_in_0_55"))
    missing = compat._missing()
    assert "websockets.streams.StreamReader.at_eof" in missing
    assert "uvicorn WebSocketsSansIOProtocol.gone_in_0_55" in missing
    # the parser is not where it is assumed to be: frames go through the protocol, still whole
    server = ServerProtocol(state=State.OPEN)
    assert not compat.between_frames(server)


def test_frames_still_arrive_through_the_protocol_when_the_parser_state_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compat, "_AT_EOF", None)

    async def scenario() -> None:
        owner = Owner()
        rec = Recorder()
        owner.receiver.start(rec, rec.on_end)
        texts = [f"m{i}" for i in range(5)]
        owner.receiver.feed(b"".join(peer_frame(owner, t) for t in texts))
        owner.receiver.feed(peer_frame(owner, "last"))
        assert rec.got == [*texts, "last"]
        assert owner.receiver.fast_frames == 0 and owner.slow  # all through websockets

    run(scenario())


@pytest.mark.parametrize("what", ["import", "uvicorn_state"])
def test_without_the_internals_the_relay_reads_both_sockets_the_public_way(
    monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """With an internal missing at import (`compat.MISSING`), the agent is dialled as a plain
    ClientConnection and Plivo's socket offers no push path; with uvicorn's state missing on a
    connection, that connection offers none. The call relays both ways all the same."""
    from mirror_dev.scripted_agent import AgentCall, ScriptedAgent
    from tests.support.relay import Bridge

    if what == "import":
        monkeypatch.setattr(compat, "MISSING", ("websockets.protocol.Protocol.current_size",))
    else:
        monkeypatch.setattr(compat, "UVICORN_STATE", (*compat.UVICORN_STATE, "gone_in_0_55"))

    async def agent_script(call: AgentCall) -> None:
        await call.wait_event("media", count=5)
        for i in range(5):
            await call.say(frames=1, audio=bytes([i + 1]) * 160)
        await call.closed.wait()

    async def main() -> None:
        async with ScriptedAgent(agent_script) as agent:
            bridge = Bridge(agent.url)
            dialled: list[Any] = []
            dial = agent_socket.connect_agent

            async def recording(*args: Any, **kwargs: Any) -> Any:
                dialled.append(await dial(*args, **kwargs))
                return dialled[-1]

            monkeypatch.setattr("mirror_bridge.contract.connect_agent", recording)
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await peer.media(5)
                    await peer.wait_for(lambda p: len(p.events("playAudio")) == 5)
                    relay = bridge.app.state.relays[0]
                    assert EXTENSION not in relay.plivo.scope["extensions"]
                    await peer.stop()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                await bridge.wait_closed_sessions()
        assert bridge.sessions[0].closes == ["stop"]
        assert [m["event"] for m in agent.calls[0].events()] == ["start", *["media"] * 5, "stop"]
        assert framing.push_path(dialled[0]) is (None if what == "import" else dialled[0])
        if what == "import":
            assert type(dialled[0]) is ClientConnection

    run(main())


def test_connect_agent_dials_an_agent_connection_when_the_internals_are_there() -> None:
    async def agent(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async def scenario() -> None:
        async with serve(agent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            conn = await connect_agent(f"ws://127.0.0.1:{port}/", {}, open_timeout=3)
            assert isinstance(conn, AgentConnection) and framing.push_path(conn) is conn
            await conn.close()

    run(scenario())
