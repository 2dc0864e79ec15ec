"""Boundary models: what comes in (turns, config) and what goes out (verdicts).

pydantic v2 at the edges; the judge works on these objects directly but never mutates them.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    field_validator,
    model_validator,
)

from mirror.llm.settings import LLMSettings, Tier1Settings
from mirror.policy import compile_policies

MAX_TEXT_CHARS = 8_000
"""One utterance. A phone turn is a few sentences; 8k characters is several minutes of speech."""
MAX_TOOL_OUTPUT_CHARS = 200_000
MAX_HISTORY_MESSAGES = 500
MAX_TOOL_CALLS = 16
MAX_POLICIES = 200
MAX_ARGS_DEPTH = 32
"""How deep a tool call's `args` may nest (the args object itself is level 1). The stores'
reader (pydantic's JSON parser) stops at 200 levels, and a stored message wraps the args in
four more (message, tool_calls list, call, args): bounding the input far below that is what
keeps every stored message readable. Real tool arguments nest a handful of levels."""
MAX_ARGS_BYTES = 64_000
"""A tool call's `args` as compact JSON (UTF-8), at most: room for a large order (48 KB) while a
stored message stays far below DynamoDB's 400 KB item."""

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
TenantId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
"""Tenant ids prefix every state key, so they may not contain the key separator '#'."""

Decision = Literal["allow", "intervene", "block"]
Tier = Literal["tier0", "tier1", "tier2"]
ReasonCode = Literal[
    "clean",
    "wrong_object",
    "wrong_variant",
    "wrong_payment_method",
    "wrong_amount",
    "extra_item",
    "missing_item",
    "other_user",
    "not_allowed_by_policy",
    "no_confirmation_yet",
    "ungrounded_value",
    "tier_unavailable",
    "duplicate_call",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _check_args(args: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments must be JSON values (str keys; str, finite numbers, bool, null, lists and
    objects), at most `MAX_ARGS_DEPTH` levels deep and `MAX_ARGS_BYTES` as compact JSON.

    One iterative walk (no recursion, whatever the input's depth) that stops at the first
    violation; the size is counted as it goes (strings as UTF-8 plus quotes, numbers as their
    text, one byte per separator), so a hostile value is refused before it is serialised."""
    size = 0
    stack: list[tuple[Any, int]] = [(args, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            size += len(value.encode()) + 2
        elif isinstance(value, bool) or value is None:
            size += 5
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("tool call args must be JSON: numbers must be finite")
            size += len(repr(value))
        elif isinstance(value, dict | list):
            if depth > MAX_ARGS_DEPTH:
                raise ValueError(f"tool call args nest deeper than {MAX_ARGS_DEPTH} levels")
            size += 2 + len(value)
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise ValueError("tool call args must be JSON: object keys are strings")
                    size += len(key.encode()) + 3
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        else:
            raise ValueError(f"tool call args must be JSON, not {type(value).__name__}")
        if size > MAX_ARGS_BYTES:
            raise ValueError(f"tool call args are over {MAX_ARGS_BYTES} bytes as JSON")
    return args


ToolArgs = Annotated[dict[str, Any], AfterValidator(_check_args)]
"""A tool call's arguments: JSON values bounded in depth and size (`_check_args`)."""


class ToolCall(BaseModel):
    """A tool call the agent made or plans to make."""

    model_config = _STRICT

    id: Identifier
    name: Identifier
    args: ToolArgs = Field(default_factory=dict)
    irreversible: bool | None = None
    """`true` gates this call although the config's irreversible tool list does not name it;
    `false` or None leave it to the list: the supervised agent may add gating, never remove
    it (the operator's configuration decides what is irreversible)."""


ToolCalls = Annotated[
    Sequence[ToolCall], GetPydanticSchema(lambda _source, handler: handler(list[ToolCall]))
]
"""A turn's tool calls: a list, read-only to type checkers so that an event may narrow the item
type (GateTool's `PlannedToolCall`s). Validated and serialised exactly as `list[ToolCall]`:
pydantic's own `Sequence` schema goes through Python functions (about twice the cost per turn)
and turns a tuple input into a tuple."""


class CustomerMessage(BaseModel):
    model_config = _STRICT
    role: Literal["customer"]
    text: Text


class AgentMessage(BaseModel):
    model_config = _STRICT
    role: Literal["agent"]
    text: Text = ""
    tool_calls: ToolCalls = Field(default_factory=list, max_length=MAX_TOOL_CALLS)


class ToolMessage(BaseModel):
    model_config = _STRICT
    role: Literal["tool"]
    name: Identifier
    text: Annotated[str, Field(max_length=MAX_TOOL_OUTPUT_CHARS)]
    tool_call_id: Identifier | None = None
    """The id of the tool call this is the output of."""
    is_error: bool = False
    """The tool call failed: with `tool_call_id`, the evidence a GateTool `retry_of` needs."""


Message = Annotated[CustomerMessage | AgentMessage | ToolMessage, Field(discriminator="role")]


class Turn(BaseModel):
    """One candidate agent turn and the conversation before it (the eval case's input fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_text: Text = ""
    agent_text: Text = ""
    tool_calls: ToolCalls = Field(default_factory=list, max_length=MAX_TOOL_CALLS)
    history: list[Message] = Field(default_factory=list, max_length=MAX_HISTORY_MESSAGES)

    @field_validator("tool_calls")
    @classmethod
    def _unique_call_ids(cls, calls: Sequence[ToolCall]) -> Sequence[ToolCall]:
        ids = [c.id for c in calls]
        if len(set(ids)) != len(ids):
            raise ValueError("tool call ids must be unique within a turn")
        return calls


class CallContext(BaseModel):
    model_config = _STRICT

    call_id: Identifier
    tenant_id: TenantId = "default"


class TierTimeouts(BaseModel):
    """Seconds each remote tier may take before its failure rule applies."""

    model_config = _STRICT

    tier1_s: float = Field(0.25, gt=0, le=30)
    tier2_s: float = Field(1.5, gt=0, le=60)


DEFAULT_IRREVERSIBLE_TOOLS: tuple[str, ...] = (
    "book_*",
    "cancel_*",
    "place_order",
    "submit_*",
    "refund*",
    "issue_*",
    "charge_*",
    "pay*",
    "transfer_funds",
    "send_money",
    "send_certificate",
    "delete_*",
    "modify_*",
    "update_*",
    "exchange_*",
    "return_*",
)
"""Glob patterns for tools that change state. Operators replace the list per tenant."""


_DERIVED = ("fingerprint", "irreversible_pattern", "irreversible_by_name", "event_overlays")
"""MirrorConfig's cached properties."""
_NAME_MEMO_SIZE = 1024


class MirrorConfig(BaseModel):
    """A tenant's configuration. Every field is read by the judge, the store or the service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: TenantId = "default"
    policies: list[Annotated[str, Field(max_length=4_000)]] = Field(
        default_factory=list, max_length=MAX_POLICIES
    )
    """Operator rules: `FORBID`/`REQUIRE` directives (Tier 0) and prose (the LLM tiers)."""
    judging_prompt: Annotated[str, Field(max_length=20_000)] | None = None
    """Replaces the compiled judging prompt; may use the slots in `mirror.prompt.SLOTS`."""
    intervention_threshold: float = Field(0.7, ge=0.0, le=1.0)
    check_scores: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=dict)
    """Per-check score overrides, e.g. {"confirmation": 0.6} makes that check advisory at 0.7."""
    cooldown_s: float = Field(10.0, ge=0.0, le=3_600)
    timeouts: TierTimeouts = Field(default_factory=TierTimeouts)
    irreversible_tools: list[Identifier] = Field(
        default_factory=lambda: list(DEFAULT_IRREVERSIBLE_TOOLS)
    )
    tool_gate_failure_mode: Literal["hold", "allow"] = "hold"
    """What an irreversible call gets when a remote tier cannot decide in time."""
    buffer_text: Annotated[str, Field(min_length=1, max_length=300)] = (
        "Let me make sure I got that right."
    )
    history_limit: int = Field(200, ge=1, le=MAX_HISTORY_MESSAGES)
    """Messages kept per call in the state store (oldest dropped first)."""
    state_ttl_s: int = Field(7 * 24 * 3600, ge=60, le=366 * 24 * 3600)
    tier1: Tier1Settings | None = None
    """The Tier 1 zero-shot classifier (`mirror.llm.build_remote_tiers`); None: no Tier 1."""
    llm: LLMSettings | None = None
    """The Tier 2 LLM judge (`mirror.llm.build_remote_tiers`); None: no Tier 2."""

    @field_validator("policies")
    @classmethod
    def _directives_parse(cls, policies: list[str]) -> list[str]:
        compile_policies(policies)  # raises PolicyError (a ValueError) naming the policy
        return policies

    @cached_property
    def fingerprint(self) -> str:
        """The config as JSON: the key judges (compiled policies, remote tiers) are reused
        under, computed once per config object."""
        return self.model_dump_json()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy without the cached values derived from the fields (`fingerprint`,
        `irreversible_pattern`): pydantic copies them along, and `update` may change what
        they were derived from."""
        copied = super().model_copy(update=update, deep=deep)
        for name in _DERIVED:
            copied.__dict__.pop(name, None)
        return copied

    @cached_property
    def irreversible_pattern(self) -> re.Pattern[str]:
        """All the names and globs as one compiled pattern: checked on every tool call."""
        return re.compile("|".join(fnmatch.translate(p) for p in self.irreversible_tools) or "$^")

    @cached_property
    def irreversible_by_name(self) -> dict[str, bool]:
        """`irreversible_pattern`'s answer per tool name, memoized: the same few names recur
        on every turn (bounded by `_NAME_MEMO_SIZE`)."""
        return {}

    @cached_property
    def event_overlays(self) -> dict[tuple[object, ...], MirrorConfig]:
        """`mirror.config.config_for_event`'s configs built on this one, by what the event
        overlaid: a tenant sends the same policies on every turn, and re-validating them
        (and a new config's fingerprint) is most of a turn's fixed cost."""
        return {}

    def is_irreversible(self, call: ToolCall) -> bool:
        if call.irreversible:  # a call may add gating; `false` does not remove the list's
            return True
        memo = self.irreversible_by_name
        known = memo.get(call.name)
        if known is None:
            known = self.irreversible_pattern.match(call.name) is not None
            if len(memo) < _NAME_MEMO_SIZE:
                memo[call.name] = known
        return known

    def check_score(self, check: str, default: float) -> float:
        return self.check_scores.get(check, default)


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check: str
    tier: Tier
    code: ReasonCode
    score: float = Field(ge=0.0, le=1.0)
    evidence: str
    tool_call_id: str | None = None


class Verdict(BaseModel):
    """The judge's answer for one turn. `score` is the probability the turn is wrong (0 = clean)."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    score: float = Field(ge=0.0, le=1.0)
    reasons: list[Reason] = Field(default_factory=list)
    decided_by: Tier | None = None
    latency_us: dict[str, float] = Field(default_factory=dict)
    tiers_run: list[Tier] = Field(default_factory=list)
    failed_tiers: list[Tier] = Field(default_factory=list)
    """Remote tiers that timed out or failed; their failure rule decided instead."""
    should_report: bool = False
    blocked_tool_call_ids: list[str] = Field(default_factory=list)
    held_tool_call_ids: list[str] = Field(default_factory=list)
    """Irreversible calls a failed remote tier could not clear: the agent must confirm first."""
    buffer_text: str | None = None
    """What the agent can say while a correction is prepared (set on intervene)."""
    cooldown_suppressed: bool = False
    """A speech intervention was due but the call's cooldown was active."""
    omitted_reasons: dict[str, int] = Field(
        default_factory=dict,
        description="Reasons left out of `reasons`, per check (each check lists at most 5 per "
        "tool call, the strongest first).",
    )
    """Reasons left out of `reasons`, per check: each check lists at most
    `mirror.judge.MAX_REASONS_PER_CHECK` per tool call (its strongest), so a large turn (an
    order of a thousand ungrounded values) still gets a verdict small enough to store."""
    recorded: bool = Field(
        default=True,
        description="False when the turn and this verdict could not be stored (too large for "
        "the state store): the decision stands, but the call's history lacks the turn.",
    )
    """False when the turn and this verdict could not be stored (too large for the state
    store even after capping and truncation): the decision stands, but a retry of the turn
    judges it again and the call's history lacks it."""

    @model_validator(mode="after")
    def _consistent(self) -> Verdict:
        if self.decision == "block" and not (self.blocked_tool_call_ids or self.held_tool_call_ids):
            raise ValueError("a block verdict names the tool calls it blocks or holds")
        return self


class ScoreTurnEvent(Turn):
    """The ScoreTurn event: a turn (the eval case shape without `expect`) plus who it belongs to."""

    call_id: Identifier
    tenant_id: TenantId | None = None
    turn_id: Identifier | None = None
    """Idempotency key for the turn; a retried event with the same id records nothing new."""
    policies: list[Annotated[str, Field(max_length=4_000)]] | None = Field(
        default=None, max_length=MAX_POLICIES
    )
    irreversible_tools: list[Identifier] | None = None
    tool_results: list[ToolMessage] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)
    """Outputs of the agent's earlier tool calls that came back since its previous turn: with
    stored history they are how a lookup's result grounds a later write."""
    domain: str | None = None

    def context(self) -> CallContext:
        return CallContext(call_id=self.call_id, tenant_id=self.tenant_id or "default")

    def turn(self) -> Turn:
        return Turn(
            customer_text=self.customer_text,
            agent_text=self.agent_text,
            tool_calls=self.tool_calls,
            history=self.history,
        )
