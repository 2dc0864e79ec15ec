"""Api: the scoring operations over HTTPS (API Gateway HTTP API, IAM-signed), FastAPI via Mangum.

The same core as the direct-invoke functions, so a turn gets the same decision either way:
`POST /v1/turns:score` is ScoreTurn, `POST /v1/tools:gate` is GateTool, `POST /v1/corrections`
is GenerateCorrection; `GET /v1/calls/{call_id}` and `POST /v1/calls/{call_id}/end` read and
end a call (`mirror.calls`; the end publishes CallEnded on EVENT_BUS_NAME);
`POST /v1/fixes/{fix_id}/approve` and `/reject` decide a fix waiting in the FixPr workflow
(`mirror.fixes.approval`). Errors are the direct handlers' `{"error": {...}}` object with an
HTTP status: bad input is 4xx naming the field, an unreachable state store is 503. The gate and
the corrections keep their own failure rules instead (a tool call is held, a template
correction is returned), exactly as their functions do.

Import stays light (cold start): FastAPI, Powertools Logger/Metrics and the core's models. The
DynamoDB client, the idempotency layer and any LLM SDK are built on first use.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import quote

import anyio.to_thread
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from fastapi import Body, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mangum import Mangum
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mirror.calls import (
    CallEnded,
    CallEventError,
    CallsService,
    CallState,
    EventBridgeCallEnded,
    OverrideNote,
)
from mirror.config import config_for_event, config_from_env
from mirror.correction import (
    CorrectionEvent,
    CorrectionResult,
    CorrectionService,
    GeneratedCorrection,
    build_correction_llm,
    fallback_result,
    llm_timeout_from_env,
)
from mirror.errors import error_response, validation_error_response
from mirror.fixes.approval import FixApprovals, FixDecision, FixDecisionRequest
from mirror.fixes.errors import FixConflict, FixNotFound, TransientError
from mirror.gate import GateOutcome, GateResult, GateService, GateToolEvent, fail_safe
from mirror.judge import RemoteTier
from mirror.models import CallContext, MirrorConfig, ScoreTurnEvent, Verdict
from mirror.observability import count, function_metrics, traced
from mirror.redact import redact
from mirror.service import ScoreTurnService
from mirror.state import DynamoDBStateStore, StateStore, StateStoreError

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import.
tracer = Tracer(auto_patch=False)

MAX_BODY_ENV = "MIRROR_API_MAX_BODY_BYTES"
RESERVE_S = 0.75
"""Kept back from the invocation's remaining time for the store writes and the response."""
TURN_ID_HEADER = "mirror-turn-id"
REPLAYED_HEADER = "mirror-replayed"
TENANT_PATTERN = r"^[A-Za-z0-9._:-]+$"
"""`mirror.models.TenantId`: tenant ids prefix every state key."""


def _positive_int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive number of bytes, not {raw!r}")
    return int(raw)


BASE_CONFIG = config_from_env()
MAX_BODY_BYTES = _positive_int_env(MAX_BODY_ENV, 1_048_576)
"""A turn is a few kilobytes; a stateless caller's full history rarely reaches 1 MiB."""
LLM_TIMEOUT_S = llm_timeout_from_env()


# --- services: built on first use, one store (one DynamoDB client) for all ---------------------

_store: StateStore | None = None
_scorer: ScoreTurnService | None = None
_gate: GateService | None = None
_corrections: CorrectionService | None = None
_calls: CallsService | None = None
_GATE_LOCK = threading.Lock()
"""GateService is not thread-safe with idempotency on; Lambda runs one request at a time, a
local server may not."""


def store() -> StateStore:
    global _store
    if _store is None:
        tracer.patch(["botocore"])
        _store = DynamoDBStateStore(os.environ["CALL_TABLE"])
    return _store


def _remote_tiers(config: MirrorConfig) -> list[RemoteTier]:
    """Tier 1 / Tier 2 as the config asks (none: Tier 0 only). The factory loads an SDK only
    for a configured tier, so it is imported here, not at module level."""
    from mirror.llm import build_remote_tiers

    return list(build_remote_tiers(config))


