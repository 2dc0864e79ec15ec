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
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mirror.calls import CallEnded, CallState, OverrideNote
from mirror.correction import CorrectionEvent, CorrectionResult, llm_timeout_from_env
from mirror.errors import error_response, field_errors, invalid_message
from mirror.fixes.approval import FixDecision, FixDecisionRequest
from mirror.gate import GateResult, GateToolEvent
from mirror.models import CallContext, ScoreTurnEvent, Verdict
from mirror.observability import count, function_metrics, traced
from mirror.usecases.authz import TenantAccess
from mirror.usecases.calls import end_call as end_call_usecase
from mirror.usecases.calls import read_call
from mirror.usecases.calls import take_override as take_override_usecase
from mirror.usecases.corrections import generate_correction as correct
from mirror.usecases.deps import Deps
from mirror.usecases.emit import (
    emit_call,
    emit_correction,
    emit_failure,
    emit_fix,
    emit_gate,
    emit_verdict,
    flushed_metrics,
)
from mirror.usecases.failure import Failure
from mirror.usecases.fixes import decide_fix
from mirror.usecases.gate import gate_tools
from mirror.usecases.score import ascore_turn

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


MAX_BODY_BYTES = _positive_int_env(MAX_BODY_ENV, 1_048_576)
"""A turn is a few kilobytes; a stateless caller's full history rarely reaches 1 MiB."""

deps = Deps(
    logger=logger,
    on_first_client=lambda: tracer.patch(["botocore"]),
    llm_timeout_s=llm_timeout_from_env(),  # a bad CORRECTION_LLM_TIMEOUT_S fails cold start
)
"""This container's services (one store, one DynamoDB client for all), built on first use, and
its one event loop; swap them with `deps.using(...)`. The gate runs under `deps.gate_lock`:
GateService is not thread-safe with idempotency on, and a local server may run requests in
parallel."""
BASE_CONFIG = deps.base_config
ACCESS = TenantAccess.from_env()
"""Who may act for which tenant, and who decides fixes (`mirror.usecases.authz`); a malformed
MIRROR_TENANT_PRINCIPALS or MIRROR_FIX_REVIEWERS fails the cold start."""


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
        " `forbidden`, `call_not_found`, `not_found`, `method_not_allowed`, `state_unavailable` or"
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
    403: _doc(
        "The caller may not act for the request's tenant (MIRROR_TENANT_PRINCIPALS), or the"
        " request carries no IAM identity."
    ),
    422: _doc("The event does not validate; `fields` names each bad field."),
}
BAD_PARAMS: dict[int | str, dict[str, Any]] = {
    403: _doc("The request carries no IAM identity."),
    404: _doc(
        "No such call (or it expired), or a call of a tenant the caller may not act for: the"
        " same answer, so call ids do not leak across tenants."
    ),
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


def _failure(failure: Failure) -> JSONResponse:
    """A use case's `Failure` with its HTTP status (`mirror.usecases.failure.HTTP_STATUS`)."""
    return JSONResponse(failure.response(), failure.status)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # no header: the body is read as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _request_fields(errors: Sequence[Any]) -> tuple[bool, list[dict[str, str]]]:
    """(the body is not JSON at all, one `{field, message}` per error); never the input's keys
    or values (`mirror.errors.field_errors`: an unknown key is `<extra>`)."""
    malformed = False
    fields: list[dict[str, str]] = []
    for err in errors:
        loc = list(err.get("loc", ())) or ["body"]
        where, rest = str(loc[0]), loc[1:]
        if err.get("type") == "json_invalid":
            malformed = True
            # ctx.error is the JSON decoder's own text ("Expecting value"), never the body's
            detail = (err.get("ctx") or {}).get("error")
            position = f" at position {rest[0]}" if rest and isinstance(rest[0], int) else ""
            fields.append({"field": "body", "message": f"JSON decode error: {detail}{position}"})
        elif where == "body":
            [field] = field_errors([err], strip=1)
            fields.append(field if rest else {**field, "field": "body"})
        else:
            # a query/path/header parameter: FastAPI reports declared parameters only, so its
            # name is the route's; what follows it is checked like a body path
            [field] = field_errors([{**err, "loc": loc[2:]}])
            name = ".".join([where, *(str(p) for p in rest[:1])])
            tail = "" if field["field"] == "(event)" else f".{field['field']}"
            fields.append({"field": name + tail, "message": field["message"]})
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
    logger.warning("invalid request", extra={"fields": fields})
    return _error(422, "invalid_event", invalid_message(fields), fields)


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


def _refusal(
    request: Request, tenant_id: str, operation: str, call: CallContext | None = None
) -> JSONResponse | None:
    """None when the IAM caller may act for `tenant_id` (`ACCESS`); else the refusal, counted
    and logged: 403, or on a call's own routes (`call`) the 404 of a missing call."""
    principal = iam_caller(request)
    if call is not None:
        refused = ACCESS.authorize_call(principal, call)
    else:
        refused = ACCESS.authorize_tenant(principal, tenant_id)
    if refused is None:
        return None
    with flushed_metrics() as metrics_:
        emit_failure(metrics_, logger, refused, operation)
    return _failure(refused)


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
    ctx = event.context()
    if (refused := _refusal(request, ctx.tenant_id, "ScoreTurn")) is not None:
        return refused
    with logger.append_context_keys(call_id=ctx.call_id, tenant_id=ctx.tenant_id):
        scored = await ascore_turn(deps, event, request_id(request))
        with flushed_metrics() as metrics_:
            if isinstance(scored, Failure):
                emit_failure(metrics_, logger, scored, "ScoreTurn")
                return _failure(scored)
            emit_verdict(metrics_, logger, scored)
    response.headers[TURN_ID_HEADER] = header_value(scored.turn_id)
    response.headers[REPLAYED_HEADER] = "true" if scored.replayed else "false"
    return scored.verdict


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
    ctx = event.context()
    if (refused := _refusal(request, ctx.tenant_id, "GateTool")) is not None:
        return refused
    with logger.append_context_keys(call_id=ctx.call_id, tenant_id=ctx.tenant_id):
        # synchronous (its remote tiers run their own event loop): a worker thread
        outcome = await anyio.to_thread.run_sync(
            functools.partial(gate_tools, deps, event, _lambda_context(request))
        )
        with flushed_metrics() as metrics_:
            if isinstance(outcome, Failure):  # the event's own policies do not compile
                emit_failure(metrics_, logger, outcome, "GateTool")
                return _failure(outcome)
            emit_gate(metrics_, logger, outcome)
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
    ctx = event.context()
    if (refused := _refusal(request, ctx.tenant_id, "GenerateCorrection")) is not None:
        return refused
    context = _lambda_context(request)
    remaining = None
    if context is not None:
        remaining = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    with logger.append_context_keys(call_id=ctx.call_id, tenant_id=ctx.tenant_id):
        outcome = await correct(
            deps, event, request_id(request), remaining_s=remaining, reserve_s=RESERVE_S
        )
        with flushed_metrics() as metrics_:
            emit_correction(metrics_, logger, outcome)
    return outcome.generated.result


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


def _call_outcome(outcome: Any) -> Any:
    """A calls use case's model, or its `Failure` counted, logged and answered."""
    if isinstance(outcome, Failure):
        with flushed_metrics() as metrics_:
            emit_failure(metrics_, logger, outcome, "Calls")
        return _failure(outcome)
    return outcome


@app.get(
    "/v1/calls/{call_id}",
    operation_id="getCall",
    tags=["calls"],
    summary="A call's state: metadata, history and verdicts",
    response_model=CallState,
    responses={**BAD_PARAMS, **STORE_DOWN},
)
async def get_call(call_id: CallId, request: Request, tenant_id: TenantQuery = None) -> Any:
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id or "default")
    if (refused := _refusal(request, ctx.tenant_id, "Calls", ctx)) is not None:
        return refused
    return _call_outcome(read_call(deps, ctx))


