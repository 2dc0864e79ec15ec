"""Push delivery of WebSocket messages, for the relay's two sockets.

The relay's sockets (the agent's, `agent_socket.AgentConnection`, and Plivo's,
`plivo_socket.PlivoWebSocketProtocol` under uvicorn) hand each message to a handler from the
transport's `data_received`, as it is parsed: no task wake-up, no queue, no future per message
(a 20 ms audio frame each way per call is the bridge's hot path). Each socket keeps websockets'
sans-I/O protocol for everything but the hot path: the handshake, control frames (ping, pong,
close), fragmented messages and every error go through it as before.

`FrameReceiver` is that delivery, shared by both sockets:

- **Fast path.** While the protocol is open and its parser sits between frames, complete,
  unfragmented text or binary frames with no reserved bits, masked as the side requires and no
  larger than `max_size`, are parsed here (the same checks websockets makes) and delivered.
  Any other complete frame is fed to the sans-I/O protocol alone, so its parser stays between
  frames; a frame it must refuse (a bad opcode, wrong masking, too large) is fed with everything
  after it and the protocol fails the connection as it always did. A text frame that is not
  UTF-8 fails it with 1007, as websockets does.
- **Order and back-pressure.** A handler returns None when it is done, or a future when it had
  to wait (its session call did not finish at once). Then delivery stops, reading pauses (TCP
  back-pressure on that peer), and the rest, in order, waits until the future is done.
- **Before and after.** Messages that arrive before `start` wait (reading paused after the first
  one); after `stop` data messages are dropped and everything goes through the protocol (the
  close handshake still completes). `on_end` runs once when the connection is gone, after every
  message received before that was delivered.

What it reads of websockets' sans-I/O protocol beyond its public API (the parser's state, the
open fragmented message) is named in `compat`, with the fallback when it is missing. The relay
resolves a socket's push path once per connection (`push_path`, the `PushSocket` protocol).

`frame(payload, opcode, masked)` serialises one unfragmented frame, as websockets does (masking
keys cut from `os.urandom` in blocks); `text_frame` (to Plivo) and `masked_text_frame` (to the
agent) are it for text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from websockets.protocol import OPEN
from websockets.protocol import Protocol as SansIOProtocol

from mirror_bridge.compat import apply_mask, protocol_at_eof
from mirror_bridge.compat import between_frames as between_frames  # as it was imported here

Message = str | bytes
FrameHandler = Callable[[Message], "asyncio.Future[Any] | None"]
"""Takes one message; returns None when done, or a future to wait for before the next one."""

TEXT = 0x1
BINARY = 0x2
_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_VALID_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))

log = logging.getLogger("mirror_bridge.framing")


@runtime_checkable
class PushSocket(Protocol):
    """What the relay uses on a socket that delivers by push (`push_path`)."""

    def start_delivery(self, handler: FrameHandler, on_end: Callable[[], None]) -> None: ...

    def stop_delivery(self) -> None: ...

    def write_now(self, text: str) -> bool:
        """Write one text message at once; False (nothing written) when the socket cannot take
        it now (paused by back-pressure, or closing): then its awaited send is the way."""
        ...


class FrameOwner(Protocol):
    """The asyncio protocol a `FrameReceiver` works for."""

    transport: Any

    def slow_data_received(self, data: bytes) -> None:
        """Feed `data` to the sans-I/O protocol and process what it yields, as the socket's
        own `data_received` does; data messages come back through `FrameReceiver.assembled`."""
        ...

    def fail_invalid_data(self, reason: str) -> None:
        """A text message that is not UTF-8: close with 1007, as the socket's own path does."""
        ...


_keys = b""
_key_at = 0


def _mask_key() -> bytes:
    """Four fresh random bytes, cut from `os.urandom` in blocks (one system call per 1,024
    keys, not one per frame; the same source websockets uses, via `secrets`)."""
    global _keys, _key_at
    at = _key_at
    if at >= len(_keys):
        _keys = os.urandom(4096)
        at = 0
    _key_at = at + 4
    return _keys[at : at + 4]


def frame(payload: bytes, opcode: int = TEXT, masked: bool = False) -> bytes:
    """One final frame, no reserved bits; masked with a fresh random key when `masked`."""
    n = len(payload)
    head1 = 0x80 | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((head1, bit | n))
    elif n < 65536:
        head = _H16.pack(head1, bit | 126, n)
    else:
        head = _H64.pack(head1, bit | 127, n)
    if masked:
        key = _mask_key()
        return head + key + apply_mask(payload, key)
    return head + payload


def text_frame(text: str) -> bytes:
    """The server's text frame, per message to Plivo."""
    return frame(text.encode())