def scorer() -> ScoreTurnService:
    global _scorer
    if _scorer is None:
        # looked up per config at call time, so the judge's tiers follow `_remote_tiers`
        _scorer = ScoreTurnService(store(), remote_tiers_for=lambda c: _remote_tiers(c))
    return _scorer


def gate_service() -> GateService:
    global _gate
    if _gate is None:
        from mirror.gate import idempotency_layer  # Powertools idempotency: first gate only

        base = store()
        persistence = None
        if isinstance(base, DynamoDBStateStore):
            persistence = idempotency_layer(base.table_name, base.client)
        _gate = GateService(base, _remote_tiers(BASE_CONFIG), persistence=persistence)
    return _gate


def _log_llm_error(e: BaseException) -> None:
    logger.warning("correction LLM failed", extra={"error_type": type(e).__name__})


def correction_service() -> CorrectionService:
    global _corrections
    if _corrections is None:
        _corrections = CorrectionService(
            store(),
            build_correction_llm(BASE_CONFIG, logger),
            llm_timeout_s=LLM_TIMEOUT_S,
            on_llm_error=_log_llm_error,
        )
    return _corrections


def calls_service() -> CallsService:
    """Ending a call publishes CallEnded on EVENT_BUS_NAME when it is set (source mirror.api)."""
    global _calls
    if _calls is None:
        bus = os.environ.get("EVENT_BUS_NAME", "").strip()
        if bus:
            _calls = CallsService(store(), on_ended=EventBridgeCallEnded(bus))
        else:
            _calls = CallsService(store())
    return _calls


_fixes: FixApprovals | None = None


class FixesNotConfigured(Exception):
    """REPORTS_TABLE is not set: this deployment has no fix workflow, so no fix exists (404)."""


def fix_approvals() -> FixApprovals:
    global _fixes
    if _fixes is None:
        from mirror.fixes.store import FixStore

        table = os.environ.get("REPORTS_TABLE", "").strip()
        if not table:
            raise FixesNotConfigured("REPORTS_TABLE is not set: no fix workflow here")
        _fixes = FixApprovals(FixStore(table))
    return _fixes


# --- errors ----------------------------------------------------------------------------------


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Field(description=...), not attribute docstrings: pydantic reads those from the source,
    # which it cannot find again when this file is imported a second time (the tests do).
    field: str = Field(
        description="Dotted path in the body (`tool_calls.0.id`, as the direct-invoke functions"
        " name it), `body` for the body as a whole, `query.<name>` or `path.<name>` for URL"
        " parameters."
    )
    message: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        description="`invalid_event`, `unsupported_media_type`, `payload_too_large`,"
        " `call_not_found`, `not_found`, `method_not_allowed`, `state_unavailable` or"
        " `internal_error`."
    )
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(BaseModel):
    """Every error response."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: _doc("The body is not valid JSON."),
    413: _doc(f"The body is larger than {MAX_BODY_ENV} (default 1 MiB)."),
    415: _doc("The body is not sent as application/json."),
    422: _doc("The event does not validate; `fields` names each bad field."),
}
BAD_PARAMS: dict[int | str, dict[str, Any]] = {
    404: _doc("No such call (or it expired)."),
    422: _doc("A path or query parameter does not validate."),
}
STORE_DOWN: dict[int | str, dict[str, Any]] = {
    503: _doc("The state store could not be used; retry later."),
}


def _error(
    status: int,
    kind: str,
    message: str,
    fields: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_response(kind, message, fields), status, headers=headers)


def _invalid(e: ValidationError) -> JSONResponse:
    """A pydantic error raised after parsing (e.g. an event policy that does not compile)."""
    body = validation_error_response(e)
    count("InvalidEvents")
    logger.warning("invalid event", extra={"error": body["error"]})
    return JSONResponse(body, 422)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # no header: the body is read as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _request_fields(errors: Sequence[Any]) -> tuple[bool, list[dict[str, str]]]:
    """(the body is not JSON at all, one `{field, message}` per error); never the input."""
    malformed = False
    fields: list[dict[str, str]] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())] or ["body"]
        where, rest = loc[0], loc[1:]
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            malformed = True
            detail = (err.get("ctx") or {}).get("error")
            position = f" at position {rest[0]}" if rest else ""
            fields.append({"field": "body", "message": f"{message}: {detail}{position}"})
        elif where == "body":
            fields.append({"field": ".".join(rest) or "body", "message": message})
        else:
            fields.append({"field": ".".join([where, *rest]), "message": message})
    return malformed, fields


async def on_request_invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors in the direct handlers' shape (not FastAPI's `detail`)."""
    assert isinstance(exc, RequestValidationError)
    malformed, fields = _request_fields(exc.errors())
    count("InvalidEvents")
    if not _is_json(request.headers.get("content-type")) and any(
        f["field"] == "body" for f in fields
    ):
        return _error(
            415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"
        )
    if malformed:
        logger.warning("malformed JSON body")
        return _error(400, "invalid_event", "the body is not valid JSON", fields)
    names = ", ".join(f["field"] for f in fields[:5])
    logger.warning("invalid request", extra={"fields": fields})
    return _error(422, "invalid_event", f"invalid event: {names}", fields)


