"""The per-call relay between Plivo's stream socket and the team's agent socket.

Each socket's messages are handed to the call's session (`CallSessionLike`) in order, one
direction never waiting for the other: a session call that has to wait holds back only the
socket it came from (its reading pauses: back-pressure on that peer). Both sockets deliver by
push when they can (`framing`: the agent's `agent_socket.AgentConnection`, and Plivo's under
uvicorn with `plivo_socket.PlivoWebSocketProtocol`; resolved once per connection,
`framing.push_path`): each message is handled from the transport's `data_received`, with no task
wake-up per frame; any other socket is read by a task. Writers send to bounded queues
(`Settings.queue_size` frames, `outbound._Writer`), so a stalled peer applies back-pressure to
its own direction only and nothing buffers without bound; a message for an idle socket goes
straight to its transport. The relay itself forwards exactly two things: Plivo's `start`
(before `session.on_start`) and `stop` (before `session.close("stop")`) go to the agent as they
came. Everything else goes through the session, which decides what to forward and when (the
intervention engine holds and drops agent audio; `PassThroughSession` forwards it all).

Frames forwarded unchanged go out as the text they came in as (`plivo_protocol.Frame`): no
second `json.dumps` on the hot path. A session may hand a message over without awaiting
(`SessionIO.offer_*`) when the writer's queue has room, which saves a task hop per frame.

The session is called inline, so its view of each direction stays in order (a `mirror.turn` is
registered before the audio that follows it). Session methods therefore return at once and do
slow work (ScoreTurn, GateTool, speech) in tasks of their own (`mirror_dispatch`).

The relay by concern: `CallRelay` here is the call's life (start, tenant, agent, the relay,
the end); `plivo_side` and `agent_side` handle each socket's frames; `mirror_dispatch` the
agent's Mirror messages; `call_scope` the running call's end, tasks and call-length guard;
`contract` what the relay and a session agree on. Process tuning (the frozen start-up heap,
the descriptor table, the GIL's switch interval) is the app's start-up (`tuning`, `app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket

from mirror_bridge.agent_side import agent_handler, agent_reader
from mirror_bridge.call_scope import CallScope, RelayStats
from mirror_bridge.contract import (
    NUMBER_HEADER,
    AgentConnector,
    AgentSocket,
    CallContext,
    CallSessionLike,
    PassThroughSession,
    SessionFactory,
    agent_connector,
    pass_through,
)
from mirror_bridge.framing import push_path
from mirror_bridge.outbound import SessionIO, _Writer
from mirror_bridge.plivo_protocol import StartEvent, StopEvent
from mirror_bridge.plivo_side import PlivoSide
from mirror_bridge.plivo_socket import push_socket
from mirror_bridge.settings import Settings
from mirror_bridge.signature import StreamGrant
from mirror_bridge.tenants import TenantConfig, TenantDirectory, normalize_number

__all__ = [  # the relay's names, as other modules and the tests import them from here
    "NUMBER_HEADER",
    "AgentConnector",
    "AgentSocket",
    "CallContext",
    "CallRelay",
    "CallSessionLike",
    "PassThroughSession",
    "RelayStats",
    "SessionFactory",
    "SessionIO",
    "agent_connector",
    "pass_through",
]

log = logging.getLogger("mirror_bridge.relay")


class CallRelay:
    """One call: wait for `start`, resolve the tenant, connect the agent, relay until an end.

    While the call runs, each socket's messages go to a handler (`plivo_side.PlivoSide.handler`,
    `agent_side.agent_handler`) that does the decoding and checks at once and calls the session
    in an eager task: the handler returns None when that finished at once (the usual case), or
    the task, and the socket delivers nothing more until it is done (so each direction stays in
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
        binding: StreamGrant | None = None,
    ) -> None:
        """`binding`: the upgrade's per-call token (`signature.StreamGrant`); `start` must name
        its call and number, or the stream is refused."""
        self.plivo = plivo
        self.binding = binding
        self.settings = settings
        self.tenants = tenants
        self.session_factory = session_factory
        self.connect_agent = connect_agent or agent_connector(settings)
        self.stats = RelayStats()
        self.session: CallSessionLike | None = None
        self.end_reason: str | None = None
        self.agent: AgentSocket | None = None
        """The agent's connection once dialled (closed, or dropped, when the call ends)."""
        self._plivo = PlivoSide(plivo, self.stats)

    async def run(self) -> None:
        """Runs until the call ends; never raises for a peer's misbehaviour."""
        plivo = self._plivo
        try:
            async with asyncio.timeout(self.settings.start_timeout_s or None):
                event = await self._first_start()
        except TimeoutError:
            log.warning("no Plivo start within %g s; closing", self.settings.start_timeout_s)
            self.end_reason = "start_timeout"
            return await plivo.close(1008)
        if isinstance(event, str):
            self.end_reason = event
            return await plivo.close(1008 if event == "invalid_start" else 1000)
        if event is None:
            self.end_reason = "plivo_closed"
            return
        start = event
        if not start.supported:  # decided now: Mirror could never speak on this stream
            fmt = start.media_format
            log.error(
                "call %s: unsupported media format %.40s at %d Hz; refusing the stream",
                start.call_id, fmt.encoding, fmt.sample_rate,
            )  # fmt: skip
            self.end_reason = "unsupported_media_format"
            return await plivo.close(1003)
        if self.binding is not None and (
            why := self.binding.mismatch(start.call_id, start.extra_headers.get(NUMBER_HEADER))
        ):  # a token opens its own call's stream only
            log.warning("call %.64s: stream refused: %s", start.call_id, why)
            self.end_reason = "stream_token_mismatch"
            return await plivo.close(1008)
        number, tenant = await self._resolve_tenant(start)
        if tenant is None:
            log.error("call %s: no tenant config and no default agent; ending", start.call_id)
            self.end_reason = "no_tenant"
            return await plivo.close(1008)
        try:
            conn = await self.connect_agent(tenant.agent_url, tenant.agent_headers)
        except Exception as e:
            log.error("call %s: agent %s unreachable: %s", start.call_id, tenant.agent_url, e)
            self.end_reason = "agent_unreachable"
            return await plivo.close(1011)
        self.agent = conn
        await self._relay(start, number, tenant, conn)

    async def _first_start(self) -> StartEvent | str | None:
        """Plivo's `start`; None when the socket closed first; `invalid_start` (a start the
        call cannot be built from: `plivo_protocol.InvalidStartError`) or `stop_before_start`
        when the stream is to be closed. Anything else before it is skipped."""
        plivo = self._plivo
        event = await plivo.next_event()
        while event is not None and not isinstance(event, StartEvent):
            self.stats.skipped["plivo_before_start"] += 1
            log.warning("skipped Plivo %s before start", event.event)
            if isinstance(event, StopEvent):
                return "stop_before_start"
            event = await plivo.next_event()
        if event is None and plivo.invalid_start is not None:
            return "invalid_start"
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

    async def _relay(
        self, start: StartEvent, number: str | None, tenant: TenantConfig, conn: AgentSocket
    ) -> None:
        size = self.settings.queue_size
        call_id = start.call_id
        call = CallScope(call_id, self.stats)
        readers: list[asyncio.Task[str]] = []
        reason = "error"
        session: CallSessionLike | None = None
        writers: list[_Writer] = []
        plivo_push = agent_push = None
        # Everything from here is inside the cleanup: whatever fails while the call is built
        # (a session factory refusing the call, a writer, a push path), both sockets are
        # closed and every task the call started is cancelled (issue 13, item 7).
        try:
            plivo_push = push_socket(self.plivo)  # each socket's push path, once per connection
            agent_push = push_path(conn)
            to_plivo = _Writer(
                "plivo",
                self.plivo.send_text,
                size,
                plivo_push.write_now if plivo_push else None,
                call_id=call_id,
            )
            writers.append(to_plivo)
            to_agent = _Writer(
                "agent",
                conn.send,
                size,
                agent_push.write_now if agent_push else None,
                call_id=call_id,
                stall_s=self.settings.agent_write_timeout_s or None,
                on_stall=lambda: call.end("agent_stalled"),
            )
            writers.append(to_agent)
            ctx = CallContext(
                start.call_id, start.stream_id, number, tenant, start.media_format, start
            )
            io = SessionIO(plivo=to_plivo, send_agent=to_agent.put, offer_agent=to_agent.offer)
            session = self.session_factory(ctx, io)
            self.session = session
            log.info(
                "call %s stream %s: tenant %s, agent %s",
                ctx.call_id,
                ctx.stream_id,
                tenant.tenant_id,
                tenant.agent_url,
            )
            await to_agent.put(start.raw)
            try:
                await session.on_start(start)
            except Exception:
                log.exception("call %s: session failed on start; the call goes on", ctx.call_id)
            on_plivo = self._plivo.handler(call, session, to_agent)
            on_agent = agent_handler(call, session, to_agent, self.settings.mirror_dispatch_s)
            if plivo_push is not None:
                plivo_push.start_delivery(on_plivo, lambda: call.end("plivo_closed"))
            else:
                readers.append(call.task(self._plivo.reader(call, on_plivo), "plivo-reader"))
            if agent_push is not None:
                agent_push.start_delivery(on_agent, lambda: call.end("agent_closed"))
            else:
                readers.append(call.task(agent_reader(call, conn, on_agent), "agent-reader"))
            if self.settings.max_call_s > 0:
                limit = call.call_limit(self.settings.max_call_s, to_agent)
                readers.append(call.task(limit, "call-limit"))
            for task in readers:
                task.add_done_callback(call.reader_done)
            reason = await call.ended
        except Exception:
            log.exception("call %s: the relay failed; ending the call", call_id)
            reason = "error"
        finally:
            call.end(reason)  # handlers deliver nothing more
            reason = call.ended.result()  # the first end (e.g. a stall while building)
            for push in (plivo_push, agent_push):
                if push is not None:
                    with contextlib.suppress(Exception):
                        push.stop_delivery()
            await call.cancel(readers)
            self.end_reason = reason
            log.info("call %s ending: %s %s", call_id, reason, dict(self.stats.skipped))
            if session is not None:
                try:
                    await session.close(reason)
                except Exception:
                    log.exception("call %s: session close failed", call_id)
            drain = self.settings.close_drain_s
            await asyncio.gather(*(w.finish(drain) for w in writers))
            try:
                await asyncio.wait_for(conn.close(), drain)
            except Exception:  # a stalled agent never answers the close: the socket is dropped
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.abort()
            await self._plivo.close(1000)
