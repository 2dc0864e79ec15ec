"""The per-call relay between Plivo's stream socket and the team's agent socket.

Each socket's messages are handed to the call's session (`CallSessionLike`) in order, one
direction never waiting for the other: a session call that has to wait holds back only the
socket it came from (its reading pauses: back-pressure on that peer). Both sockets deliver by
push when they can (`framing`: the agent's `agent_socket.AgentConnection`, and Plivo's under
uvicorn with `plivo_socket.PlivoWebSocketProtocol`): each message is handled from the
transport's `data_received`, with no task wake-up per frame; any other socket is read by a task.
Writers send to bounded queues (`Settings.queue_size` frames), so a stalled peer applies
back-pressure to its own direction only and nothing buffers without bound; a message for an
idle socket goes straight to its transport. The relay itself forwards exactly two things:
Plivo's `start` (before `session.on_start`) and `stop` (before `session.close("stop")`) go to
the agent as they came. Everything else goes through the session, which decides what to forward
and when (the intervention engine holds and drops agent audio; `PassThroughSession` forwards it
all).

Frames forwarded unchanged go out as the text they came in as (`plivo_protocol.Frame`): no
second `json.dumps` on the hot path. A session may hand a message over without awaiting
(`SessionIO.offer_*`) when the writer's queue has room, which saves a task hop per frame.

The first call freezes the heap the process built before it (`gc.freeze()`: imports, the app,
warmed handlers, ~160k objects): a full collection then walks only what the calls allocate, so
it no longer stalls every call's audio (60 loopback calls: ~90 ms per full collection before,
~2 ms after).

The session is called inline, so its view of each direction stays in order (a `mirror.turn` is
registered before the audio that follows it). Session methods therefore return
at once and do slow work (ScoreTurn, GateTool, speech) in tasks of their own; a Mirror message
that still takes longer than `Settings.mirror_dispatch_s` is left to finish in the background
(counted as `agent_mirror_slow`) and the agent's audio reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from mirror.models import CallContext as MirrorCallContext
from mirror_bridge.agent_protocol import (
    MirrorMessage,
    MirrorProtocolError,
    error_reply,
    is_mirror,
    parse_mirror_message,
)
from mirror_bridge.agent_socket import connect_agent
from mirror_bridge.framing import FrameHandler, Message, PushSocket
from mirror_bridge.outbound import SessionIO, _Writer
from mirror_bridge.plivo_protocol import (
    OUTBOUND_EVENTS,
    MediaFormat,
    PlivoEvent,
    PlivoProtocolError,
    StartEvent,
    StopEvent,
    UnknownEvent,
    check_outbound,
    decode_frame,
    parse_event,
)
from mirror_bridge.plivo_socket import push_socket
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import TenantConfig, TenantDirectory, normalize_number
from mirror_bridge.transport import GIL_SWITCH_INTERVAL_S, loop_inbox

log = logging.getLogger("mirror_bridge.relay")

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
        relays it with `io.send_plivo(message)` now or later, or drops it."""
        ...

    # Optional, for the hot path (the relay uses them when a session has them):
    # `take_plivo_event(event)` does `on_plivo_event` at once and returns None, or returns the
    # coroutine that does it (or its rest); `take_agent_audio(message)` does `on_agent_audio`,
    # which must then never wait, and returns None. No coroutine or task per frame.

    async def on_mirror_message(self, message: MirrorMessage) -> None:
        """A turn annotation or tool-gate request; the answer goes back with `io.send_agent`.
        Returns at once: scoring and gating run in the session's own tasks."""
        ...

    async def close(self, reason: str) -> None:
        """stop, hang-up, socket close, agent gone; idempotent (the relay calls it once)."""
        ...


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
        await self.io.send_plivo(message)

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

_heap_frozen = False


def freeze_startup_heap() -> bool:
    """Once per process (True the time it freezes): move every object the garbage collector
    tracks so far into its permanent generation. Start-up state lives as long as the process;
    left in the generations, each full collection walks all of it while the loop, and every
    call's audio, waits. The GIL's switch interval is set then too
    (`transport.GIL_SWITCH_INTERVAL_S`)."""
    global _heap_frozen
    if _heap_frozen:
        return False
    _heap_frozen = True
    gc.freeze()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return True


