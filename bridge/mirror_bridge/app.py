"""The bridge's HTTP and WebSocket surface: Plivo's answer URL, stream status, the audio stream.

`create_app(settings, ...)` takes every collaborator as an argument (tenant directory, state store,
session factory, agent connector) so tests run the real app on loopback with fakes where needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from plivo import plivoxml

from mirror.models import CallContext as MirrorCallContext
from mirror.state import StateStore
from mirror_bridge.contract import NUMBER_HEADER, AgentConnector, SessionFactory, pass_through
from mirror_bridge.logs import shutdown_logging
from mirror_bridge.metrics import BridgeMetrics
from mirror_bridge.plivo_protocol import MULAW, ONE_WAY, STREAM_MODE_HEADER
from mirror_bridge.relay import CallRelay
from mirror_bridge.settings import Settings
from mirror_bridge.signature import (
    TOKEN_PARAM,
    ReplayCache,
    SignatureCheck,
    StreamGrant,
    check_post,
    check_stream_upgrade,
    form_params,
    mint_stream_token,
    read_stream_token,
    with_query,
)
from mirror_bridge.tenants import DynamoDBTenants, StaticTenants, TenantDirectory, normalize_number
from mirror_bridge.tuning import freeze_startup_heap, reserve_fd_table

log = logging.getLogger("mirror_bridge.app")

XML_MEDIA_TYPE = "application/xml"
STREAM_TIMEOUT_MARGIN_S = 60
_EVENT_NAME = re.compile(r"[^A-Za-z0-9]")


def stream_xml(
    settings: Settings,
    number: str,
    tenant_id: str,
    call_id: str = "",
    now: float | None = None,
    *,
    bidirectional: bool = True,
) -> str:
    """The `<Stream>` answer (plivo-protocol.md §1.2), built with the plivo SDK. With stream
    tokens on, the stream URL carries one bound to this call (`signature.mint_stream_token`).
    `bidirectional=False` (the tenant's choice) asks for a one-way stream and marks it in
    `extraHeaders`, which Plivo echoes in `start` (`plivo_protocol.STREAM_MODE_HEADER`)."""
    status_url = f"{settings.status_url}?{urlencode({'tenant': tenant_id})}"
    stream_url = settings.stream_url
    if settings.stream_tokens != "off":
        token = mint_stream_token(
            settings.stream_token_key, call_id, number, tenant_id,
            time.time() if now is None else now, settings.stream_token_ttl_s,
        )  # fmt: skip
        stream_url = with_query(stream_url, urlencode({TOKEN_PARAM: token}))
    # Plivo's own limit backs up the bridge's call-length guard (a minute later, so the guard
    # normally ends the call first and tells the agent).
    timeout = (
        math.ceil(settings.max_call_s) + STREAM_TIMEOUT_MARGIN_S if settings.max_call_s else None
    )
    response = plivoxml.ResponseElement().add(
        plivoxml.StreamElement(
            stream_url,
            bidirectional=bidirectional,
            keepCallAlive=True,
            contentType=f"{MULAW};rate=8000",
            audioTrack="inbound",
            streamTimeout=timeout,
            statusCallbackUrl=status_url,
            statusCallbackMethod="POST",
            extraHeaders=f"{NUMBER_HEADER}={number}"
            + ("" if bidirectional else f",{STREAM_MODE_HEADER}={ONE_WAY}"),
        )
    )
    xml: str = response.to_string(False)  # plivo has no type information
    return '<?xml version="1.0" encoding="UTF-8"?>' + xml


def hangup_xml(reason: str = "rejected") -> str:
    response = plivoxml.ResponseElement().add(plivoxml.HangupElement(reason=reason))
    xml: str = response.to_string(False)
    return '<?xml version="1.0" encoding="UTF-8"?>' + xml


async def _params(request: Request) -> dict[str, str | list[str]]:
    """Form fields (Plivo's default) or a JSON object; a repeated form field becomes a list."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return form_params(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _first(params: dict[str, str | list[str]], key: str) -> str:
    value = params.get(key, "")
    return value[0] if isinstance(value, list) else value


def tuned(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's start-up: the process is tuned once, here, before the first call (`tuning`).
    The descriptor table is reserved before `lifespan`'s start-up opens anything; the heap is
    frozen after it (its warmed handlers and rendered lines are start-up state too), with the
    GIL's switch interval."""

    @asynccontextmanager
    async def start_up(app: FastAPI) -> AsyncIterator[None]:
        reserved = reserve_fd_table()
        # The process metrics document (active calls, relay latency) every interval, until
        # shutdown (`metrics.BridgeMetrics.run`: a probe, no per-frame work).
        metrics: BridgeMetrics = app.state.metrics
        periodic = asyncio.get_running_loop().create_task(metrics.run(), name="metrics")
        try:
            if lifespan is None:
                frozen = freeze_startup_heap()
                log.info("start-up: %d descriptors reserved, heap frozen: %s", reserved, frozen)
                yield
                return
            async with lifespan(app):
                frozen = freeze_startup_heap()
                log.info("start-up: %d descriptors reserved, heap frozen: %s", reserved, frozen)
                yield
        finally:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic
            if getattr(app.state, "owns_logging", False):  # main.build_app's JSON logs
                shutdown_logging()

    return start_up


def create_app(
    settings: Settings,
    *,
    tenants: TenantDirectory | None = None,
    store: StateStore | None = None,
    session_factory: SessionFactory | None = None,
    connect_agent: AgentConnector | None = None,
    clock: Callable[[], float] = time.time,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    metrics: BridgeMetrics | None = None,
) -> FastAPI:
    """The bridge app. Without `tenants`, the call table (or nothing) is the directory; without
    `session_factory`, calls are passed through unsupervised (`mirror_bridge.wiring.build_app`
    builds the supervised one). `lifespan` runs around the server (start-up work, shutdown),
    inside the app's own start-up (`tuned`), which tunes the process once, before any call."""
    if tenants is None:
        tenants = (
            DynamoDBTenants(settings.call_table, ttl_s=settings.tenant_cache_ttl_s)
            if settings.call_table
            else StaticTenants({})
        )
    factory = session_factory or pass_through
    app = FastAPI(
        title="Mirror bridge", docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=tuned(lifespan),
    )  # fmt: skip
    app.state.settings = settings
    app.state.metrics = metrics or BridgeMetrics()
    app.state.store = store
    app.state.session_factory = factory
    app.state.relays = []  # the last few relays, for tests and debugging
    app.state.stream_statuses = []
    app.state.stream_tokens = ReplayCache()  # nonces of the tokens that opened a stream

    def judge(check: SignatureCheck, what: str) -> bool:
        """Apply SIGNATURE_MODE; log which form matched (the first live call settles §3.5)."""
        if settings.signature_mode == "off":
            return True
        if check.valid:
            log.info("%s signature ok: matched %s", what, check.matched)
            return True
        log.warning("%s signature rejected: %s", what, check.reason)
        return settings.signature_mode == "log"

    async def post_check(
        request: Request, public_url: str, what: str
    ) -> tuple[bool, dict[str, str | list[str]]]:
        params = await _params(request)
        check = check_post(
            request.headers, public_url, request.url.query, params,
            settings.auth_token, settings.main_auth_token,
        )  # fmt: skip
        return judge(check, what), params

    def stream_grant(token: str | None) -> StreamGrant | str | None:
        """The upgrade's per-call token (STREAM_TOKEN_MODE): its grant, which the relay checks
        `start` against; None when not checked (off, or log mode); a reason when refused. A
        valid token opens one stream: its nonce is kept until it expires."""
        if settings.stream_tokens == "off":
            return None
        now = clock()
        # (a '/websocket' suffix, should Plivo append it after the query, is not the token's)
        token = token.removesuffix("/websocket") if token else token
        grant = read_stream_token(settings.stream_token_key, token, now)
        if isinstance(grant, StreamGrant) and not app.state.stream_tokens.claim(grant, now):
            grant = "stream token already used"
        if isinstance(grant, StreamGrant):
            return grant if settings.stream_tokens == "enforce" else None
        log.warning("stream upgrade refused: %s", grant)
        return grant if settings.stream_tokens == "enforce" else None

    @app.get("/health")
    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/plivo/answer")
    async def answer(request: Request) -> Response:
        ok, params = await post_check(request, settings.answer_url, "answer")
        if not ok:
            return Response("invalid signature", status_code=403, media_type="text/plain")
        outbound = _first(params, "Direction").lower() == "outbound"
        number = normalize_number(_first(params, "From" if outbound else "To"))
        tenant = await tenants.get(number) if number else None
        if tenant is None and not settings.default_agent_url:
            log.warning("answer: no tenant for number %r; hanging up", number)
            return Response(hangup_xml(), media_type=XML_MEDIA_TYPE)
        tenant_id = tenant.tenant_id if tenant else settings.default_tenant_id
        log.info(
            "answer: call %s number %s tenant %s", _first(params, "CallUUID"), number, tenant_id
        )
        xml = stream_xml(
            settings, number, tenant_id, _first(params, "CallUUID"), clock(),
            bidirectional=tenant.bidirectional if tenant else True,
        )  # fmt: skip
        return Response(xml, media_type=XML_MEDIA_TYPE)

    @app.post("/plivo/stream-status")
    async def stream_status(request: Request) -> Response:
        ok, params = await post_check(request, settings.status_url, "stream-status")
        if not ok:
            return Response("invalid signature", status_code=403, media_type="text/plain")
        call_id = _first(params, "CallUUID")
        event = _first(params, "Event") or "unknown"
        tenant_id = request.query_params.get("tenant") or settings.default_tenant_id
        now = clock()
        record: dict[str, Any] = {
            "call_id": call_id,
            "tenant_id": tenant_id,
            "event": event,
            "stream_id": _first(params, "StreamID"),
            "at": now,
        }
        app.state.stream_statuses = [*app.state.stream_statuses[-99:], record]
        log.info("stream status %s for call %s", event, call_id)
        if store is not None and call_id:
            fields = {
                "stream_event": event,
                "stream_id": record["stream_id"] or None,
                "stream_event_at": now,
                f"stream_{_EVENT_NAME.sub('', event)[:40] or 'unknown'}_at": now,
            }
            try:
                ctx = MirrorCallContext(call_id=call_id, tenant_id=tenant_id)
                await asyncio.to_thread(store.put_call_meta, ctx, fields, now, settings.meta_ttl_s)
            except Exception as e:  # recording must not make Plivo retry forever
                log.error("could not record stream status for %s: %s", call_id, e)
        return JSONResponse({"ok": True})

    @app.websocket("/plivo/stream")
    async def stream(websocket: WebSocket) -> None:
        check = check_stream_upgrade(
            websocket.headers, settings.stream_url, settings.auth_token, settings.main_auth_token,
            websocket.url.query,  # the signed URL includes the answer's token
        )  # fmt: skip
        if not judge(check, "stream upgrade"):
            await websocket.close(code=1008)  # before accept: uvicorn answers HTTP 403
            return
        grant = stream_grant(websocket.query_params.get(TOKEN_PARAM))
        if isinstance(grant, str):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        relay = CallRelay(websocket, settings, tenants, factory, connect_agent, binding=grant)
        app.state.relays = [*app.state.relays[-99:], relay]
        app.state.metrics.call_started()
        try:
            await relay.run()
        except Exception:
            log.exception("relay crashed")
        finally:  # the call's metrics, once its relay (and its session's close) returned
            app.state.metrics.relay_finished(relay)

    return app
