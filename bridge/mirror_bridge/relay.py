"""The per-call relay between Plivo's stream socket and the team's agent socket.

Four tasks per call, so one slow side never stalls the other: a reader and a writer per socket.
Readers hand every event to the call's session (`CallSessionLike`); writers drain bounded queues
(`Settings.queue_size` frames), so a stalled peer applies back-pressure to its own direction only
and nothing buffers without bound. The relay itself forwards exactly two things: Plivo's `start`
(before `session.on_start`) and `stop` (before `session.close("stop")`) go to the agent as they
came. Everything else goes through the session, which decides what to forward and when (the
intervention engine holds and drops agent audio; `PassThroughSession` forwards it all).

Frames forwarded unchanged go out as the text they came in as (`plivo_protocol.Frame`): no
second `json.dumps` on the hot path. A session may hand a message over without awaiting
(`SessionIO.offer_*`) when the writer's queue has room, which saves a task hop per frame.

The first call freezes the heap the process built before it (`gc.freeze()`: imports, the app,
warmed handlers, ~160k objects): a full collection then walks only what the calls allocate, so
it no longer stalls every call's audio (60 loopback calls: ~90 ms per full collection before,
~2 ms after).

The readers call the session inline, so its view of each direction stays in order (a
`mirror.turn` is registered before the audio that follows it). Session methods therefore return
at once and do slow work (ScoreTurn, GateTool, speech) in tasks of their own; a Mirror message
that still takes longer than `Settings.mirror_dispatch_s` is left to finish in the background
(counted as `agent_mirror_slow`) and the agent's audio reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from mirror.models import CallContext as MirrorCallContext
from mirror_bridge.agent_protocol import (
    MirrorMessage,
    MirrorProtocolError,
    error_reply,
    is_mirror,
    parse_mirror_message,
)
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
    wire_text,
)
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import TenantConfig, TenantDirectory, normalize_number

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


@dataclass(frozen=True, slots=True)
class SessionIO:
    """How a session speaks: both queue a JSON message; neither blocks for long, neither raises
    once a side is gone (the message is dropped and logged). The `offer_*` variants queue it
    without waiting and return False when the queue is full (then await `send_*`); a message
    offered right after ones that were sent keeps its place."""

    send_plivo: Callable[[dict[str, Any]], Awaitable[None]]
    send_agent: Callable[[dict[str, Any]], Awaitable[None]]
    offer_plivo: Callable[[dict[str, Any]], bool] | None = None
    offer_agent: Callable[[dict[str, Any]], bool] | None = None


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


AgentConnector = Callable[[str, dict[str, str]], Awaitable[ClientConnection]]

_heap_frozen = False


def freeze_startup_heap() -> bool:
    """Once per process (True the time it freezes): move every object the garbage collector
    tracks so far into its permanent generation. Start-up state lives as long as the process;
    left in the generations, each full collection walks all of it while the loop, and every
    call's audio, waits."""
    global _heap_frozen
    if _heap_frozen:
        return False
    _heap_frozen = True
    gc.freeze()
    return True


def agent_connector(settings: Settings) -> AgentConnector:
    async def connect(url: str, headers: dict[str, str]) -> ClientConnection:
        return await ws_connect(
            url,
            additional_headers=headers or None,
            open_timeout=settings.agent_connect_timeout_s,
            max_queue=settings.queue_size,
            max_size=2**20,
            compression=None,  # 20 ms frames: deflate costs latency and buys little
        )

    return connect


