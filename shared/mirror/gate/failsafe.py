"""Decisions the tool gate makes without the judge: spoken lines, the failure mode, not gated.

`fail_safe` decides a whole event without any I/O, for when gating itself broke; the helpers
here also build the service's failure decisions and the strictest-first result.
"""

from __future__ import annotations

from collections.abc import Mapping

from mirror.gate.models import (
    FailureKind,
    GateFailure,
    GateOutcome,
    GateResult,
    GateToolEvent,
    ToolDecision,
    _strictest,
)
from mirror.models import CallContext, MirrorConfig, Reason, ToolCall

DEFAULT_SPOKEN_LINES: dict[str, str] = {
    "no_confirmation_yet": "Before I do that, let me confirm the details with you.",
    "ungrounded_value": "Before I do that, let me double-check the details with you.",
    "wrong_object": "Before I go ahead, let me make sure I have the right one.",
    "wrong_variant": "Before I go ahead, let me confirm the options you'd like.",
    "wrong_payment_method": "Before I go ahead, let me confirm how you'd like to pay.",
    "wrong_amount": "Before I do that, let me double-check the amount with you.",
    "extra_item": "Before I go ahead, let me read back what I have to make sure it's right.",
    "missing_item": "Before I go ahead, let me read back what I have to make sure it's right.",
    "other_user": "Before I do that, let me verify the account details with you.",
    "not_allowed_by_policy": "I'm sorry, I can't do that, but let me see how else I can help.",
    "duplicate_call": "It looks like that's already been done. Let me check before doing it again.",
    "tier_unavailable": "Before I go ahead, can you confirm that's what you'd like me to do?",
    "default": "Before I do that, let me double-check the details with you.",
}
"""Generic wording per reason code, said by the agent instead of running the call. Operators
replace any of them with `GateService(spoken_lines=...)`; `default` covers codes without one."""


def fail_safe(
    event: GateToolEvent,
    config: MirrorConfig,
    kind: FailureKind,
    detail: str,
    spoken_lines: Mapping[str, str] | None = None,
) -> GateOutcome:
    """Decisions without any I/O, for when gating itself broke: every irreversible call gets
    the failure mode, reversible ones are allowed."""
    lines = spoken_lines or DEFAULT_SPOKEN_LINES
    decisions = [
        _failure(call, config, kind, lines) if config.is_irreversible(call) else _not_gated(call)
        for call in event.tool_calls
    ]
    fresh = tuple(call.id for call in event.tool_calls)
    return GateOutcome(
        _result(event.context(), decisions), [GateFailure(kind, None, detail)], fresh
    )


def _line(spoken_lines: Mapping[str, str], code: str) -> str:
    return spoken_lines.get(code) or spoken_lines.get("default") or DEFAULT_SPOKEN_LINES["default"]


def _failure(
    call: ToolCall, config: MirrorConfig, kind: FailureKind, spoken_lines: Mapping[str, str]
) -> ToolDecision:
    hold = config.tool_gate_failure_mode == "hold"
    outcome = "held for confirmation" if hold else "allowed (tool_gate_failure_mode: allow)"
    reason = Reason(
        check="gate_failure",
        tier="tier0",
        code="tier_unavailable",
        score=1.0,
        evidence=f"the gate could not decide ({kind}); {call.name} {outcome}",
        tool_call_id=call.id,
    )
    return ToolDecision(
        tool_call_id=call.id,
        name=call.name,
        decision="hold" if hold else "allow",
        irreversible=True,
        reasons=[reason],
        spoken_line=_line(spoken_lines, "tier_unavailable") if hold else None,
        decided_by="failure_mode",
        failure=kind,
    )


def _not_gated(call: ToolCall) -> ToolDecision:
    return ToolDecision(
        tool_call_id=call.id,
        name=call.name,
        decision="allow",
        irreversible=False,
        decided_by="not_gated",
    )


def _result(ctx: CallContext, decisions: list[ToolDecision]) -> GateResult:
    top = _strictest(decisions)
    return GateResult(
        call_id=ctx.call_id,
        tenant_id=ctx.tenant_id,
        decision=top.decision,
        spoken_line=top.spoken_line,
        decisions=decisions,
    )