FD_TABLE_SIZE = 4096
"""File descriptors reserved at start-up: two sockets per call and the AWS clients' pools, with
room to spare (at most the soft RLIMIT_NOFILE; the task definition sets 65536)."""


def reserve_fd_table(size: int = FD_TABLE_SIZE) -> int:
    """Grow this process's file-descriptor table to `size` slots now; the size it has (0 when it
    could not be grown). Linux grows the table by doubling as sockets open (past fds 63, 127,
    255, 511, ...) and, in a threaded process, each growth waits for an RCU grace period inside
    whichever socket() or accept() crossed the line: 5-15 ms measured here, on the event loop,
    with every call's audio waiting. The table never shrinks, so this is paid once, before any
    call. No open descriptor is touched."""
    try:
        import fcntl
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        top = size if soft == resource.RLIM_INFINITY else min(size, soft)
        try:
            fcntl.fcntl(top - 1, fcntl.F_GETFD)  # open: the table reaches it already
        except OSError:  # free: a copy of a probe there grows the table to it
            probe = os.open(os.devnull, os.O_RDONLY)
            try:
                os.close(fcntl.fcntl(probe, fcntl.F_DUPFD, top - 1))
            finally:
                os.close(probe)
    except (ImportError, OSError, ValueError) as e:  # not Linux-like, or no room: run as is
        log.warning("file descriptor table not reserved: %s", e)
        return 0
    return top


def agent_connector(settings: Settings) -> AgentConnector:
    async def connect(url: str, headers: dict[str, str]) -> AgentSocket:
        return await connect_agent(url, headers, open_timeout=settings.agent_connect_timeout_s)

    return connect


def _push_socket(conn: Any) -> PushSocket | None:
    return conn if callable(getattr(conn, "start_delivery", None)) else None


