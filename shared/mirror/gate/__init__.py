"""The tool gate: decide each planned tool call before it runs (allow, block or hold).

A call that changes the world cannot be taken back, so every irreversible call goes through the
gate, whatever the speech cooldown says. What is irreversible is the operator's configuration
(`MirrorConfig.irreversible_tools`): a request may add gated tools, never remove them. Per
irreversible call, inside one idempotency record keyed by (tenant, call id, tool call id), so a
retried request gets the stored decision:

1. an identical call (same name, same canonical arguments) already allowed in this call is
   blocked as a duplicate, unless this one says `retry_of` that call AND a tool result for that
   id (`tool_call_id`, `is_error: true`, in the event's `tool_results` or the history) shows
   the earlier one failed: the agent's word alone is no evidence;
2. the judge decides: Tier 0, then the remote tiers when Tier 0 is silent; it runs at most once
   per request, for all the calls that need it, and not at all when every call is a replay;
3. an allowed call claims its fingerprint with a conditional write: of two concurrent identical
   calls only one is allowed, the other is blocked as a duplicate.

Nothing raises for a failure: an irreversible call the gate cannot decide (a remote tier timed
out or failed, the store is unreachable, ...) gets `tool_gate_failure_mode` (`hold` by default);
every failure is reported in `GateOutcome.failures` for metrics. Reversible calls are allowed
without any I/O. Importing this module does no I/O and imports neither boto3 nor Powertools.

The package: `models` (the event, decisions and result), `service` (`GateService`), `judgement`
(the judge, run at most once per request), `failsafe` (decisions without the judge, spoken
lines), `idempotency` (the Powertools records). Everything is re-exported here.
"""

from __future__ import annotations

from mirror.gate.failsafe import (
    DEFAULT_SPOKEN_LINES,
    _failure,
    _line,
    _not_gated,
    _result,
    fail_safe,
)
from mirror.gate.idempotency import (
    IDEMPOTENCY_KEY_PREFIX,
    IDEMPOTENCY_PK,
    IDEMPOTENCY_TTL_S,
    IN_PROGRESS_BUDGET_S,
    _Deadline,
    idempotency_layer,
)
from mirror.gate.judgement import (
    _TIER_FAILURES,
    _Job,
    _JudgeError,
    _Judgement,
    _ObservedTier,
)
from mirror.gate.models import (
    _ORDER,
    _STRICT,
    Decider,
    FailureKind,
    GateDecision,
    GateFailure,
    GateOutcome,
    GateResult,
    GateToolEvent,
    PlannedToolCall,
    ToolDecision,
    _strictest,
)
from mirror.gate.service import GateService

__all__ = [
    "DEFAULT_SPOKEN_LINES",
    "IDEMPOTENCY_KEY_PREFIX",
    "IDEMPOTENCY_PK",
    "IDEMPOTENCY_TTL_S",
    "IN_PROGRESS_BUDGET_S",
    "Decider",
    "FailureKind",
    "GateDecision",
    "GateFailure",
    "GateOutcome",
    "GateResult",
    "GateService",
    "GateToolEvent",
    "PlannedToolCall",
    "ToolDecision",
    "fail_safe",
    "idempotency_layer",
    # package-private, re-exported for code that reached into the old module
    "_Deadline",
    "_JudgeError",
    "_Job",
    "_Judgement",
    "_ORDER",
    "_ObservedTier",
    "_STRICT",
    "_TIER_FAILURES",
    "_failure",
    "_line",
    "_not_gated",
    "_result",
    "_strictest",
]
