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

What it uses of uvicorn's protocol (its hooks and state) is named in `compat`; when any of it is
missing, no extension is offered and the relay reads through ASGI (`compat.MISSING`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame
from websockets.http11 import Request

from mirror_bridge import compat
from mirror_bridge.framing import FrameHandler, FrameReceiver, PushSocket, push_path, text_frame

EXTENSION = "mirror.push"
WS_PROTOCOL = "mirror_bridge.plivo_socket:PlivoWebSocketProtocol"
"""uvicorn's `ws` setting for the bridge (an import string, as its CLI takes it)."""

log = logging.getLogger("mirror_bridge.plivo_socket")

PLIVO_MAX_MESSAGE_BYTES = 64 * 1024
"""The largest message Plivo's socket may send the bridge (uvicorn's own default is 16 MiB). A
real media frame is a few hundred bytes (20 ms of audio, base64, in JSON), a `start` under 2 KB;
64 KiB leaves a wide margin. A larger message closes the socket with 1009 before it is
buffered: one 16 MiB frame would hold the loop, and every call on the task, for ~90 ms
(issue 13, item 11)."""


class PlivoWebSocketProtocol(compat.UvicornSansIOProtocol):
    """See the module docstring."""

    receiver: FrameReceiver | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        compat.limit_message_size(self.conn, PLIVO_MAX_MESSAGE_BYTES)
        # No permessage-deflate on this socket (uvicorn offers it by default): the push path
        # delivers uncompressed frames only, and a client that negotiated it had its messages
        # dropped once the call started. Plivo does not ask for it; base64 audio gains little
        # from it and would pay a zlib call per frame.
        compat.refuse_extensions(self.conn)

    # --- what the relay uses -------------------------------------------------------------------

    def start_delivery(self, handler: FrameHandler, on_end: Callable[[], None]) -> None:
        receiver = FrameReceiver(
            self, self.conn, masked=True, max_size=compat.message_limit(self.conn)
        )
        self.receiver = receiver
        queued, ended = compat.take_uvicorn_queue(self)  # what uvicorn queued: in order
        for message in queued:
            receiver.received(message)
        if ended:
            receiver.eof()
        receiver.start(handler, on_end)

    def stop_delivery(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()

    write_now = compat.uvicorn_write_now(text_frame)
    """Write one text message at once; False (nothing written) when the socket cannot take it
    now: then the ASGI send is the way (`framing.PushSocket.write_now`)."""

    # --- uvicorn's hooks (compat.UVICORN_HOOKS) ------------------------------------------------

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = compat.uvicorn_scope(self)
        if scope is None or compat.MISSING:
            return
        missing = compat.uvicorn_state_missing(self)
        if missing:  # the public path: the relay reads through ASGI
            log.warning("no push path on this connection: uvicorn has no %s", missing)
            return
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
        compat.uvicorn_fail_invalid_data(self, reason)

    def send_receive_event_to_app(self) -> None:
        receiver = self.receiver
        if receiver is None:
            super().send_receive_event_to_app()
            return
        message = compat.uvicorn_message(self)
        if message is None:
            return
        data, is_text = message
        if is_text:
            try:
                receiver.received(data.decode())
            except UnicodeDecodeError as e:
                receiver.invalid_utf8(e)
        else:
            receiver.received(data)

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)
        if self.receiver is not None:
            self.receiver.eof()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.receiver is not None:
            self.receiver.eof()


def push_socket(websocket: Any) -> PushSocket | None:
    """The push path of an ASGI WebSocket (e.g. starlette's), when the server offers it;
    resolved once per connection."""
    scope = getattr(websocket, "scope", None)
    if not isinstance(scope, dict):
        return None
    extensions = scope.get("extensions") or {}
    return push_path(extensions.get(EXTENSION))