def masked_text_frame(text: str) -> bytes:
    """The client's text frame, per message to the agent."""
    return frame(text.encode(), masked=True)


def push_path(conn: object) -> PushSocket | None:
    """The connection's push path, resolved once per connection: the connection itself when it
    delivers by push (a `PushSocket`: `agent_socket.AgentConnection`, Plivo's
    `plivo_socket.PlivoWebSocketProtocol`), else None: then the relay reads it the public way
    (`async for`, ASGI `receive`) and sends with its awaited send. Never per frame."""
    return conn if isinstance(conn, PushSocket) else None


class FrameReceiver:
    """See the module docstring. `masked`: the peer masks its frames (it is a client)."""

    def __init__(
        self,
        owner: FrameOwner,
        protocol: SansIOProtocol,
        *,
        masked: bool,
        max_size: int | None,
    ) -> None:
        self.owner = owner
        self.protocol = protocol
        self.masked = masked
        self.max_size = max_size
        self.handler: FrameHandler | None = None
        self.on_end: Callable[[], None] | None = None
        self.fast = False
        """Frames are parsed here (the protocol sits between frames)."""
        self.slow_only = False
        """Everything goes through the protocol from now on (closing, failed or stopped)."""
        self.delivered = 0
        self.fast_frames = 0
        self._rx = b""
        self._backlog: deque[Message] = deque()
        self._waiting: asyncio.Future[Any] | None = None
        self._paused = False
        self._eof = False
        self._failed = False
        self._ended = False
        self._stopped = False
        self._fragments: list[bytes] = []
        self._fragment_text = False

    # --- the owner's side ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """From the owner's `data_received`."""
        if self.fast and not self._rx and self._waiting is None and not self._backlog:
            # the usual case, first: `data` is exactly one whole text frame under 64 KiB
            n = len(data)
            handler = self.handler
            if n > 4 and data[0] == _FIN_TEXT and handler is not None:
                head2 = data[1]
                length = head2 & 0x7F
                start = 2
                if length == 126:
                    length = (data[2] << 8) | data[3]
                    start = 4
                masked = head2 & 0x80
                if masked:
                    start += 4
                protocol = self.protocol
                if (
                    start + length == n
                    and head2 & 0x7F != 127  # a 64-bit length: the general path's
                    and (self.max_size is None or length <= self.max_size)
                    and bool(masked) == self.masked
                    and protocol.state is OPEN
                    and protocol.current_size is None  # compat.SansIOState: no fragments open
                ):
                    payload = data[start:]
                    if masked:
                        payload = apply_mask(payload, data[start - 4 : start])
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        pass  # the general path fails the connection
                    else:
                        self.fast_frames += 1
                        self.delivered += 1
                        try:
                            pending = handler(text)
                        except Exception:
                            log.exception("message handler failed")
                            return
                        if pending is not None and not pending.done():
                            self._waiting = pending
                            pending.add_done_callback(self._resume)
                            self._set_paused(True)
                        return
        if self.slow_only:
            self._to_protocol(data)
        else:
            self._rx = self._rx + data if self._rx else data
        self._pump()

    def assembled(self, opcode: int, data: bytes, fin: bool) -> None:
        """A data frame the protocol parsed (TEXT, BINARY or CONT): assembled into messages."""
        if opcode == TEXT or opcode == BINARY:
            self._fragments = [data]
            self._fragment_text = opcode == TEXT
        else:
            self._fragments.append(data)
        if not fin:
            return
        payload = self._fragments[0] if len(self._fragments) == 1 else b"".join(self._fragments)
        self._fragments = []
        if self._fragment_text:
            try:
                text = payload.decode()
            except UnicodeDecodeError as e:
                self.invalid_utf8(e)
                return
            self.received(text)
        else:
            self.received(bytes(payload))

    def received(self, message: Message) -> None:
        """A whole message the owner's own path assembled: delivered in turn."""
        if not self._stopped:
            self._backlog.append(message)

    def eof(self) -> None:
        """The connection is gone, or the peer closed it (after the protocol saw the end):
        what was received before is still delivered, then `on_end` runs, once."""
        self._eof = True
        self._pump()

    # --- the relay's side ----------------------------------------------------------------------

    def start(self, handler: FrameHandler, on_end: Callable[[], None]) -> None:
        self.handler = handler
        self.on_end = on_end
        self._pump()

    def stop(self) -> None:
        """No more deliveries; the protocol gets everything (the close handshake goes on)."""
        self._stopped = True
        self.handler = None
        self.on_end = None
        self._backlog.clear()
        self._waiting = None
        rest, self._rx = self._rx, b""
        self.slow_only = True
        self.fast = False
        if rest:
            self._to_protocol(rest)
        self._set_paused(False)

    # --- delivery ------------------------------------------------------------------------------

    def _pump(self) -> None:
        while self._waiting is None:
            if self._backlog:
                if self.handler is None:
                    break  # not started, or stopped
                self._deliver(self._backlog.popleft())
            elif not self._rx or not self._next_frame():
                break
        if self._stopped:
            return
        # waiting for a handler, or for `start` with a message in hand: read no further
        self._set_paused(self._waiting is not None or bool(self._backlog))
        if (
            (self._eof or self._failed)
            and not self._ended
            and self._waiting is None
            and self.handler is not None
        ):
            if not self._backlog:
                self._ended = True
                self._rx = b""
                on_end = self.on_end
                if on_end is not None:
                    on_end()

    def _deliver(self, message: Message) -> None:
        handler = self.handler
        assert handler is not None
        self.delivered += 1
        try:
            pending = handler(message)
        except Exception:  # a handler catches its own failures; this is the safety net
            log.exception("message handler failed")
            return
        if pending is not None and not pending.done():
            self._waiting = pending
            pending.add_done_callback(self._resume)

    def _resume(self, future: asyncio.Future[Any]) -> None:
        if self._waiting is future:
            self._waiting = None
            self._pump()

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        transport = self.owner.transport
        if transport is None or transport.is_closing():
            return
        self._paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _to_protocol(self, data: bytes) -> None:
        if not self._eof and not protocol_at_eof(self.protocol):  # after the end: nothing
            self.owner.slow_data_received(data)

    def _to_protocol_for_good(self) -> None:
        self.fast = False
        self.slow_only = True
        rest, self._rx = self._rx, b""
        if rest:
            self._to_protocol(rest)

    def _next_frame(self) -> bool:
        """Deliver or hand over the frame at the front of `_rx`; False when it is incomplete
        (wait for more data) or when nothing more can be read from `_rx`."""
        data = self._rx
        if not self.fast:
            if self._eof or not between_frames(self.protocol):
                self._rx = b""
                self._to_protocol(data)
                return True
            self.fast = True
        n = len(data)
        if n < 2:
            return False
        head1 = data[0]
        head2 = data[1]
        length = head2 & 0x7F
        start = 2
        if length == 126:
            if n < 4:
                return False
            length = (data[2] << 8) | data[3]
            start = 4
        elif length == 127:
            if n < 10:
                return False
            length = int.from_bytes(data[2:10])
            start = 10
        masked = head2 & 0x80
        if masked:
            start += 4
        end = start + length
        max_size = self.max_size
        if (
            (bool(masked) != self.masked)
            or (max_size is not None and length > max_size)
            or (head1 & 0x70)  # reserved bits: no extension is negotiated
            or (head1 & 0x0F) not in _VALID_OPCODES
            or (head1 & 0x08 and (length > 125 or not head1 & 0x80))  # a bad control frame
        ):
            self._to_protocol_for_good()  # the protocol refuses it, as it always did
            return False
        if end > n:
            return False  # the rest of the frame is still to come
        self._rx = data[end:] if end < n else b""
        if head1 == _FIN_TEXT or head1 == _FIN_BINARY:
            if self._eof:
                pass  # received before the end: delivered (the protocol is closed by now)
            elif self.protocol.state is not OPEN or self.protocol.current_size is not None:
                self._rx = data  # closing, or a fragmented message is open: the protocol's
                self._to_protocol_for_good()
                return False
            payload = data[start:end]
            if masked:
                payload = apply_mask(payload, data[start - 4 : start])
            self.fast_frames += 1
            if head1 == _FIN_TEXT:
                try:
                    message: Message = payload.decode()
                except UnicodeDecodeError as e:
                    self.invalid_utf8(e)
                    return False
            else:
                message = payload
            if self._stopped:
                return True
            if self.handler is None:
                self._backlog.append(message)
            else:
                self._deliver(message)
            return True
        # a control frame or a fragment: the protocol parses it and stays between frames
        if self._eof:
            return True  # nothing more to parse it with
        self.owner.slow_data_received(data[:end])
        if self.protocol.state is not OPEN:
            self._to_protocol_for_good()
        return True

    def invalid_utf8(self, e: UnicodeDecodeError) -> None:
        """As websockets: close with 1007 (invalid data); nothing after it is delivered, and
        the end comes once what came before it is delivered."""
        self._rx = b""
        self.slow_only = True
        self.fast = False
        self._failed = True
        if not self._eof and not protocol_at_eof(self.protocol):
            self.owner.fail_invalid_data(f"{e.reason} at position {e.start}")
