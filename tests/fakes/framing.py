"""A frame receiver's surroundings without a socket: the asyncio transport under it, its owner
(what AgentConnection does around a receiver), the frames a peer sends, and a recording handler.
Shared by the push-delivery tests and the compat pins (mirror_bridge.framing)."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from mirror_bridge.framing import FrameReceiver


class FakeSocketTransport:
    """The asyncio transport under a receiver: records writes and reading paused/resumed."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.written: list[bytes] = []
        self.closing = False

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(data)


class Owner:
    """What AgentConnection does around a receiver, on a fake transport: the protocol's frames
    (control frames, fragments) come back through `slow_data_received`."""

    def __init__(self, server_side: bool = True, max_size: int | None = 2**20) -> None:
        self.transport = FakeSocketTransport()
        # the bridge is the server on Plivo's side (frames come masked) and the client on the
        # agent's (frames come unmasked)
        if server_side:
            self.protocol: Any = ServerProtocol(state=State.OPEN, max_size=max_size)
        else:
            self.protocol = ClientProtocol(
                parse_uri("ws://a/"), state=State.OPEN, max_size=max_size
            )
        self.receiver = FrameReceiver(self, self.protocol, masked=server_side, max_size=max_size)
        self.slow: list[bytes] = []
        self.pongs = 0

    def slow_data_received(self, data: bytes) -> None:
        self.slow.append(data)
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.receiver.assembled(event.opcode, bytes(event.data), event.fin)
            elif event.opcode is Opcode.PONG:
                self.pongs += 1
        for data_out in self.protocol.data_to_send():
            self.transport.write(data_out)

    def fail_invalid_data(self, reason: str) -> None:
        self.protocol.fail(1007, reason)
        for data_out in self.protocol.data_to_send():
            self.transport.write(data_out)


def peer_frame(owner: Owner, text: str | bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A frame as the peer sends it (masked when the peer is a client), by websockets."""
    data = text.encode() if isinstance(text, str) else text
    return Frame(Opcode(opcode), data, fin).serialize(mask=owner.receiver.masked)


class Recorder:
    """A handler: records messages; `hold` makes it return a pending future for each message
    it names (resolved by `release`)."""

    def __init__(self) -> None:
        self.got: list[str | bytes] = []
        self.ended = 0
        self.held: dict[str, asyncio.Future[None]] = {}
        self.hold: set[str] = set()

    def __call__(self, message: str | bytes) -> asyncio.Future[None] | None:
        self.got.append(message)
        if message in self.hold:
            future = asyncio.get_running_loop().create_future()
            self.held[message] = future  # type: ignore[index]
            return future
        return None

    def on_end(self) -> None:
        self.ended += 1

    def release(self, message: str) -> None:
        self.held.pop(message).set_result(None)