@app.post(
    "/v1/calls/{call_id}/end",
    operation_id="endCall",
    tags=["calls"],
    summary="Mark a call ended (idempotent)",
    response_model=CallEnded,
    responses={**BAD_PARAMS, **STORE_DOWN},
)
async def end_call(call_id: CallId, request: Request, tenant_id: TenantQuery = None) -> Any:
    """Records `ended_at` in the call's metadata. Ending it again returns the same result;
    an unknown call is 404 and nothing is created for it."""
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id or "default")
    if (refused := _refusal(request, ctx.tenant_id, "Calls", ctx)) is not None:
        return refused
    ended = end_call_usecase(deps, ctx)
    if not isinstance(ended, Failure):
        emit_call(logger, ended)
    return _call_outcome(ended)


@app.post(
    "/v1/calls/{call_id}/override:take",
    operation_id="takeOverride",
    tags=["calls"],
    summary="Take the call's one-shot override note (read once)",
    response_model=OverrideNote,
    responses={**BAD_PARAMS, **STORE_DOWN},
)
async def take_override(call_id: CallId, request: Request, tenant_id: TenantQuery = None) -> Any:
    """The note GenerateCorrection stored for the agent's next turn, deleted as it is read:
    call it before generating that turn. `note` is null when none is pending; an unknown call
    is 404."""
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id or "default")
    if (refused := _refusal(request, ctx.tenant_id, "Calls", ctx)) is not None:
        return refused
    return _call_outcome(take_override_usecase(deps, ctx))


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
    # the IAM caller, if it is a fix reviewer (never the agents' principals unless listed);
    # the body's `reviewer` only in local mode (`mirror.usecases.authz`)
    reviewer = ACCESS.reviewer(iam_caller(request), body.reviewer)
    if isinstance(reviewer, Failure):
        with flushed_metrics() as metrics_:
            emit_failure(metrics_, logger, reviewer, "FixDecision")
        return _failure(reviewer)
    decision = await anyio.to_thread.run_sync(
        functools.partial(decide_fix, deps, fix_id, approved, reviewer, body.reason)
    )
    if isinstance(decision, Failure):
        with flushed_metrics() as metrics_:
            emit_failure(metrics_, logger, decision, "FixDecision")
        return _failure(decision)
    emit_fix(logger, fix_id, decision)
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
    """Records the approval (reviewer: the IAM caller's ARN, which must match
    MIRROR_FIX_REVIEWERS; the body's `reviewer` in local mode only) and resumes the waiting
    workflow. A second decision on the same fix is 409."""
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

asyncio.set_event_loop(deps.loop())
"""The container's one loop (`Deps.loop`), the thread's current loop whenever Mangum runs the
app: async clients (the LLM tiers) keep their connection pools across invocations, and Mangum
finds a loop instead of creating one through the deprecated implicit path."""
handler = Mangum(app, lifespan="off")


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway HTTP API (payload v2) event in, proxy response out."""
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    asyncio.set_event_loop(deps.loop())  # something may have run and cleared another loop
    return handler(event, context)
