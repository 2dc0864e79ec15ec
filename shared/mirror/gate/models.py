"""The tool gate's boundary models: the GateTool event, the per-call decisions and the result.

Pydantic at the boundary (`PlannedToolCall`, `GateToolEvent`, `ToolDecision`, `GateResult`: their
JSON shape is the API's), plain dataclasses inside (`GateFailure`, `GateOutcome`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mirror.models import (
    MAX_POLICIES,
    MAX_TOOL_CALLS,
    CallContext,
    Identifier,
    Reason,
    TenantId,
    ToolCall,
    ToolMessage,
    Turn,
)

GateDecision = Literal["allow", "block", "hold"]
FailureKind = Literal[
    "tier_timeout",  # a remote tier did not answer within its timeout
    "tier_error",  # a remote tier raised
    "judge_error",  # the judge itself raised (a bug): nothing decided the call
    "store_unavailable",  # the state store or the idempotency records could not be used
    "in_progress",  # another delivery of the same tool call is being decided right now
    "id_conflict",  # a tool call id came back with other arguments than when it was decided
    "internal_error",  # anything else that escaped; the handler's last resort
    "invalid_event",  # the event did not parse (counted by the handler only)
]
Decider = Literal["tier0", "tier1", "tier2", "duplicate_check", "failure_mode", "not_gated"]

_ORDER: dict[str, int] = {"allow": 0, "hold": 1, "block": 2}


_STRICT = ConfigDict(extra="forbid", frozen=True)


class PlannedToolCall(ToolCall):
    """A tool call the agent wants to run now."""

    model_config = _STRICT

    retry_of: Identifier | None = None
    """The id of an earlier call with the same name and arguments that failed: this one
    retries it and is not a duplicate, provided a tool result for that id (`tool_call_id`,
    `is_error: true`) in the event's `tool_results` or the history shows the failure. Without
    it (or without that evidence), a second identical irreversible call in the same call is
    blocked once the first was allowed."""

    @model_validator(mode="after")
    def _retries_another_call(self) -> PlannedToolCall:
        if self.retry_of == self.id:
            raise ValueError("retry_of names the earlier call, not this one")
        return self

    def tool_call(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.name, args=self.args, irreversible=self.irreversible)


class GateToolEvent(Turn):
    """The GateTool event: the turn context (as in ScoreTurn) and the calls the agent plans."""

    tool_calls: list[PlannedToolCall] = Field(min_length=1, max_length=MAX_TOOL_CALLS)
    call_id: Identifier
    tenant_id: TenantId | None = None
    policies: list[Annotated[str, Field(max_length=4_000)]] | None = Field(
        default=None, max_length=MAX_POLICIES
    )
    irreversible_tools: list[Identifier] | None = None
    tool_results: list[ToolMessage] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)
    """Tool outputs since the agent's previous turn; used with stored history (no `history`)."""

    def context(self) -> CallContext:
        return CallContext(call_id=self.call_id, tenant_id=self.tenant_id or "default")


class ToolDecision(BaseModel):
    """What the agent does with one planned call."""

    model_config = ConfigDict(extra="forbid")

    tool_call_id: str
    name: str
    decision: GateDecision
    irreversible: bool
    reasons: list[Reason] = Field(default_factory=list)
    """The findings about this call, strongest first (advisory ones included)."""
    spoken_line: str | None = None
    """What the agent says to the caller instead of running the call (block and hold only)."""
    decided_by: Decider
    failure: FailureKind | None = None
    """Set when a failure rule decided the call: held, or allowed by `tool_gate_failure_mode`."""

    @model_validator(mode="after")
    def _consistent(self) -> ToolDecision:
        if (self.decision == "allow") != (self.spoken_line is None):
            raise ValueError("block and hold carry a spoken line; allow does not")
        return self


class GateResult(BaseModel):
    """The response: one decision per planned call, in the event's order, and the strictest."""

    model_config = ConfigDict(extra="forbid")

    call_id: str
    tenant_id: str
    decision: GateDecision
    """`block` if any call is blocked, else `hold` if any is held, else `allow`."""
    spoken_line: str | None = None
    """The spoken line of the first call with that decision (None for allow)."""
    decisions: list[ToolDecision]

    @model_validator(mode="after")
    def _decision_is_the_strictest(self) -> GateResult:
        if not self.decisions:
            raise ValueError("a gate result decides at least one call")
        if self.decision != _strictest(self.decisions).decision:
            raise ValueError("decision must be the strictest of the calls' decisions")
        return self


@dataclass(frozen=True, slots=True)
class GateFailure:
    """One failure met while gating (for metrics and logs; `detail` carries no caller data)."""

    kind: FailureKind
    tool_call_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class GateOutcome:
    result: GateResult
    failures: list[GateFailure]
    fresh: tuple[str, ...]
    """Ids of the calls decided by this request; the others were replayed from their record."""


def _strictest(decisions: Sequence[ToolDecision]) -> ToolDecision:
    """The first decision of the strictest kind (max keeps the first of equals)."""
    return max(decisions, key=lambda d: _ORDER[d.decision])
