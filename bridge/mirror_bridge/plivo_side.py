"""The relay's Plivo side: Plivo's frames through ASGI (before `start`, and for a server that
offers no push path), each frame parsed and counted, and the handler that hands a running
call's events to the session (`plivo_handler`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from mirror_bridge.call_scope import CallScope, RelayStats
from mirror_bridge.contract import CallSessionLike, takes_plivo_events
from mirror_bridge.framing import FrameHandler, Message
from mirror_bridge.outbound import _Writer
from mirror_bridge.plivo_protocol import (
    InvalidStartError,
    PlivoEvent,
    PlivoProtocolError,
    StartEvent,
    StopEvent,
    UnknownEvent,
    decode_frame,
    parse_event,
)
from mirror_bridge.transport import loop_inbox

log = logging.getLogger("mirror_bridge.relay")


class PlivoSide:
    """Plivo's socket as the relay reads it (see the module docstring)."""

    def __init__(self, plivo: WebSocket, stats: RelayStats) -> None:
        self.plivo = plivo
        self.stats = stats
        self.invalid_start: str | None = None
        """Why a `start` was refused (`InvalidStartError`): before the call, the stream ends."""

    def event(self, frame: Message) -> PlivoEvent | None:
        """The frame's event, or None when it is skipped (logged and counted)."""
        if type(frame) is not str:
            self.stats.skipped["plivo_binary"] += 1
            log.info("skipped a binary frame from Plivo (%d bytes)", len(frame))
            return None
        try:
            event = parse_event(decode_frame(frame))
        except InvalidStartError as e:
            self.stats.skipped["plivo_invalid_start"] += 1
            self.invalid_start = str(e)
            log.warning("refused a Plivo start: %s", e)
            return None
        except PlivoProtocolError as e:
            self.stats.skipped["plivo_malformed"] += 1
            log.warning("skipped a malformed Plivo frame: %s (%.80r)", e, frame)
            return None
        self.stats.plivo_frames[event.event] += 1
        if isinstance(event, UnknownEvent):
            self.stats.skipped["plivo_unknown"] += 1
            log.info("skipped unknown Plivo event %r", event.event)
            return None
        return event

    async def next_event(self) -> PlivoEvent | None:
        """The next usable event, or None when the socket closed or a `start` was refused
        (`invalid_start`). Other bad frames are skipped."""
        while True:
            frame = await self.receive()
            if frame is None:
                return None
            event = self.event(frame)
            if event is not None:
                return event
            if self.invalid_start is not None:
                return None

    async def receive(self) -> Message | None:
        """The next frame through ASGI, or None when the socket closed."""
        try:
            message = await self.plivo.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def reader(self, call: CallScope, handler: FrameHandler) -> str:
        """Plivo's frames through ASGI, when the server offers no push path."""
        while not call.over():
            frame = await self.receive()
            if frame is None:
                return "plivo_closed"
            pending = handler(frame)
            if pending is not None:
                await pending
        return "plivo_closed"

    async def close(self, code: int) -> None:
        if self.plivo.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await self.plivo.close(code)

    def handler(self, call: CallScope, session: CallSessionLike, agent: _Writer) -> FrameHandler:
        """A running call's handler for Plivo's frames: decoded and checked at once, the
        session called inline (its hot path when it has one, resolved here, once per call);
        a future when the socket must wait for it (see `framing.FrameHandler`)."""
        ended = call.ended
        stats = self.stats
        parse = self.event
        run = call.run
        inbox = loop_inbox()
        take = takes_plivo_events(session)

        def on_plivo_frame(frame: Message) -> asyncio.Future[Any] | None:
            if inbox.pending:  # a function's answer, any call's: before more audio
                inbox.drain()
            if ended.done():  # the call is over: nothing more goes anywhere
                return None
            event = parse(frame)
            if event is None:
                return None
            if isinstance(event, StartEvent):
                stats.skipped["plivo_duplicate_start"] += 1
                log.warning("skipped a second start on stream %s", event.stream_id)
                return None
            if isinstance(event, StopEvent):
                _stop(call, event, agent)
                return None
            if take is None:
                return run(session.on_plivo_event(event), "plivo-event", "Plivo", event.event)
            try:
                rest = take(event)
            except Exception as e:
                call.session_failed("Plivo", event.event, e)
                return None
            return None if rest is None else run(rest, "plivo-event", "Plivo", event.event)

        return on_plivo_frame


def _stop(call: CallScope, event: StopEvent, agent: _Writer) -> None:
    """Plivo's `stop` is queued for the agent as it came (behind what it has not read yet;
    never waiting for room), then the call ends at once: a stalled agent cannot keep a call
    open after the caller hung up (issue 13, item 2). The agent's queue still gets
    `close_drain_s` to go out."""
    agent.enqueue(event.raw)
    call.end("stop")