_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    kind = _HTTP_KINDS.get(status, "http_error")
    if status == 413:
        message = _too_large_message()
    elif isinstance(exc.detail, str) and exc.detail:
        message = exc.detail
    else:
        message = HTTPStatus(status).phrase
    return _error(status, kind, message, headers=exc.headers)


async def on_store_error(request: Request, exc: Exception) -> JSONResponse:
    """An outage, not the caller's fault: 503, so clients apply their failure rule and retry."""
    logger.error("state store unavailable", extra={"error": redact(str(exc))})
    count("StateStoreErrors")
    return _error(503, "state_unavailable", str(exc))


async def on_event_error(request: Request, exc: Exception) -> JSONResponse:
    """The call's end is stored but its CallEnded event is not out: 503, and a retry of the
    same end publishes it."""
    logger.error("CallEnded not published", extra={"error": str(exc)})
    count("CallEventErrors")
    return _error(503, "event_unavailable", f"{exc}; the end is recorded, retry to publish it")


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered in the same shape (never a stack trace)."""
    logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
    count("ApiErrors", kind="internal_error")
    return _error(500, "internal_error", "internal error; see the function's logs")


class _BodyTooLarge(HTTPException):
    """FastAPI re-raises its own HTTPException from a body read (anything else becomes 400), so
    this reaches `on_http_error` and the 413 has the usual error shape."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


class BodyLimit:
    """413 for a body over `max_bytes`: before reading when Content-Length says so, else as soon
    as the bytes read pass it. (Starlette's own limiter answers a plain-text 413.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(error_response("payload_too_large", _too_large_message()), 413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def _too_large_message() -> str:
    return f"the body is larger than {MAX_BODY_BYTES} bytes"


# --- the app ---------------------------------------------------------------------------------

DESCRIPTION = """\
Mirror judges a phone voice agent's turns: scores a turn, gates planned tool calls, writes the
correction after an intervention, and reads or ends a call's state.

