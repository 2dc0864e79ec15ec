"""The relay's agent side: the handler that checks the agent's frames and hands them on (its
audio to the session, `mirror.*` messages to `mirror_dispatch`, anything else answered with an
error), and the reader for an agent connection that does not push its messages."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import websockets

from mirror_bridge.agent_protocol import (
    MirrorProtocolError,
    error_reply,
    is_mirror,
    parse_mirror_message,
)
from mirror_bridge.call_scope import CallScope
from mirror_bridge.contract import CallSessionLike, takes_agent_audio
from mirror_bridge.framing import FrameHandler, Message
from mirror_bridge.mirror_dispatch import dispatch_mirror
from mirror_bridge.outbound import _Writer
from mirror_bridge.plivo_protocol import (
    OUTBOUND_EVENTS,
    PlivoProtocolError,
    check_outbound,
    decode_frame,
)
from mirror_bridge.transport import loop_inbox

log = logging.getLogger("mirror_bridge.relay")


async def agent_reader(call: CallScope, conn: Any, handler: FrameHandler) -> str:
    """The agent's frames by `async for`, for a connection that does not push them."""
    try:
        async for frame in conn:
            pending = handler(frame)
            if pending is not None:
                await pending
            if call.over():
                break
    except websockets.ConnectionClosed:
        pass
    return "agent_closed"


def reply(call: CallScope, agent: _Writer, message: dict[str, Any]) -> asyncio.Future[Any] | None:
    """An error reply to the agent, in order with its other messages."""
    if agent.offer(message):
        return None
    return call.run(agent.put(message), "agent-reply")


def agent_handler(
    call: CallScope, session: CallSessionLike, agent: _Writer, mirror_dispatch_s: float
) -> FrameHandler:
    """A running call's handler for the agent's frames: decoded and checked at once, the
    session called inline (its hot path when it has one, resolved here, once per call); a
    future when the socket must wait for it (see `framing.FrameHandler`)."""
    stats = call.stats
    ended = call.ended
    run = call.run
    inbox = loop_inbox()
    take = takes_agent_audio(session)

    def on_agent_frame(frame: Message) -> asyncio.Future[Any] | None:
        if inbox.pending:  # a function's answer, any call's: before more audio
            inbox.drain()
        if ended.done():  # the call is over: nothing more goes anywhere
            return None
        if type(frame) is not str:
            stats.skipped["agent_binary"] += 1
            return reply(
                call, agent, error_reply("unsupported_frame", "binary frames are not used")
            )
        try:
            message = decode_frame(frame)
        except PlivoProtocolError as e:
            stats.skipped["agent_malformed"] += 1
            return reply(call, agent, error_reply("malformed_frame", str(e)))
        event = message.get("event")
        stats.agent_frames[str(event)] += 1
        if type(event) is str and event in OUTBOUND_EVENTS:  # the agent's audio: first
            try:
                check_outbound(message)
            except PlivoProtocolError as e:
                stats.skipped["agent_invalid"] += 1
                return reply(call, agent, error_reply("invalid_message", str(e), message))
            if take is None:
                return run(session.on_agent_audio(message), "agent-audio", "agent", event)
            try:
                take(message)
            except Exception as e:
                call.session_failed("agent", event, e)
            return None
        if is_mirror(message):
            try:
                parsed = parse_mirror_message(message)
            except MirrorProtocolError as e:
                stats.skipped["agent_mirror_rejected"] += 1
                return reply(call, agent, e.error.to_wire())
            return run(dispatch_mirror(call, session, parsed, mirror_dispatch_s), "agent-mirror")
        stats.skipped["agent_unsupported"] += 1
        # the event's name is the agent's input: neither logged nor sent back (it may be PII)
        log.info("call %s: skipped agent frame with an unsupported event", call.call_id)
        return reply(
            call,
            agent,
            error_reply(
                "unsupported_frame" if isinstance(event, str) else "malformed_frame",
                "the agent may send playAudio, checkpoint, clearAudio, sendDTMF or "
                "mirror.* events only",
                message,
            ),
        )

    return on_agent_frame
