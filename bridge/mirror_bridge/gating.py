"""The tool gate: `mirror.tool_gate` -> GateTool -> `mirror.tool_decision`. When GateTool gives
no usable answer (failure, timeout, `{"error"}` answer, an answer that does not validate) the
core's own fail-safe decides (`mirror.gate.fail_safe`): irreversible calls get the tenant's
`tool_gate_failure_mode` (hold by default), reversible ones run."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from mirror.gate import DEFAULT_SPOKEN_LINES, FailureKind, GateResult, ToolDecision, fail_safe
from mirror_bridge.agent_protocol import MirrorToolDecision, MirrorToolGate
from mirror_bridge.scoring import ScoringFailure
from mirror_bridge.session_state import SessionState

logger = logging.getLogger("mirror_bridge.session")


class GateMixin(SessionState):
    async def _gate(self, request: MirrorToolGate) -> None:
        self.counts["gate_requests"] += 1
        result = await self.scoring.gate(request)
        if isinstance(result, ScoringFailure):
            self.counts["gate_failures"] += 1
            logger.warning(
                "GateTool failed: failure mode applies",
                extra={"call_id": self.ctx.call_id, "error": str(result)},
            )
            result = self._gate_fail_safe(request, result)
        self.counts[f"gate_{result.decision}"] += 1
        await self._tell_agent(MirrorToolDecision(request_id=request.request_id, result=result))

    def _gate_fail_safe(self, request: MirrorToolGate, failure: ScoringFailure) -> GateResult:
        kind = failure.gate_failure
        try:
            event = self.scoring.gate_event(request)
            result = fail_safe(event, self.config.mirror, kind, str(failure)).result
        except ValidationError:  # the call's own context does not validate: hold every call
            self.counts["gate_fail_safe_invalid"] += 1
            result = self._hold_all(request, kind)
        # every field on the wire, defaults included (as GateTool's own answers have them)
        return GateResult.model_validate(result.model_dump())

    def _hold_all(self, request: MirrorToolGate, kind: FailureKind) -> GateResult:
        line = DEFAULT_SPOKEN_LINES["tier_unavailable"]
        decisions = [
            ToolDecision(
                tool_call_id=call.id,
                name=call.name,
                decision="hold",
                irreversible=True,
                spoken_line=line,
                decided_by="failure_mode",
                failure=kind,
            )
            for call in request.tool_calls
        ]
        return GateResult(
            call_id=self.ctx.call_id,
            tenant_id=self.ctx.tenant_id,
            decision="hold",
            spoken_line=line,
            decisions=decisions,
        )
