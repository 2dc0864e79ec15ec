"""What the relay and a call's session agree on: the call's context, the session's interface
(`CallSessionLike`, and the optional hot path as declared protocols resolved once per call),
the session factory, the pass-through session, and how the agent is dialled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mirror.models import CallContext as MirrorCallContext
from mirror_bridge.agent_protocol import MirrorMessage, error_reply
from mirror_bridge.agent_socket import connect_agent
from mirror_bridge.outbound import SessionIO
from mirror_bridge.plivo_protocol import MediaFormat, PlivoEvent, StartEvent
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import TenantConfig

NUMBER_HEADER = "mirrorNumber"
"""The `extraHeaders` key the answer XML sets: the tenant's number, digits only."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a session knows about its call when it is created (at Plivo's `start`)."""

    call_id: str
    stream_id: str
    number: str | None
    tenant: TenantConfig
    media_format: MediaFormat
    start: StartEvent

    def mirror_context(self) -> MirrorCallContext:
        """The call-state key (`{tenant_id}#{call_id}`) the functions and the store use."""
        return MirrorCallContext(call_id=self.call_id, tenant_id=self.tenant.tenant_id)


class CallSessionLike(Protocol):
    async def on_start(self, start: StartEvent) -> None:
        """Plivo's start (already forwarded to the agent)."""
        ...

    async def on_plivo_event(self, event: PlivoEvent) -> None:
        """playedStream, clearedAudio, dtmf, media (inbound caller audio): forward what the
        agent should see with `io.send_agent(event.raw)`."""
        ...

    async def on_agent_audio(self, message: dict[str, Any]) -> None:
        """The agent's playAudio, checkpoint, clearAudio or sendDTMF (validated); the session
        relays it with `io.plivo.enqueue(message)` now or later, or drops it."""
        ...

    async def on_mirror_message(self, message: MirrorMessage) -> None:
        """A turn annotation or tool-gate request; the answer goes back with `io.send_agent`.
        Returns at once: scoring and gating run in the session's own tasks."""
        ...

    async def close(self, reason: str) -> None:
        """stop, hang-up, socket close, agent gone; idempotent (the relay calls it once)."""
        ...


# The optional hot path: a session that has these is handed each frame without a coroutine or
# a task per frame. The relay resolves them once per call (`takes_plivo_events`,
# `takes_agent_audio`), never per frame.


@runtime_checkable
class TakesPlivoEvents(Protocol):
    def take_plivo_event(self, event: PlivoEvent) -> Coroutine[Any, Any, None] | None:
        """Does `on_plivo_event` at once and returns None, or returns the coroutine that does
        it (or its rest)."""
        ...


@runtime_checkable
class TakesAgentAudio(Protocol):
    def take_agent_audio(self, message: dict[str, Any]) -> None:
        """Does `on_agent_audio`, which must then never wait."""
        ...


def takes_plivo_events(
    session: CallSessionLike,
) -> Callable[[PlivoEvent], Coroutine[Any, Any, None] | None] | None:
    """The session's `take_plivo_event`, or None when it has none (then `on_plivo_event`)."""
    return session.take_plivo_event if isinstance(session, TakesPlivoEvents) else None


def takes_agent_audio(session: CallSessionLike) -> Callable[[dict[str, Any]], None] | None:
    """The session's `take_agent_audio`, or None when it has none (then `on_agent_audio`)."""
    return session.take_agent_audio if isinstance(session, TakesAgentAudio) else None


SessionFactory = Callable[[CallContext, SessionIO], CallSessionLike]


class PassThroughSession:
    """No supervision: relays both ways at once and says scoring is not configured."""

    def __init__(self, ctx: CallContext, io: SessionIO) -> None:
        self.ctx = ctx
        self.io = io
        self.closed_reason: str | None = None

    async def on_start(self, start: StartEvent) -> None:
        return None

    async def on_plivo_event(self, event: PlivoEvent) -> None:
        await self.io.send_agent(event.raw)

    async def on_agent_audio(self, message: dict[str, Any]) -> None:
        self.io.plivo.enqueue(message)

    async def on_mirror_message(self, message: MirrorMessage) -> None:
        await self.io.send_agent(
            error_reply("not_configured", "scoring not configured", message.model_dump())
        )

    async def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason


def pass_through(ctx: CallContext, io: SessionIO) -> CallSessionLike:
    return PassThroughSession(ctx, io)


class AgentSocket(Protocol):
    """The agent connection as the relay uses it: `send`, `close`, and its messages either by
    push (a `framing.PushSocket`, as `agent_socket.AgentConnection` delivers them) or by
    `async for` (any websockets-like connection)."""

    async def send(self, message: str) -> None: ...

    async def close(self) -> None: ...


AgentConnector = Callable[[str, dict[str, str]], Awaitable[AgentSocket]]


def agent_connector(settings: Settings) -> AgentConnector:
    async def connect(url: str, headers: dict[str, str]) -> AgentSocket:
        return await connect_agent(url, headers, open_timeout=settings.agent_connect_timeout_s)

    return connect
