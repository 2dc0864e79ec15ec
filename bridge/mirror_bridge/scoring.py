"""The session's one client of the three functions: typed requests in, typed answers out.

Each request is built from the core's own event model (`ScoreTurnEvent`, `GateToolEvent`,
`CorrectionEvent`) and handed to the `FunctionTransport` as one JSON-ready dict (which the
transport serializes once); each answer is validated once into `Verdict`, `GateResult` or
`CorrectionResult`. Anything else - a timeout, a transport or function error, an
`{"error": ...}` answer, an answer that does not validate - comes back as a `ScoringFailure`
value with its kind, never as a dict passed on and never as an exception: the session applies
its failure rules (speech fails open, irreversible tools hold) on that value alone.

The requests are validated from parts that are mostly validated already (the agent's
`MirrorTurn`/`MirrorToolGate` and their tool-call models, which are taken as they are): ~2 us
a turn (`model_construct` measured ~70 us: it fills defaults in Python). Only the fields that
were given are sent (`exclude_unset`: an absent `history` means "use the stored one").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from mirror.correction import CorrectionEvent, CorrectionResult
from mirror.gate import FailureKind, GateResult, GateToolEvent
from mirror.models import ScoreTurnEvent, Verdict
from mirror_bridge.agent_protocol import MirrorToolGate, MirrorTurn
from mirror_bridge.transport import (
    GATE_TOOL,
    GENERATE_CORRECTION,
    SCORE_TURN,
    ErrorKind,
    FunctionError,
    FunctionTransport,
)

logger = logging.getLogger(__name__)

FailureKindName = ErrorKind | Literal["invalid_request"]


@dataclass(frozen=True, slots=True)
class ScoringFailure:
    """A function call that produced no usable answer. `kind` is the transport's
    (`timeout`, `function_error`, `error_response`, `invalid_response`, `transport`) or
    `invalid_request` (the bridge could not build a valid request); `detail` is for logs."""

    function: str
    kind: FailureKindName
    detail: str

    def __str__(self) -> str:
        return f"{self.function}: {self.kind}: {self.detail}"

    @property
    def gate_failure(self) -> FailureKind:
        """The core's failure kind for the gate's fail-safe (`mirror.gate.fail_safe`)."""
        if self.kind == "timeout":
            return "tier_timeout"
        if self.kind == "error_response":
            return "store_unavailable" if self.detail == "state_unavailable" else "invalid_event"
        if self.kind == "invalid_request":
            return "invalid_event"
        return "internal_error"


@dataclass(frozen=True, slots=True)
class CallScope:
    """Who the requests are for: the call, its tenant and the tenant's overrides (None: the
    functions' configured policies and irreversible tools)."""

    call_id: str
    tenant_id: str
    policies: list[str] | None = None
    irreversible_tools: list[str] | None = None


def _tenant_fields(scope: CallScope) -> dict[str, Any]:
    fields: dict[str, Any] = {"call_id": scope.call_id, "tenant_id": scope.tenant_id}
    if scope.policies is not None:
        fields["policies"] = list(scope.policies)
    if scope.irreversible_tools is not None:
        fields["irreversible_tools"] = list(scope.irreversible_tools)
    return fields


def score_request(scope: CallScope, turn: MirrorTurn, turn_id: str) -> ScoreTurnEvent:
    return ScoreTurnEvent.model_validate(
        {
            **_tenant_fields(scope),
            "turn_id": turn_id,
            "customer_text": turn.customer_text,
            "agent_text": turn.agent_text,
            "tool_calls": turn.tool_calls,
            "tool_results": turn.tool_results,
        }
    )


def gate_request(scope: CallScope, request: MirrorToolGate) -> GateToolEvent:
    return GateToolEvent.model_validate(
        {
            **_tenant_fields(scope),
            "customer_text": request.customer_text,
            "agent_text": request.agent_text,
            "tool_calls": request.tool_calls,
            "tool_results": request.tool_results,
        }
    )


def correction_request(
    scope: CallScope, turn: MirrorTurn, turn_id: str, verdict: Verdict
) -> CorrectionEvent:
    """Validated (once per intervention): the verdict must be a correctable one."""
    return CorrectionEvent.model_validate(
        {
            "call_id": scope.call_id,
            "tenant_id": scope.tenant_id,
            "turn_id": turn_id,
            "customer_text": turn.customer_text,
            "agent_text": turn.agent_text,
            "verdict": verdict.model_dump(),
            **({"policies": list(scope.policies)} if scope.policies is not None else {}),
        }
    )


class ScoringClient:
    """ScoreTurn, GateTool and GenerateCorrection for one call, over a `FunctionTransport`."""

    def __init__(
        self,
        transport: FunctionTransport,
        scope: CallScope,
        *,
        score_timeout_s: float = 2.0,
        gate_timeout_s: float = 3.0,
        correction_timeout_s: float = 4.0,
    ) -> None:
        self.transport = transport
        self.scope = scope
        self.score_timeout_s = score_timeout_s
        self.gate_timeout_s = gate_timeout_s
        self.correction_timeout_s = correction_timeout_s

    async def score(self, turn: MirrorTurn, turn_id: str) -> Verdict | ScoringFailure:
        try:
            request = score_request(self.scope, turn, turn_id)
        except ValidationError as e:
            return ScoringFailure(SCORE_TURN, "invalid_request", _errors(e))
        return await self._call(SCORE_TURN, request, Verdict, self.score_timeout_s)

    async def gate(self, request: MirrorToolGate) -> GateResult | ScoringFailure:
        try:
            event = self.gate_event(request)
        except ValidationError as e:
            return ScoringFailure(GATE_TOOL, "invalid_request", _errors(e))
        return await self._call(GATE_TOOL, event, GateResult, self.gate_timeout_s)

    def gate_event(self, request: MirrorToolGate) -> GateToolEvent:
        """Raises ValidationError when the call's own parts do not make a valid event."""
        return gate_request(self.scope, request)

    async def correct(
        self, turn: MirrorTurn, turn_id: str, verdict: Verdict
    ) -> CorrectionResult | ScoringFailure:
        try:
            request = correction_request(self.scope, turn, turn_id, verdict)
        except ValidationError as e:
            return ScoringFailure(GENERATE_CORRECTION, "invalid_request", _errors(e))
        return await self._call(
            GENERATE_CORRECTION, request, CorrectionResult, self.correction_timeout_s
        )

    async def _call[M: BaseModel](
        self, name: str, request: BaseModel, answer_type: type[M], timeout_s: float
    ) -> M | ScoringFailure:
        payload = request.model_dump(mode="json", exclude_unset=True)
        try:
            answer = await self.transport.invoke(name, payload, timeout_s)
        except FunctionError as e:
            return ScoringFailure(name, e.kind, e.detail)
        except Exception as e:  # a transport that broke its promise (to raise only
            # FunctionError) must not leave the request unanswered: a failure like any other,
            # so a tool gate holds irreversible calls (issue 13, item 4)
            logger.warning("%s: the transport raised %s", name, type(e).__name__, exc_info=e)
            return ScoringFailure(name, "transport", f"{type(e).__name__}: {e}"[:300])
        try:
            return answer_type.model_validate(answer)
        except ValidationError as e:
            return ScoringFailure(name, "invalid_response", _errors(e))


def _errors(e: ValidationError) -> str:
    """Where and what, never the values (they may hold the caller's words)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
        for err in e.errors(include_input=False)[:3]
    )[:300]