Deployed behind an API Gateway HTTP API with IAM authorization: sign every request with
SigV4 (service `execute-api`), e.g. `awscurl --service execute-api`. Errors are
`{"error": {"type", "message", "fields"?}}`: 4xx for bad input (each bad field named), 404 for
an unknown call, 503 when the state store is unreachable.
"""

app = FastAPI(
    title="Mirror API",
    version="1.0.0",
    description=DESCRIPTION,
    docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; the schema is enough
    redoc_url=None,
    openapi_url="/openapi.json",
    strict_content_type=False,  # a body without Content-Type is read as JSON
    exception_handlers={
        RequestValidationError: on_request_invalid,
        StarletteHTTPException: on_http_error,
        StateStoreError: on_store_error,
        CallEventError: on_event_error,
        Exception: on_unexpected,
    },
)
app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


def request_id(request: Request) -> str:
    """API Gateway's request id (clients see it as the `apigw-requestid` response header),
    else the Lambda request id, else a random one (local runs)."""
    event = request.scope.get("aws.event")
    if isinstance(event, dict):
        rid = (event.get("requestContext") or {}).get("requestId")
        if isinstance(rid, str) and 0 < len(rid) <= 256:
            return rid
    rid = getattr(request.scope.get("aws.context"), "aws_request_id", None)
    if isinstance(rid, str) and 0 < len(rid) <= 256:
        return rid
    return uuid.uuid4().hex


def header_value(text: str) -> str:
    """Header values travel as latin-1: an id is sent as it is when it is printable ASCII (any
    id a client would pick), else as percent-encoded UTF-8."""
    return text if text.isascii() and text.isprintable() else quote(text, safe="")


def _lambda_context(request: Request) -> Any | None:
    return request.scope.get("aws.context")


@app.post(
    "/v1/turns:score",
    operation_id="scoreTurn",
    tags=["turns"],
    summary="Score one agent turn (ScoreTurn)",
    response_model=Verdict,
    responses={**BAD_BODY, **STORE_DOWN},
)
async def score_turn(event: ScoreTurnEvent, request: Request, response: Response) -> Any:
    """The verdict for the turn, recorded under `turn_id` (default: the API request id; sent
    back in the `mirror-turn-id` header, percent-encoded unless printable ASCII). A retry with
    the same `turn_id` replays the stored verdict (`mirror-replayed: true`)."""
    try:
        config = config_for_event(BASE_CONFIG, event)  # event policies compile here
    except ValidationError as e:
        return _invalid(e)
    ctx = event.context()
    turn_id = event.turn_id or request_id(request)
    with logger.append_context_keys(call_id=ctx.call_id, tenant_id=ctx.tenant_id):
        try:
            scored = await scorer().ascore(event, config, turn_id)
        except ValidationError:
            raise  # a model built inside the service failed: a bug, not input
        except ValueError as e:  # the store refuses what cannot fit an item (sizes only)
            logger.warning("turn cannot be recorded", extra={"error": str(e)})
            count("InvalidEvents")
            return _error(422, "invalid_event", f"the turn cannot be recorded: {e}")
        verdict = scored.verdict
        if not scored.replayed:
            count("Verdicts", decision=verdict.decision, tier=verdict.decided_by or "none")
        logger.info(
            "verdict",
            extra={
                "turn_id": turn_id,
                "decision": verdict.decision,
                "score": verdict.score,
                "checks": [r.check for r in verdict.reasons],
                "replayed": scored.replayed,
            },
        )
    response.headers[TURN_ID_HEADER] = header_value(turn_id)
    response.headers[REPLAYED_HEADER] = "true" if scored.replayed else "false"
    return verdict


def _gate_locked(
    service: GateService, event: GateToolEvent, config: MirrorConfig, context: Any
) -> GateOutcome:
    with _GATE_LOCK:
        return service.gate(event, config, context)


@app.post(
    "/v1/tools:gate",
    operation_id="gateTool",
    tags=["tools"],
    summary="Decide planned tool calls before they run (GateTool)",
    response_model=GateResult,
    responses=BAD_BODY,
)
async def gate_tool(event: GateToolEvent, request: Request) -> Any:
    """One decision per planned call (allow, block, hold). Failures hold irreversible calls
    (`tool_gate_failure_mode`) and still answer 200, as GateTool does."""
    try:
        config = GateService.config_for(BASE_CONFIG, event)
    except ValidationError as e:
        return _invalid(e)
    ctx = event.context()
    with logger.append_context_keys(call_id=ctx.call_id, tenant_id=ctx.tenant_id):
        try:
            service = gate_service()
            # synchronous (its remote tiers run their own event loop): a worker thread
            outcome = await anyio.to_thread.run_sync(
                functools.partial(_gate_locked, service, event, config, _lambda_context(request))
            )
        except Exception as e:  # noqa: BLE001 - a planned tool call always gets a decision
            logger.error(
                "gate failed; failure mode applied",
                extra={"error": f"{type(e).__name__}: {redact(str(e))}"},
            )
            lines = _gate.spoken_lines if _gate is not None else None
            outcome = fail_safe(event, config, "internal_error", type(e).__name__, lines)
        fresh = set(outcome.fresh)
        for decision in outcome.result.decisions:
            if decision.tool_call_id in fresh:
                count("GateDecisions", decision=decision.decision, decided_by=decision.decided_by)
        for failure in outcome.failures:
            count("GateFailures", kind=failure.kind)
            logger.warning(
                "gate failure",
                extra={
                    "kind": failure.kind,
                    "tool_call_id": failure.tool_call_id,
                    "detail": redact(failure.detail),
                },
            )
        logger.info("gate decisions", extra={"decision": outcome.result.decision})
    return outcome.result


@app.post(
    "/v1/corrections",
    operation_id="generateCorrection",
    tags=["corrections"],
    summary="Write the correction after an intervention (GenerateCorrection)",
    response_model=CorrectionResult,
    responses=BAD_BODY,
)
async def generate_correction(event: CorrectionEvent, request: Request) -> Any:
    """The line the agent says next and its one-shot note. A failing LLM or store still
    returns a correction (the template; `note_stored: false`), as GenerateCorrection does."""
    config = BASE_CONFIG
    if event.tenant_id is not None:
        config = BASE_CONFIG.model_copy(update={"tenant_id": event.tenant_id})
    turn_id = event.turn_id or request_id(request)
    ctx = event.context()
    with logger.append_context_keys(call_id=ctx.call_id, tenant_id=ctx.tenant_id):
        try:
            service = correction_service()  # the first call builds the clients: clock after
            budget_s = None
            context = _lambda_context(request)
            if context is not None:
                budget_s = context.get_remaining_time_in_millis() / 1000 - RESERVE_S
            generated = await service.generate(event, config, turn_id, budget_s=budget_s)
        except Exception:  # a bug must not leave the caller in silence: speak the template
            logger.exception("correction failed; returning the template")
            count("CorrectionErrors")
            generated = GeneratedCorrection(fallback_result(event, config, turn_id))
        result = generated.result
        for error in generated.store_errors:
            logger.error("state store unavailable", extra={"error": redact(error)})
            count("StateStoreErrors")
        if not result.replayed:
            count("CorrectionSource", part="line", source=result.source)
        logger.info(
            "correction",
            extra={
                "turn_id": turn_id,
                "reason_code": result.reason_code,
                "source": result.source,
                "note_stored": result.note_stored,
                "replayed": result.replayed,
            },
        )
    return result


CallId = Annotated[
    str, Path(min_length=1, max_length=256, description="The call id used when scoring.")
]
TenantQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=128,
        pattern=TENANT_PATTERN,
        description="The tenant (default: `default`).",
    ),
]


def _call_not_found(ctx: CallContext) -> JSONResponse:
    return _error(
        404,
        "call_not_found",
        f"no call {ctx.call_id!r} for tenant {ctx.tenant_id!r} (never scored, or expired)",
    )


@app.get(
    "/v1/calls/{call_id}",
    operation_id="getCall",
    tags=["calls"],
    summary="A call's state: metadata, history and verdicts",
    response_model=CallState,
    responses={**BAD_PARAMS, **STORE_DOWN},
)
async def get_call(call_id: CallId, tenant_id: TenantQuery = None) -> Any:
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id or "default")
    state = calls_service().get_call(ctx, BASE_CONFIG.history_limit)
    if state is None:
        return _call_not_found(ctx)
    return state


@app.post(
    "/v1/calls/{call_id}/end",
    operation_id="endCall",
    tags=["calls"],
    summary="Mark a call ended (idempotent)",
    response_model=CallEnded,
    responses={**BAD_PARAMS, **STORE_DOWN},
)
async def end_call(call_id: CallId, tenant_id: TenantQuery = None) -> Any:
    """Records `ended_at` in the call's metadata. Ending it again returns the same result;
    an unknown call is 404 and nothing is created for it."""
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id or "default")
    ended = calls_service().end_call(ctx, BASE_CONFIG.state_ttl_s)
    if ended is None:
        return _call_not_found(ctx)
    logger.info("call ended", extra={"call_id": ctx.call_id, "ended_at": ended.ended_at})
    return ended


@app.post(
    "/v1/calls/{call_id}/override:take",
    operation_id="takeOverride",
    tags=["calls"],
    summary="Take the call's one-shot override note (read once)",
    response_model=OverrideNote,
    responses={**BAD_PARAMS, **STORE_DOWN},
)
async def take_override(call_id: CallId, tenant_id: TenantQuery = None) -> Any:
    """The note GenerateCorrection stored for the agent's next turn, deleted as it is read:
    call it before generating that turn. `note` is null when none is pending; an unknown call
    is 404."""
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id or "default")
    taken = calls_service().take_override(ctx)
    if taken is None:
        return _call_not_found(ctx)
    return taken


FixId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=80,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The fix id (the FixPr execution name).",
    ),
]
FIX_ERRORS: dict[int | str, dict[str, Any]] = {
    **BAD_BODY,
    404: _doc("No such fix (or no fix workflow in this deployment)."),
    409: _doc("The fix is not awaiting a decision (decided already, finished or expired)."),
    422: _doc("A parameter or the body does not validate (e.g. no reviewer, no reason)."),
    503: _doc("The decision could not be recorded or delivered; send it again."),
}


def iam_caller(request: Request) -> str | None:
    """The IAM principal that signed the request (HTTP API `requestContext.authorizer.iam`)."""
    event = request.scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    caller = iam.get("userArn") or iam.get("callerId")
    return caller if isinstance(caller, str) and caller else None


async def _decide_fix(
    fix_id: str, body: FixDecisionRequest | None, request: Request, approved: bool
) -> Any:
    body = body or FixDecisionRequest()
    reviewer = iam_caller(request) or body.reviewer
    if not reviewer:
        return _error(
            422,
            "invalid_event",
            "reviewer is required when the request is not IAM-signed",
            [{"field": "reviewer", "message": "required"}],
        )
    if not approved and not body.reason.strip():
        return _error(
            422,
            "invalid_event",
            "a rejection needs a reason",
            [{"field": "reason", "message": "required to reject"}],
        )
    try:
        service = fix_approvals()
        decision = await anyio.to_thread.run_sync(
            functools.partial(service.decide, fix_id, approved, reviewer, body.reason)
        )
    except (FixNotFound, FixesNotConfigured) as e:
        return _error(404, "fix_not_found", str(e))
    except FixConflict as e:
        return _error(409, "fix_conflict", str(e))
    except TransientError as e:
        logger.error("fix decision not delivered", extra={"error": str(e)})
        count("FixDecisionErrors")
        return _error(503, "fix_unavailable", str(e))
    count("FixDecisions", decision=decision.status)
    logger.info("fix decided", extra={"fix_id": fix_id, "status": decision.status})
    return decision


@app.post(
    "/v1/fixes/{fix_id}/approve",
    operation_id="approveFix",
    tags=["fixes"],
    summary="Approve a drafted fix: the FixPr workflow opens its pull request",
    response_model=FixDecision,
    responses=FIX_ERRORS,
)
async def approve_fix(
    fix_id: FixId, request: Request, body: Annotated[FixDecisionRequest | None, Body()] = None
) -> Any:
    """Records the approval (reviewer: the IAM caller's ARN, else the body's `reviewer`) and
    resumes the waiting workflow. A second decision on the same fix is 409."""
    return await _decide_fix(fix_id, body, request, approved=True)


@app.post(
    "/v1/fixes/{fix_id}/reject",
    operation_id="rejectFix",
    tags=["fixes"],
    summary="Reject a drafted fix: the FixPr workflow records who and why and ends",
    response_model=FixDecision,
    responses=FIX_ERRORS,
)
async def reject_fix(
    fix_id: FixId, request: Request, body: Annotated[FixDecisionRequest | None, Body()] = None
) -> Any:
    """Records the rejection with its reason (required) and ends the workflow without a PR."""
    return await _decide_fix(fix_id, body, request, approved=False)


# --- the Lambda entry ---------------------------------------------------------------------------

_loop = asyncio.new_event_loop()
"""One loop for the container's life, the thread's current loop whenever Mangum runs the app:
async clients (the LLM tiers) keep their connection pools across invocations, and Mangum finds
a loop instead of creating one through the deprecated implicit path."""
asyncio.set_event_loop(_loop)
handler = Mangum(app, lifespan="off")


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway HTTP API (payload v2) event in, proxy response out."""
    global _loop
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    if _loop.is_closed():
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)  # something may have run and cleared another loop meanwhile
    return handler(event, context)
