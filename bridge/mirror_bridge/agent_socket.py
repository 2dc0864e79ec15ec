"""The bridge's connection to the team's agent: websockets' asyncio client with the relay's hot
path made lean.

`connect_agent` opens it with `websockets.asyncio.client.connect` (the connect timeout, extra
headers, TLS, proxies and redirects, the opening handshake, keepalive pings and the close
handshake are websockets' own), asking for an `AgentConnection`: a `ClientConnection` whose
messages are pushed to the relay from `data_received` (`framing.FrameReceiver`: no receive
queue, no task or future per message; a handler that has to wait pauses reading) and whose text
messages go straight to the transport while it takes them (`write_now`; no lock, no context
manager per send). `send` still waits for room (back-pressure: the transport's high-water mark)
and raises `ConnectionClosed` once the connection is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from mirror_bridge.framing import FrameHandler, FrameReceiver, masked_text_frame

MAX_MESSAGE_BYTES = 2**20
"""The largest message taken from the agent (larger: closed with 1009, as websockets does)."""

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class AgentConnection(ClientConnection):
    """A websockets `ClientConnection` that delivers by push (see the module docstring). Its
    messages are read with `start_delivery`, not `recv` or `async for`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        protocol = self.protocol
        limits = [n for n in (protocol.max_message_size, protocol.max_fragment_size) if n]
        self.receiver = FrameReceiver(
            self, protocol, masked=False, max_size=min(limits) if limits else None
        )

    # --- what the relay uses -------------------------------------------------------------------

    def start_delivery(self, handler: FrameHandler, on_end: Callable[[], None]) -> None:
        self.receiver.start(handler, on_end)

    def stop_delivery(self) -> None:
        self.receiver.stop()

    def write_now(self, text: str) -> bool:
        if self.paused or self.protocol.state is not OPEN or self.transport.is_closing():
            return False
        self.transport.write(masked_text_frame(text))
        return True

    async def recv(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("AgentConnection delivers messages by push: use start_delivery")

    def __aiter__(self) -> NoReturn:  # type: ignore[override]
        raise TypeError("AgentConnection delivers messages by push: use start_delivery")

    # --- asyncio.Protocol and websockets hooks -------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # the opening handshake: websockets' own path
            super().data_received(data)
        else:
            self.receiver.feed(data)

    def slow_data_received(self, data: bytes) -> None:
        super().data_received(data)

    def fail_invalid_data(self, reason: str) -> None:
        self.protocol.fail(1007, reason)
        self.send_data()
        if self.close_deadline is None and self.close_timeout is not None:
            self.close_deadline = self.loop.time() + self.close_timeout

    def process_event(self, event: Any) -> None:
        if self.response is not None and isinstance(event, Frame) and event.opcode in _DATA:
            self.receiver.assembled(event.opcode, bytes(event.data), event.fin)
        else:
            super().process_event(event)  # the handshake's response, pongs

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.receiver.eof()


async def connect_agent(
    url: str, headers: dict[str, str], *, open_timeout: float, max_size: int = MAX_MESSAGE_BYTES
) -> AgentConnection:
    """Open the agent's WebSocket (no compression: 20 ms frames gain little and pay latency)."""
    conn = await ws_connect(
        url,
        additional_headers=headers or None,
        open_timeout=open_timeout,
        max_size=max_size,
        compression=None,
        create_connection=AgentConnection,
    )
    assert isinstance(conn, AgentConnection)
    return conn