@dataclass
class RelayStats:
    plivo_frames: Counter[str] = field(default_factory=Counter)
    agent_frames: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class CallRelay:
    """One call: wait for `start`, resolve the tenant, connect the agent, relay until an end.

    While the call runs, each socket's messages go to a handler (`_plivo_handler`,
    `_agent_handler`) that does the decoding and checks at once and calls the session in an
    eager task: the handler returns None when that finished at once (the usual case), or the
    task, and the socket delivers nothing more until it is done (so each direction stays in
    order, and a slow session holds back only its own socket). A push socket (`framing`: the
    agent's `AgentConnection`, Plivo's under `PlivoWebSocketProtocol`) calls the handler from
    its transport's callbacks; any other socket is read by a task that calls it."""

    def __init__(
        self,
        plivo: WebSocket,
        settings: Settings,
        tenants: TenantDirectory,
        session_factory: SessionFactory = pass_through,
        connect_agent: AgentConnector | None = None,
    ) -> None:
        self.plivo = plivo
        self.settings = settings
        self.tenants = tenants
        self.session_factory = session_factory
        self.connect_agent = connect_agent or agent_connector(settings)
        self.stats = RelayStats()
        self.session: CallSessionLike | None = None
        self.end_reason: str | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._ended: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- Plivo side --------------------------------------------------------------------------

    def _plivo_event(self, frame: Message) -> PlivoEvent | None:
        """The frame's event, or None when it is skipped (logged and counted)."""
        if type(frame) is not str:
            self.stats.skipped["plivo_binary"] += 1
            log.info("skipped a binary frame from Plivo (%d bytes)", len(frame))
            return None
        try:
            event = parse_event(decode_frame(frame))
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

    async def _next_plivo_event(self) -> PlivoEvent | None:
        """The next usable event, or None when the socket closed. Bad frames are skipped."""
        while True:
            frame = await self._receive_plivo()
            if frame is None:
                return None
            event = self._plivo_event(frame)
            if event is not None:
                return event

    async def _receive_plivo(self) -> Message | None:
        """The next frame through ASGI, or None when the socket closed."""
        try:
            message = await self.plivo.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def _resolve_tenant(self, start: StartEvent) -> tuple[str | None, TenantConfig | None]:
        number = start.extra_headers.get(NUMBER_HEADER)
        if number:
            config = await self.tenants.get(number)
            if config is not None:
                return normalize_number(number), config
            log.warning("no tenant config for number %s", normalize_number(number))
        if self.settings.default_agent_url:
            return number, TenantConfig(
                tenant_id=self.settings.default_tenant_id,
                agent_url=self.settings.default_agent_url,
            )
        return number, None

    def _plivo_handler(self, session: CallSessionLike, agent: _Writer) -> FrameHandler:
        ended = self._ended
        assert ended is not None
        inbox = loop_inbox()

        def on_plivo_frame(frame: Message) -> asyncio.Future[Any] | None:
            if inbox.pending:  # a function's answer, any call's: before more audio
                inbox.drain()
            if ended.done():  # the call is over: nothing more goes anywhere
                return None
            event = self._plivo_event(frame)
            if event is None:
                return None
            if isinstance(event, StartEvent):
                self.stats.skipped["plivo_duplicate_start"] += 1
                log.warning("skipped a second start on stream %s", event.stream_id)
                return None
            if isinstance(event, StopEvent):
                return self._run(self._plivo_stop(event, agent))
            if take is None:
                return self._run(session.on_plivo_event(event), "Plivo", event.event)
            try:
                rest = take(event)
            except Exception as e:
                self._session_failed("Plivo", event.event, e)
                return None
            return None if rest is None else self._run(rest, "Plivo", event.event)

        take = getattr(session, "take_plivo_event", None)
        return on_plivo_frame

    async def _plivo_stop(self, event: StopEvent, agent: _Writer) -> None:
        await agent.put(event.raw)
        self._end("stop")

    async def _plivo_reader(self, handler: FrameHandler) -> str:
        """Plivo's frames through ASGI, when the server offers no push path."""
        while not self._over():
            frame = await self._receive_plivo()
            if frame is None:
                return "plivo_closed"
            pending = handler(frame)
            if pending is not None:
                await pending
        return "plivo_closed"

    # --- agent side --------------------------------------------------------------------------

    async def _agent_reader(self, conn: Any, handler: FrameHandler) -> str:
        """The agent's frames by `async for`, for a connection that does not push them."""
        try:
            async for frame in conn:
                pending = handler(frame)
                if pending is not None:
                    await pending
                if self._over():
                    break
        except websockets.ConnectionClosed:
            pass
        return "agent_closed"

    def _agent_handler(self, session: CallSessionLike, agent: _Writer) -> FrameHandler:
        stats = self.stats
        ended = self._ended
        assert ended is not None
        inbox = loop_inbox()

        def on_agent_frame(frame: Message) -> asyncio.Future[Any] | None:
            if inbox.pending:  # a function's answer, any call's: before more audio
                inbox.drain()
            if ended.done():  # the call is over: nothing more goes anywhere
                return None
            if type(frame) is not str:
                stats.skipped["agent_binary"] += 1
                return self._reply(
                    agent, error_reply("unsupported_frame", "binary frames are not used")
                )
            try:
                message = decode_frame(frame)
            except PlivoProtocolError as e:
                stats.skipped["agent_malformed"] += 1
                return self._reply(agent, error_reply("malformed_frame", str(e)))
            event = message.get("event")
            stats.agent_frames[str(event)] += 1
            if type(event) is str and event in OUTBOUND_EVENTS:  # the agent's audio: first
                try:
                    check_outbound(message)
                except PlivoProtocolError as e:
                    stats.skipped["agent_invalid"] += 1
                    return self._reply(agent, error_reply("invalid_message", str(e), message))
                if take is None:
                    return self._run(session.on_agent_audio(message), "agent", event)
                try:
                    take(message)
                except Exception as e:
                    self._session_failed("agent", event, e)
                return None
            if is_mirror(message):
                try:
                    parsed = parse_mirror_message(message)
                except MirrorProtocolError as e:
                    stats.skipped["agent_mirror_rejected"] += 1
                    return self._reply(agent, e.error.to_wire())
                return self._run(self._dispatch_mirror(session, parsed))
            stats.skipped["agent_unsupported"] += 1
            log.info("skipped agent frame with event %r", event)
            return self._reply(
                agent,
                error_reply(
                    "unsupported_frame" if isinstance(event, str) else "malformed_frame",
                    f"the agent may send playAudio, checkpoint, clearAudio, sendDTMF or "
                    f"mirror.* events, not {str(event)[:64]!r}",
                    message,
                ),
            )

        take = getattr(session, "take_agent_audio", None)
        return on_agent_frame

    def _reply(self, agent: _Writer, message: dict[str, Any]) -> asyncio.Future[Any] | None:
        """An error reply to the agent, in order with its other messages."""
        if agent.offer(message):
            return None
        return self._run(agent.put(message))

    async def _call_limit(self, agent: _Writer) -> str:
        """The call-length guard: at `max_call_s` the agent is told, then the call ends like a
        hang-up (the session closes, `CallEnded` once, both sockets close; with nothing after
        `<Stream>` in the answer XML, Plivo then ends the call)."""
        limit = self.settings.max_call_s
        await asyncio.sleep(limit)
        log.warning("call reached MAX_CALL_S (%g s): ending it", limit)
        await agent.put(
            {"event": "mirror.call_ending", "reason": "max_duration", "max_call_s": limit}
        )
        return "max_duration"

    async def _dispatch_mirror(self, session: CallSessionLike, message: MirrorMessage) -> None:
        """Hand a Mirror message to the session in order with the agent's audio (a turn must be
        registered before the audio that follows it), without letting it stall that audio: a
        session takes a message at once and does the slow part (scoring, gating) in its own
        tasks; one that takes longer than `mirror_dispatch_s` finishes in the background and
        the agent's messages read on."""
        # eager: a session that takes the message at once is done before this returns
        task = asyncio.Task(
            session.on_mirror_message(message), loop=asyncio.get_running_loop(), eager_start=True
        )
        if not task.done():
            await asyncio.wait({task}, timeout=self.settings.mirror_dispatch_s)
        if task.done():
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "session failed on agent %s; the call goes on",
                    getattr(message, "event", "?"),
                    exc_info=task.exception(),
                )
            return
        self.stats.skipped["agent_mirror_slow"] += 1
        log.warning(
            "session took over %.0f ms on %s; reading on", 1000 * self.settings.mirror_dispatch_s,
            getattr(message, "event", "?"),
        )  # fmt: skip
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session failed on a Mirror message", exc_info=task.exception())

    # --- the call ----------------------------------------------------------------------------

    def _run(
        self, coro: Coroutine[Any, Any, Any], side: str = "", event: Any = None
    ) -> asyncio.Task[Any] | None:
        """Run a handler's coroutine now (an eager task): None when it finished at once, else
        the task (the socket waits for it; it is cancelled if the call ends first). A session
        call (`side` given) that fails is logged: the call goes on."""
        task = asyncio.Task(coro, loop=self._loop, eager_start=True)
        if task.done():
            if side and not task.cancelled() and (exc := task.exception()) is not None:
                self._session_failed(side, event, exc)
            return None
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        if side:
            task.add_done_callback(
                lambda t: (
                    None
                    if t.cancelled() or (exc := t.exception()) is None
                    else self._session_failed(side, event, exc)
                )
            )
        return task

    @staticmethod
    def _session_failed(side: str, event: Any, exc: BaseException) -> None:
        log.error("session failed on %s %s; the call goes on", side, event, exc_info=exc)

    def _over(self) -> bool:
        ended = self._ended
        return ended is not None and ended.done()

    def _end(self, reason: str) -> None:
        """The first end wins (stop, a socket closing, the call limit, a reader failing)."""
        ended = self._ended
        if ended is not None and not ended.done():
            ended.set_result(reason)

    def _reader_done(self, task: asyncio.Task[str]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s failed", task.get_name(), exc_info=exc)
            self._end("error")
        else:
            self._end(task.result())

    async def run(self) -> None:
        """Runs until the call ends; never raises for a peer's misbehaviour."""
        if freeze_startup_heap():
            log.info("start-up heap frozen (%d objects)", gc.get_freeze_count())
        event = await self._next_plivo_event()
        while event is not None and not isinstance(event, StartEvent):
            self.stats.skipped["plivo_before_start"] += 1
            log.warning("skipped Plivo %s before start", event.event)
            if isinstance(event, StopEvent):
                return await self._close_plivo(1000)
            event = await self._next_plivo_event()
        if event is None:
            self.end_reason = "plivo_closed"
            return
        start = event
        number, tenant = await self._resolve_tenant(start)
        if tenant is None:
            log.error("call %s: no tenant config and no default agent; ending", start.call_id)
            self.end_reason = "no_tenant"
            return await self._close_plivo(1008)
        try:
            conn = await self.connect_agent(tenant.agent_url, tenant.agent_headers)
        except Exception as e:
            log.error("call %s: agent %s unreachable: %s", start.call_id, tenant.agent_url, e)
            self.end_reason = "agent_unreachable"
            return await self._close_plivo(1011)
        await self._relay(start, number, tenant, conn)

    async def _relay(
        self, start: StartEvent, number: str | None, tenant: TenantConfig, conn: AgentSocket
    ) -> None:
        size = self.settings.queue_size
        plivo_push = push_socket(self.plivo)
        agent_push = _push_socket(conn)
        to_plivo = _Writer(
            "plivo", self.plivo.send_text, size, plivo_push.write_now if plivo_push else None
        )
        to_agent = _Writer("agent", conn.send, size, agent_push.write_now if agent_push else None)
        ctx = CallContext(start.call_id, start.stream_id, number, tenant, start.media_format, start)
        io = SessionIO(
            send_plivo=to_plivo.put,
            send_agent=to_agent.put,
            offer_plivo=to_plivo.offer,
            offer_agent=to_agent.offer,
        )
        session = self.session_factory(ctx, io)
        self.session = session
        log.info(
            "call %s stream %s: tenant %s, agent %s",
            ctx.call_id,
            ctx.stream_id,
            tenant.tenant_id,
            tenant.agent_url,
        )
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        readers: list[asyncio.Task[str]] = []
        reason = "error"
        try:
            await to_agent.put(start.raw)
            try:
                await session.on_start(start)
            except Exception:
                log.exception("session failed on start; the call goes on")
            on_plivo = self._plivo_handler(session, to_agent)
            on_agent = self._agent_handler(session, to_agent)
            if plivo_push is not None:
                plivo_push.start_delivery(on_plivo, lambda: self._end("plivo_closed"))
            else:
                readers.append(
                    asyncio.create_task(self._plivo_reader(on_plivo), name="plivo-reader")
                )
            if agent_push is not None:
                agent_push.start_delivery(on_agent, lambda: self._end("agent_closed"))
            else:
                readers.append(
                    asyncio.create_task(self._agent_reader(conn, on_agent), name="agent-reader")
                )
            if self.settings.max_call_s > 0:
                readers.append(asyncio.create_task(self._call_limit(to_agent), name="call-limit"))
            for task in readers:
                task.add_done_callback(self._reader_done)
            reason = await self._ended
        finally:
            self._end(reason)  # handlers deliver nothing more
            for push in (plivo_push, agent_push):
                if push is not None:
                    push.stop_delivery()
            waiting = [*readers, *self._inflight]
            for task in waiting:
                task.cancel()
            for task in waiting:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in list(self._background):  # slow Mirror dispatches: the call is over
                task.cancel()
            self.end_reason = reason
            log.info("call %s ending: %s %s", ctx.call_id, reason, dict(self.stats.skipped))
            try:
                await session.close(reason)
            except Exception:
                log.exception("session close failed")
            drain = self.settings.close_drain_s
            await asyncio.gather(to_agent.finish(drain), to_plivo.finish(drain))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), drain)
            await self._close_plivo(1000)

    async def _close_plivo(self, code: int) -> None:
        if self.plivo.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await self.plivo.close(code)
