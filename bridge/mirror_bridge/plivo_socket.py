"""uvicorn's WebSocket protocol for Plivo's stream, with a push path for the relay.

uvicorn (`ws=WS_PROTOCOL`: the image's `--ws`, `main.py`, the benchmark) serves the bridge's
WebSockets with `PlivoWebSocketProtocol`, uvicorn's own sans-I/O implementation
(`WebSocketsSansIOProtocol`) plus one ASGI extension, `scope["extensions"][EXTENSION]`: the
protocol itself, a `framing.PushSocket`. The FastAPI route runs as before (the signature check on
the upgrade, accept and close through ASGI); once the relay calls `start_delivery`, each message
goes to its handler from `data_received` (`framing.FrameReceiver`) instead of through uvicorn's
queue, a task wake-up and starlette's `receive` per message, and `write_now` writes a text
message straight to the transport while it takes it (else the relay awaits the ASGI send, which
waits for room). Until then, and for any other route, it is uvicorn's protocol unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import OPEN

from mirror_bridge.framing import FrameHandler, FrameReceiver, text_frame

EXTENSION = "mirror.push"
WS_PROTOCOL = "mirror_bridge.plivo_socket:PlivoWebSocketProtocol"
"""uvicorn's `ws` setting for the bridge (an import string, as its CLI takes it)."""


class PlivoWebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module docstring."""

    receiver: FrameReceiver | None = None

    # --- what the relay uses -------------------------------------------------------------------

    def start_delivery(self, handler: FrameHandler, on_end: Callable[[], None]) -> None:
        receiver = FrameReceiver(self, self.conn, masked=True, max_size=self.config.ws_max_size)
        self.receiver = receiver
        ended = False
        while not self.queue.empty():  # what uvicorn queued before: in order, then the end
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                receiver.received(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                ended = True
        if self.read_paused:  # uvicorn pauses after each queued message
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        if ended or self.disconnected:
            receiver.eof()
        receiver.start(handler, on_end)

    def stop_delivery(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()

    def write_now(self, text: str) -> bool:
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or not self.writable.is_set()
            or self.conn.state is not OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(text_frame(text))
        return True

    # --- uvicorn's hooks -----------------------------------------------------------------------

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    def data_received(self, data: bytes) -> None:
        receiver = self.receiver
        if receiver is None:
            super().data_received(data)
        else:
            receiver.feed(data)

    def slow_data_received(self, data: bytes) -> None:
        super().data_received(data)

    def fail_invalid_data(self, reason: str) -> None:
        self.conn.send_close(1007, reason)
        self.handle_parser_exception()

    def send_receive_event_to_app(self) -> None:
        receiver = self.receiver
        if receiver is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                receiver.received(data.decode())
            except UnicodeDecodeError as e:
                receiver.invalid_utf8(e)
        else:
            receiver.received(bytes(data))

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)
        if self.receiver is not None:
            self.receiver.eof()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.receiver is not None:
            self.receiver.eof()


def push_socket(websocket: Any) -> PlivoWebSocketProtocol | None:
    """The push path of an ASGI WebSocket (e.g. starlette's), when the server offers it."""
    scope = getattr(websocket, "scope", None)
    if not isinstance(scope, dict):
        return None
    extensions = scope.get("extensions") or {}
    return extensions.get(EXTENSION)
