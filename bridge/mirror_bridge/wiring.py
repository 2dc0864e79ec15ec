"""Production wiring: settings → the supervised session factory → the app.

`build_session_factory(settings, ...)` builds what every call's `CallSession` shares, from the
settings (the task definition's environment) unless a collaborator is passed in:

| part      | `BRIDGE_MODE=aws` (the default)           | `BRIDGE_MODE=local`                      |
|-----------|-------------------------------------------|------------------------------------------|
| transport | `LambdaTransport` (`*_FUNCTION` names)    | `InProcessTransport` (functions/*) [1]   |
| tts       | `PollyTTS` (`TTS_ENGINE=offline` changes) | `OfflineTTS` (espeak-ng or the clips)    |
| store     | `DynamoDBStateStore(CALL_TABLE)`          | the same (moto via `AWS_ENDPOINT_URL`)   |
| events    | `EventBridgeSink(EVENT_BUS_NAME)`         | the same if set, else only logged        |

[1] from the development package `mirror_dev` (dev/, installed in the checkout's .venv by
`make venv`), imported only in local mode: the image ships `mirror` and `mirror_bridge` alone,
so `BRIDGE_MODE=local` there fails at start-up saying what to install.

A setting the chosen collaborators need and do not have fails here, at start-up, with every
missing variable named; nothing is discovered on the first call. The in-process functions read
their own environment as a Lambda function does (`CALL_TABLE`, `MIRROR_CONFIG`, ...).

`build_app(settings)` is the bridge as deployed: the app with the supervised sessions, the call
table as tenant directory and stream-status store, and a lifespan that warms the buffer line (and
the in-process handlers) before the first call and releases the thread pools at shutdown.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from mirror.config import ConfigError, config_from_env
from mirror.models import MirrorConfig
from mirror.state import DynamoDBStateStore, StateStore
from mirror_bridge.app import create_app
from mirror_bridge.call_end import (
    EventBridgeSink,
    EventSink,
    InMemoryEventSink,
    StoreStateWriter,
)
from mirror_bridge.logs import bind_call
from mirror_bridge.metrics import BridgeMetrics
from mirror_bridge.relay import CallContext, SessionIO
from mirror_bridge.session import BridgeSessionConfig, CallSession
from mirror_bridge.settings import Settings, SettingsError
from mirror_bridge.tenants import TenantConfig
from mirror_bridge.transport import FunctionTransport, LambdaTransport
from mirror_bridge.tts import TTS, BufferLineCache, OfflineTTS, PlivoRestSpeaker, PollyTTS

log = logging.getLogger("mirror_bridge.wiring")

FUNCTION_ENV = {
    "score_turn": "SCORE_TURN_FUNCTION",
    "gate_tool": "GATE_TOOL_FUNCTION",
    "generate_correction": "GENERATE_CORRECTION_FUNCTION",
}


class LoggedEventSink(InMemoryEventSink):
    """`local` mode without an event bus: each event is logged (and kept, for the demo)."""

    async def put_event(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        await super().put_event(detail_type, detail)
        log.info("event %s (no EVENT_BUS_NAME: not sent): %s", detail_type, dict(detail))


class Supervision:
    """The session factory (`SessionFactory`: called once per call at Plivo's `start`) and the
    collaborators its sessions share. `sessions` keeps the last 100 calls' sessions, for the
    demo's timeline and for debugging."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: FunctionTransport,
        tts: TTS,
        events: EventSink,
        store: StateStore | None,
        mirror: MirrorConfig,
        buffer_lines: BufferLineCache | None = None,
        rest: PlivoRestSpeaker | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.tts = tts
        self.events = events
        self.store = store
        self.mirror = mirror
        self.buffer_lines = buffer_lines or BufferLineCache(tts)
        self.rest = rest
        self.state = StoreStateWriter(store, ttl_s=mirror.state_ttl_s) if store else None
        self.sessions: deque[CallSession] = deque(maxlen=100)

    def session_config(self, tenant: TenantConfig) -> BridgeSessionConfig:
        """The bridge's settings with the tenant's voice, buffer line, policies and tools."""
        mirror = self.mirror
        if tenant.irreversible_tools is not None:
            mirror = mirror.model_copy(update={"irreversible_tools": tenant.irreversible_tools})
        return BridgeSessionConfig(
            hold_budget_s=self.settings.hold_budget_s,
            caller_silence_s=self.settings.caller_silence_s,
            voice=tenant.voice,
            buffer_text=tenant.buffer_text,
            mirror=mirror,
            policies=list(tenant.policies) or None,
            irreversible_tools=tenant.irreversible_tools,
        )

    def __call__(self, ctx: CallContext, io: SessionIO) -> CallSession:
        # From here on, the call's relay task (and every task it starts) logs for this call.
        bind_call(ctx.call_id, ctx.stream_id, ctx.tenant.tenant_id)
        session = CallSession(
            ctx.mirror_context(),
            io,
            functions=self.transport,
            tts=self.tts,
            events=self.events,
            config=self.session_config(ctx.tenant),
            buffer_lines=self.buffer_lines,
            state=self.state,
            rest=self.rest,
            notes=self.store,  # the delivered override note is consumed (issue 13, item 12)
        )
        self.sessions.append(session)
        return session

    async def warm(self) -> None:
        """Before the first call: load in-process handlers, render the default buffer line.
        A failure is logged, not raised (the first intervention renders the line itself)."""
        warm = getattr(self.transport, "warm", None)  # the in-process transport's
        if callable(warm):
            await warm()
        try:
            await self.buffer_lines.get(self.mirror.buffer_text, BridgeSessionConfig.voice)
        except Exception as e:
            log.warning("buffer line not pre-rendered (%s): the first intervention will", e)

    def shutdown(self) -> None:
        for part in (self.transport, self.tts, self.events):
            stop = getattr(part, "shutdown", None)
            if callable(stop):
                stop()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.warm()
        try:
            yield
        finally:
            self.shutdown()


def _missing(settings: Settings, *, transport: bool, store: bool, events: bool) -> list[str]:
    missing: list[str] = []
    if transport and settings.mode == "aws":
        names = {
            "score_turn": settings.score_turn_function,
            "gate_tool": settings.gate_tool_function,
            "generate_correction": settings.generate_correction_function,
        }
        missing += [FUNCTION_ENV[n] for n, value in names.items() if not value]
    if (store or (transport and settings.mode == "local")) and not settings.call_table:
        missing.append("CALL_TABLE")
    if events and settings.mode == "aws" and not settings.event_bus_name:
        missing.append("EVENT_BUS_NAME")
    return missing


def build_session_factory(
    settings: Settings,
    *,
    transport: FunctionTransport | None = None,
    tts: TTS | None = None,
    store: StateStore | None = None,
    events: EventSink | None = None,
    buffer_lines: BufferLineCache | None = None,
    mirror: MirrorConfig | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Supervision:
    """The supervised session factory; every collaborator not passed in is built from
    `settings` (see the module docstring). `mirror` defaults to `MIRROR_CONFIG` from `environ`.
    Raises SettingsError naming every missing or invalid setting."""
    missing = _missing(
        settings, transport=transport is None, store=store is None, events=events is None
    )
    if missing:
        raise SettingsError(
            f"BRIDGE_MODE={settings.mode} needs {', '.join(dict.fromkeys(missing))} "
            "(the bridge task definition in template.yaml sets them)"
        )
    if mirror is None:
        try:
            mirror = config_from_env(environ)
        except ConfigError as e:
            raise SettingsError(str(e)) from None
    if transport is None:
        if settings.mode == "aws":
            names = {
                "score_turn": settings.score_turn_function or "",
                "gate_tool": settings.gate_tool_function or "",
                "generate_correction": settings.generate_correction_function or "",
            }
            transport = LambdaTransport(names, max_workers=settings.function_workers)
        else:
            transport = local_transport(settings)
    if store is None:
        assert settings.call_table  # checked above
        store = DynamoDBStateStore(settings.call_table)
    if events is None:
        if settings.event_bus_name:
            events = EventBridgeSink(bus_name=settings.event_bus_name)
        else:
            events = LoggedEventSink()
            log.info("no EVENT_BUS_NAME: CallEnded events are logged, not sent")
    if tts is None:
        engine = settings.tts_engine or ("polly" if settings.mode == "aws" else "offline")
        tts = PollyTTS(engine=settings.polly_engine) if engine == "polly" else OfflineTTS()
    return Supervision(
        settings,
        transport=transport,
        tts=tts,
        events=events,
        store=store,
        mirror=mirror,
        buffer_lines=buffer_lines,
        rest=rest_speaker(environ, settings.auth_token),
    )


LOCAL_TRANSPORT_MISSING = (
    "BRIDGE_MODE=local needs the development package mirror_dev (dev/mirror_dev in a Mirror "
    "checkout: `make venv`, or `pip install -e dev`); the bridge image does not ship it, "
    "use BRIDGE_MODE=aws there"
)


def local_transport(settings: Settings) -> FunctionTransport:
    """`BRIDGE_MODE=local`'s transport: the handlers from functions/* in this process
    (`mirror_dev.in_process.InProcessTransport`). Imported here, on use: the development
    package is not in the image. Raises SettingsError, one line, when it is not installed."""
    try:
        from mirror_dev.in_process import InProcessTransport
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != "mirror_dev":
            raise  # mirror_dev is there but something it imports is not: not this error
        raise SettingsError(LOCAL_TRANSPORT_MISSING) from None
    return InProcessTransport(max_workers=settings.function_workers)


def rest_speaker(environ: Mapping[str, str], auth_token: str) -> PlivoRestSpeaker | None:
    """Plivo's REST API, when `PLIVO_AUTH_ID` is set: Speak and Stop Speak for one-way streams
    (a tenant's `bidirectional: false`), and Hangup Call for the call-length guard."""
    auth_id = (environ.get("PLIVO_AUTH_ID") or "").strip()
    if not auth_id or not auth_token:
        return None

    def client() -> Any:
        import plivo

        return plivo.RestClient(auth_id, auth_token)

    return PlivoRestSpeaker(client_factory=client)


def build_app(settings: Settings, *, environ: Mapping[str, str] = os.environ) -> FastAPI:
    """The bridge as deployed (see the module docstring)."""
    supervision = build_session_factory(settings, environ=environ)
    app = create_app(
        settings,
        store=supervision.store,
        session_factory=supervision,
        lifespan=supervision.lifespan,
        metrics=BridgeMetrics.from_env(environ),
    )
    app.state.supervision = supervision
    return app