class _Writer:
    """One socket's outgoing messages, in order, at most `size` of them waiting. Messages go out
    as `wire_text` (a received frame as it came).

    A message for an idle socket is sent at once, in an eager task: when the socket takes it
    without waiting (the usual case: the transport buffers it) nothing is scheduled on the
    loop and the caller goes on. While a send waits (a slow peer: the transport's buffer is
    full), later messages queue behind it and that task sends them in order; when `size` are
    waiting, `offer` says no and `put` waits for room (back-pressure on this direction only)."""

    def __init__(self, name: str, send: Callable[[str], Awaitable[None]], size: int) -> None:
        self.name = name
        self._send = send
        self._size = size
        self._loop = asyncio.get_running_loop()
        self._pending: deque[str] = deque()
        self._room: deque[asyncio.Future[None]] = deque()  # puts waiting for room, in order
        self._admitted = 0  # puts given room that have not queued their message yet
        self._busy = False  # a send is under way (then `_pending` is drained by its task)
        self._task: asyncio.Task[None] | None = None
        self.dead = False
        self.closing = False
        self.sent = 0

    def _full(self) -> bool:
        return bool(self._room) or len(self._pending) + self._admitted >= self._size

    def offer(self, message: dict[str, Any]) -> bool:
        """`put` without waiting: False (nothing queued) when it would have to wait."""
        if self.dead or self.closing:
            log.debug("%s side is gone; dropped %s", self.name, message.get("event"))
            return True
        if self._full():
            return False
        self._push(wire_text(message))
        return True

    async def put(self, message: dict[str, Any]) -> None:
        if self.dead or self.closing:
            log.debug("%s side is gone; dropped %s", self.name, message.get("event"))
            return
        text = wire_text(message)
        if self._full():
            waiter = self._loop.create_future()
            self._room.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # room given: pass it on
                    self._admitted -= 1
                    self._let_in()
                else:
                    with contextlib.suppress(ValueError):
                        self._room.remove(waiter)
                raise
            self._admitted -= 1
            if self.dead:
                return
        self._push(text)

    def _push(self, text: str) -> None:
        self._pending.append(text)
        if not self._busy:
            task = asyncio.Task(self._drain(), loop=self._loop, eager_start=True)
            if not task.done():
                self._task = task

    def _let_in(self) -> None:
        """Room for one more: the first put still waiting gets it."""
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                self._admitted += 1
                waiter.set_result(None)
                return

    async def _drain(self) -> None:
        self._busy = True
        pending = self._pending
        try:
            while pending:
                text = pending.popleft()
                if self._room:
                    self._let_in()
                try:
                    await self._send(text)
                    self.sent += 1
                except Exception as e:  # the socket closed under us; its reader will see it too
                    log.info("%s send failed (%s); dropping further frames", self.name, e)
                    self._give_up()
        finally:
            self._busy = False
            self._task = None

    def _give_up(self) -> None:
        """Drop what is queued and let every waiting put return (dropping its message)."""
        self.dead = True
        self._pending.clear()
        while self._room:
            self._let_in()

    async def finish(self, timeout: float) -> None:
        """Send what is queued (up to `timeout`), then stop. A backlog at the limit means a
        stalled peer: it is dropped, and only the send under way gets the time."""
        self.closing = True
        if len(self._pending) >= self._size:
            self._give_up()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            self._give_up()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class RelayStats:
    plivo_frames: Counter[str] = field(default_factory=Counter)
    agent_frames: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class CallRelay:
    """One call: wait for `start`, resolve the tenant, connect the agent, relay until an end."""

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

    # --- Plivo side --------------------------------------------------------------------------

    async def _next_plivo_event(self) -> PlivoEvent | None:
        """The next usable event, or None when the socket closed. Bad frames are skipped."""
        while True:
            try:
                message = await self.plivo.receive()
            except (WebSocketDisconnect, RuntimeError):
                return None
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                self.stats.skipped["plivo_binary"] += 1
                log.info(
                    "skipped a binary frame from Plivo (%d bytes)", len(message["bytes"] or b"")
                )
                continue
            try:
                event = parse_event(decode_frame(text))
            except PlivoProtocolError as e:
                self.stats.skipped["plivo_malformed"] += 1
                log.warning("skipped a malformed Plivo frame: %s (%.80r)", e, text)
                continue
            self.stats.plivo_frames[event.event] += 1
            if isinstance(event, UnknownEvent):
                self.stats.skipped["plivo_unknown"] += 1
                log.info("skipped unknown Plivo event %r", event.event)
                continue
            return event

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

    async def _plivo_reader(self, session: CallSessionLike, agent: _Writer) -> str:
        while True:
            event = await self._next_plivo_event()
            if event is None:
                return "plivo_closed"
            if isinstance(event, StartEvent):
                self.stats.skipped["plivo_duplicate_start"] += 1
                log.warning("skipped a second start on stream %s", event.stream_id)
                continue
            if isinstance(event, StopEvent):
                await agent.put(event.raw)
                return "stop"
            try:
                await session.on_plivo_event(event)
            except Exception:
                log.exception("session failed on Plivo %s; the call goes on", event.event)

    # --- agent side --------------------------------------------------------------------------

    async def _agent_reader(
        self, conn: ClientConnection, session: CallSessionLike, agent: _Writer
    ) -> str:
        try:
            async for frame in conn:
                await self._on_agent_frame(frame, session, agent)
        except websockets.ConnectionClosed:
            pass
        return "agent_closed"

    async def _on_agent_frame(
        self, frame: str | bytes, session: CallSessionLike, agent: _Writer
    ) -> None:
        if isinstance(frame, bytes):
            self.stats.skipped["agent_binary"] += 1
            await agent.put(error_reply("unsupported_frame", "binary frames are not used"))
            return
        try:
            message = decode_frame(frame)
        except PlivoProtocolError as e:
            self.stats.skipped["agent_malformed"] += 1
            await agent.put(error_reply("malformed_frame", str(e)))
            return
        event = message.get("event")
        self.stats.agent_frames[str(event)] += 1
        try:
            if is_mirror(message):
                try:
                    parsed = parse_mirror_message(message)
                except MirrorProtocolError as e:
                    self.stats.skipped["agent_mirror_rejected"] += 1
                    await agent.put(e.error.to_wire())
                    return
                await self._dispatch_mirror(session, parsed)
            elif event in OUTBOUND_EVENTS:
                try:
                    check_outbound(message)
                except PlivoProtocolError as e:
                    self.stats.skipped["agent_invalid"] += 1
                    await agent.put(error_reply("invalid_message", str(e), message))
                    return
                await session.on_agent_audio(message)
            else:
                self.stats.skipped["agent_unsupported"] += 1
                log.info("skipped agent frame with event %r", event)
                await agent.put(
                    error_reply(
                        "unsupported_frame" if isinstance(event, str) else "malformed_frame",
                        f"the agent may send playAudio, checkpoint, clearAudio, sendDTMF or "
                        f"mirror.* events, not {str(event)[:64]!r}",
                        message,
                    )
                )
        except Exception:
            log.exception("session failed on agent %s; the call goes on", event)

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
        the reader goes on."""
        # eager: a session that takes the message at once is done before this returns
        task = asyncio.Task(
            session.on_mirror_message(message), loop=asyncio.get_running_loop(), eager_start=True
        )
        if not task.done():
            await asyncio.wait({task}, timeout=self.settings.mirror_dispatch_s)
        if task.done():
            task.result()  # a failure is logged by the caller; the call goes on
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
        self, start: StartEvent, number: str | None, tenant: TenantConfig, conn: ClientConnection
    ) -> None:
        size = self.settings.queue_size
        to_plivo = _Writer("plivo", self.plivo.send_text, size)
        to_agent = _Writer("agent", conn.send, size)
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
        readers: list[asyncio.Task[str]] = []
        reason = "error"
        try:
            await to_agent.put(start.raw)
            try:
                await session.on_start(start)
            except Exception:
                log.exception("session failed on start; the call goes on")
            readers = [
                asyncio.create_task(self._plivo_reader(session, to_agent), name="plivo-reader"),
                asyncio.create_task(
                    self._agent_reader(conn, session, to_agent), name="agent-reader"
                ),
            ]
            if self.settings.max_call_s > 0:
                readers.append(asyncio.create_task(self._call_limit(to_agent), name="call-limit"))
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            finished = done.pop()
            reason = finished.result() if not finished.exception() else "error"
        finally:
            for task in readers:
                task.cancel()
            for task in readers:
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
