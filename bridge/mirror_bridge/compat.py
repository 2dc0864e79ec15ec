"""Every third-party internal the relay's push path relies on, in one place.

The push path (`framing.FrameReceiver`, `plivo_socket.PlivoWebSocketProtocol`,
`agent_socket.AgentConnection`) reads and hooks into parts of websockets and uvicorn that are not
their public API. Each such part is named here, and `tests/integration/test_compat.py` asserts that
exactly these exist and behave as assumed in the pinned versions (`PINNED`: bridge/requirements.txt
and requirements-dev.txt), so an upgrade fails that one test first.

- websockets' sans-I/O `Protocol` (`SansIOState`): its parser's state (`between_frames`: the
  `parse` generator suspended in `StreamReader.at_eof` with nothing buffered), `current_size`
  (None unless a fragmented message is open; read inline, per frame, by `FrameReceiver.feed`),
  `reader.eof`, and the message size limits (`message_limit`). `apply_mask` is its C speedup.
- websockets' asyncio `ClientConnection`: the hooks `AgentConnection` overrides
  (`CLIENT_HOOKS`) and the state its writes and failures use (`client_write_now`,
  `client_fail_invalid_data`).
- uvicorn's `WebSocketsSansIOProtocol` (`UvicornSansIOProtocol`, the base of
  `PlivoWebSocketProtocol`): the hooks it overrides (`UVICORN_HOOKS`) and the state it reads
  (`uvicorn_write_now`, `take_uvicorn_queue`, `uvicorn_message`, `uvicorn_scope`, ...).

**The named fallback.** At import the parts are looked up once (`MISSING`, empty when all are
there). When any is missing (an upgrade changed them), the push path is off: `connect_agent`
dials a plain `ClientConnection` and `PlivoWebSocketProtocol` offers no push extension, so the
relay reads both sockets the public way (`async for`, ASGI `receive`) and sends with their
awaited sends: slower, correct, and logged once. Per frame, `between_frames` saying False (the
parser is not where it is assumed to be) sends that connection's frames through the protocol.

The per-frame reads stay inline in the classes that make them (an accessor would cost a call per
frame on the hot path); `client_write_now` and `uvicorn_write_now` make the socket's `write_now`
itself, so the state a write checks is named here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import uvicorn
import websockets.version
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection
from websockets.protocol import OPEN
from websockets.protocol import Protocol as SansIOProtocol
from websockets.server import ServerProtocol

try:
    from websockets.speedups import apply_mask as apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback websockets ships
    from websockets.utils import apply_mask as apply_mask

log = logging.getLogger("mirror_bridge.compat")

PINNED = {"websockets": "17.4", "uvicorn": "0.54.0"}
"""The versions these internals were read from (and the contract test checks)."""

Message = str | bytes


# --- websockets' sans-I/O protocol -------------------------------------------------------------


class _Reader(Protocol):
    buffer: bytearray
    eof: bool


class SansIOState(Protocol):
    """The parts of websockets' sans-I/O `Protocol` the push path reads (besides its public
    `state`, `receive_data`, `events_received`, `data_to_send`, `fail`, `send_close`)."""

    state: Any
    reader: _Reader
    parser: Any
    current_size: int | None
    max_message_size: int | None
    max_fragment_size: int | None


def _at_eof_code() -> Any:
    from websockets.streams import StreamReader

    return StreamReader.at_eof.__code__


try:
    _AT_EOF: Any = _at_eof_code()
except (ImportError, AttributeError):  # checked below: MISSING names it
    _AT_EOF = None


def between_frames(protocol: SansIOProtocol) -> bool:
    """The protocol is open and its parser waits for the first byte of a frame (websockets'
    `parse` suspended in `StreamReader.at_eof` with nothing buffered). If websockets changes
    how it parses, this says False and every frame goes through the protocol: slower, correct."""
    if protocol.state is not OPEN or protocol.reader.buffer:
        return False
    gen: Any = protocol.parser
    while (inner := getattr(gen, "gi_yieldfrom", None)) is not None:
        gen = inner
    return _AT_EOF is not None and getattr(gen, "gi_code", None) is _AT_EOF


def protocol_at_eof(protocol: SansIOProtocol) -> bool:
    """The protocol has seen the end of the stream (it takes no more data)."""
    return bool(protocol.reader.eof)


def message_limit(protocol: SansIOProtocol) -> int | None:
    """The largest message (and fragment) the protocol takes: the smaller of its limits."""
    limits = [n for n in (protocol.max_message_size, protocol.max_fragment_size) if n]
    return min(limits) if limits else None


def limit_message_size(protocol: SansIOProtocol, limit: int) -> None:
    """Lower the largest message the protocol takes to `limit` (never raise it): websockets
    reads `max_message_size` as it parses each frame, so setting it before the first frame
    is as if it had been built with it."""
    current = protocol.max_message_size
    protocol.max_message_size = limit if current is None else min(current, limit)


def refuse_extensions(protocol: ServerProtocol) -> None:
    """Negotiate no extension (permessage-deflate) on this server connection: websockets reads
    `available_extensions` when it answers the handshake, so clearing it before then is as if
    the server offered none."""
    protocol.available_extensions = []


# --- websockets' asyncio client connection -----------------------------------------------------

CLIENT_HOOKS = ("data_received", "process_event", "connection_lost", "send_data")
"""`ClientConnection` methods `AgentConnection` overrides or calls: `data_received` (each read),
`process_event` (each event the protocol parsed), `connection_lost`, `send_data` (flush what the
protocol has to send)."""


def client_write_now(encode: Callable[[str], bytes]) -> Callable[[Any, str], bool]:
    """`AgentConnection.write_now`: one text message, `encode`d, straight to the transport while
    it takes it; False (nothing written) while websockets has paused writing (`paused`: the
    transport's buffer is over its high-water mark) or the connection is not open."""

    def write_now(conn: Any, text: str) -> bool:
        if conn.paused or conn.protocol.state is not OPEN or conn.transport.is_closing():
            return False
        conn.transport.write(encode(text))
        return True

    return write_now


def client_fail_invalid_data(conn: ClientConnection, reason: str) -> None:
    """Close with 1007 as websockets does for a text message that is not UTF-8: the close frame
    is sent and the close timeout starts (`close_deadline`)."""
    conn.protocol.fail(1007, reason)
    conn.send_data()
    if conn.close_deadline is None and conn.close_timeout is not None:
        conn.close_deadline = conn.loop.time() + conn.close_timeout


# --- uvicorn's sans-I/O WebSocket protocol -----------------------------------------------------

UvicornSansIOProtocol = WebSocketsSansIOProtocol
"""uvicorn's sans-I/O WebSocket protocol (an internal module of uvicorn's), subclassed by
`plivo_socket.PlivoWebSocketProtocol`."""

UVICORN_HOOKS = (
    "handle_connect",
    "data_received",
    "send_receive_event_to_app",
    "handle_close",
    "connection_lost",
    "handle_parser_exception",
)
"""`WebSocketsSansIOProtocol` methods `PlivoWebSocketProtocol` overrides or calls."""

UVICORN_STATE = (
    "conn",
    "config",
    "queue",
    "read_paused",
    "transport",
    "close_sent",
    "disconnected",
    "handshake_complete",
    "writable",
    "frames",
    "curr_msg_data_type",
)
"""Its instance state the push path reads (checked once per connection: `uvicorn_state_missing`;
`scope` is set by its `handle_connect`)."""


def uvicorn_state_missing(protocol: UvicornSansIOProtocol) -> list[str]:
    """The `UVICORN_STATE` this connection does not have (empty: the push path may be used)."""
    return [name for name in UVICORN_STATE if not hasattr(protocol, name)]


def uvicorn_write_now(encode: Callable[[str], bytes]) -> Callable[[Any, str], bool]:
    """`PlivoWebSocketProtocol.write_now`: one text message, `encode`d, straight to the
    transport while uvicorn would send it at once; False (nothing written) when it is closing,
    gone, not yet accepted, paused by back-pressure (`writable`) or the protocol is not open."""

    def write_now(protocol: Any, text: str) -> bool:
        if (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.handshake_complete
            or not protocol.writable.is_set()
            or protocol.conn.state is not OPEN
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(encode(text))
        return True

    return write_now


def uvicorn_scope(protocol: UvicornSansIOProtocol) -> dict[str, Any] | None:
    """The connection's ASGI scope (set by `handle_connect`), or None."""
    scope = getattr(protocol, "scope", None)
    return scope if isinstance(scope, dict) else None


def uvicorn_max_size(protocol: UvicornSansIOProtocol) -> int | None:
    """The largest message it takes (uvicorn's `ws_max_size`)."""
    return protocol.config.ws_max_size


def take_uvicorn_queue(protocol: UvicornSansIOProtocol) -> tuple[list[Message], bool]:
    """What uvicorn queued for the app so far (messages in order, and whether the disconnect
    came), taken off its queue; reading resumes (uvicorn pauses after each queued message)."""
    messages: list[Message] = []
    ended = False
    queue = protocol.queue
    while not queue.empty():
        message = queue.get_nowait()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            messages.append(text if text is not None else message.get("bytes") or b"")
        elif message["type"] == "websocket.disconnect":
            ended = True
    if protocol.read_paused:
        protocol.read_paused = False
        if not protocol.transport.is_closing():
            protocol.transport.resume_reading()
    return messages, ended or protocol.disconnected


def uvicorn_message(protocol: UvicornSansIOProtocol) -> tuple[bytes, bool] | None:
    """The data message uvicorn just assembled (its payload, and whether it is text), taken
    from its frame buffer; None once it sent a close (the message is dropped, as uvicorn does)."""
    frames = protocol.frames
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    protocol.frames = []
    if protocol.close_sent:
        return None
    return bytes(data), protocol.curr_msg_data_type == "text"


def uvicorn_fail_invalid_data(protocol: UvicornSansIOProtocol, reason: str) -> None:
    """Close with 1007 as uvicorn does when its parser fails."""
    protocol.conn.send_close(1007, reason)
    protocol.handle_parser_exception()


# --- the named fallback ------------------------------------------------------------------------


def _missing() -> tuple[str, ...]:
    missing: list[str] = []
    if _AT_EOF is None:
        missing.append("websockets.streams.StreamReader.at_eof")
    probe = ServerProtocol()
    for name in ("reader", "parser", "current_size", "max_message_size", "max_fragment_size"):
        if not hasattr(probe, name):
            missing.append(f"websockets.protocol.Protocol.{name}")
    if not hasattr(getattr(probe, "reader", None), "eof"):
        missing.append("websockets.streams.StreamReader.eof")
    missing += [
        f"websockets.asyncio.client.ClientConnection.{name}"
        for name in CLIENT_HOOKS
        if not callable(getattr(ClientConnection, name, None))
    ]
    missing += [
        f"uvicorn WebSocketsSansIOProtocol.{name}"
        for name in UVICORN_HOOKS
        if not callable(getattr(UvicornSansIOProtocol, name, None))
    ]
    return tuple(missing)


MISSING: tuple[str, ...] = _missing()
"""The internals not found at import (empty: the push path is on)."""

if MISSING:
    log.warning(
        "push path off (websockets %s, uvicorn %s; read from %s): missing %s",
        websockets.version.version, uvicorn.__version__, PINNED, ", ".join(MISSING),
    )  # fmt: skip


def push_path_available() -> bool:
    """The internals are all there: the sockets may deliver by push (see the module docstring)."""
    return not MISSING
