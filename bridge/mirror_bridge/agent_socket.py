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

What it uses of `ClientConnection` beyond its public API (its hooks, its write state) is named in
`compat`; when any of it is missing, `connect_agent` dials a plain `ClientConnection` and the
relay reads it with `async for` (`compat.MISSING`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Frame, Opcode

from mirror_bridge import compat
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
        self.receiver = FrameReceiver(
            self, protocol, masked=False, max_size=compat.message_limit(protocol)
        )

    # --- what the relay uses -------------------------------------------------------------------

    def start_delivery(self, handler: FrameHandler, on_end: Callable[[], None]) -> None:
        self.receiver.start(handler, on_end)

    def stop_delivery(self) -> None:
        self.receiver.stop()

    write_now = compat.client_write_now(masked_text_frame)
    """Write one text message at once; False (nothing written) when the socket cannot take it
    now: then `send`, which waits for room, is the way (`framing.PushSocket.write_now`)."""

    async def recv(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("AgentConnection delivers messages by push: use start_delivery")

    def __aiter__(self) -> NoReturn:
        raise TypeError("AgentConnection delivers messages by push: use start_delivery")

    # --- asyncio.Protocol and websockets hooks (compat.CLIENT_HOOKS) ---------------------------

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # the opening handshake: websockets' own path
            super().data_received(data)
        else:
            self.receiver.feed(data)

    def slow_data_received(self, data: bytes) -> None:
        super().data_received(data)

    def fail_invalid_data(self, reason: str) -> None:
        compat.client_fail_invalid_data(self, reason)

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
) -> ClientConnection:
    """Open the agent's WebSocket (no compression: 20 ms frames gain little and pay latency):
    an `AgentConnection`, or websockets' own `ClientConnection` when the internals it needs are
    missing (`compat.MISSING`: the relay then reads it with `async for`)."""
    conn = await ws_connect(
        url,
        additional_headers=headers or None,
        open_timeout=open_timeout,
        max_size=max_size,
        compression=None,
        create_connection=AgentConnection if compat.push_path_available() else ClientConnection,
    )
    return conn
