"""The tool gate: decide each planned tool call before it runs (allow, block or hold).

A call that changes the world cannot be taken back, so every irreversible call goes through the
gate, whatever the speech cooldown says. Per irreversible call, inside one idempotency record
keyed by (tenant, call id, tool call id), so a retried request gets the stored decision:

1. an identical call (same name, same canonical arguments) already allowed in this call is
   blocked as a duplicate, unless this one says `retry_of` that call (the earlier one failed);
2. the judge decides: Tier 0, then the remote tiers when Tier 0 is silent; it runs at most once
   per request, for all the calls that need it, and not at all when every call is a replay;
3. an allowed call claims its fingerprint with a conditional write: of two concurrent identical
   calls only one is allowed, the other is blocked as a duplicate.

Nothing raises for a failure: an irreversible call the gate cannot decide (a remote tier timed
out or failed, the store is unreachable, ...) gets `tool_gate_failure_mode` (`hold` by default);
every failure is reported in `GateOutcome.failures` for metrics. Reversible calls are allowed
without any I/O. Importing this module does no I/O and imports neither boto3 nor Powertools.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mirror.config import config_for_event
from mirror.judge import Finding, Judge, JudgeCache, RemoteTier
from mirror.judge.dialogue import caller_line_is_current
from mirror.llm.base import LLMTimeout
from mirror.models import (
    MAX_HISTORY_MESSAGES,
    MAX_POLICIES,
    MAX_TOOL_CALLS,
    AgentMessage,
    CallContext,
    CustomerMessage,
    Identifier,
    Message,
    MirrorConfig,
    Reason,
    TenantId,
    Tier,
    ToolCall,
    ToolMessage,
    Turn,
    Verdict,
)
from mirror.state import StateStore, StateStoreError, tool_fingerprint
from mirror.state.base import PK, SK, TTL_ATTRIBUTE, RecordedToolCall

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer

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

IDEMPOTENCY_PK = "@idempotency#gate_tool"
"""The partition of the gate's idempotency records in the call table. '@' cannot start a tenant
id, so no call's partition (`{tenant}#{call}`) can ever be this one."""
IDEMPOTENCY_KEY_PREFIX = "gate_tool"
IDEMPOTENCY_TTL_S = 24 * 3600
"""How long a decision is replayed for a retried tool call id (a call lasts minutes)."""
IN_PROGRESS_BUDGET_S = 10.0
"""Without a Lambda context: how long a delivery being decided blocks a concurrent one."""

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


# --- boundary models --------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True)


class PlannedToolCall(ToolCall):
    """A tool call the agent wants to run now."""

    model_config = _STRICT

    retry_of: Identifier | None = None
    """The id of an earlier call with the same name and arguments that failed (its tool result
    was an error): this one retries it and is not a duplicate. Without it, a second identical
    irreversible call in the same call is blocked once the first was allowed."""

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


# --- remote tier failures: timeout or error ----------------------------------------------------

_TIER_FAILURES: ContextVar[dict[str, FailureKind] | None] = ContextVar(
    "mirror_gate_tier_failures", default=None
)


class _ObservedTier:
    """A remote tier that notes how it failed; the judge only says *that* it failed."""

    def __init__(self, inner: RemoteTier) -> None:
        self.inner = inner
        self.tier: Tier = inner.tier

    async def judge(self, turn: Turn, config: MirrorConfig) -> list[Finding] | None:
        import asyncio  # already loaded: only ever awaited inside asyncio.run

        failures = _TIER_FAILURES.get()
        try:
            return await self.inner.judge(turn, config)
        except asyncio.CancelledError:  # the judge's wait_for ran out of time
            if failures is not None:
                failures[self.tier] = "tier_timeout"
            raise
        except Exception as e:
            if failures is not None:
                timed_out = isinstance(e, TimeoutError | LLMTimeout)  # the client's own budget
                failures[self.tier] = "tier_timeout" if timed_out else "tier_error"
            raise


# --- per request ----------------------------------------------------------------------------


class _JudgeError(Exception):
    """The judge raised: remembered so it is not run again for the next call of the request."""


@dataclass
class _Judgement:
    """The request's verdict, computed on first need: replays never build the turn (a history
    read) nor run the judge, and all calls needing a decision share one run."""

    service: GateService
    event: GateToolEvent
    ctx: CallContext
    config: MirrorConfig
    now: float
    failures: list[GateFailure]
    runs: int = 0
    _verdict: Verdict | None = None
    _tier_failures: dict[str, FailureKind] = field(default_factory=dict)
    _error: BaseException | None = None

    def verdict(self) -> Verdict:
        if self._verdict is not None:
            return self._verdict
        if self._error is not None:
            raise self._error
        turn = self._turn()  # a StateStoreError here is retried by the next call that asks
        judge = self.service.judge_for(self.config)
        token = _TIER_FAILURES.set(self._tier_failures)
        self.runs += 1
        try:
            if judge.remote_tiers:
                import asyncio

                verdict = asyncio.run(judge.aevaluate(turn))
            else:
                verdict = judge.evaluate(turn)
        except Exception as e:  # noqa: BLE001 - a judge bug must not decide a call
            self._error = _JudgeError(f"the judge raised {type(e).__name__}")
            raise self._error from e
        finally:
            _TIER_FAILURES.reset(token)
        for tier in verdict.failed_tiers:
            kind = self.tier_failure(tier)
            self.failures.append(GateFailure(kind, None, f"{tier} {kind.removeprefix('tier_')}"))
        self._verdict = verdict
        return verdict

    def tier_failure(self, tier: str) -> FailureKind:
        return self._tier_failures.get(tier, "tier_error")

    def _turn(self) -> Turn:
        event = self.event
        calls = [c.tool_call() for c in event.tool_calls]
        history: list[Message]
        if event.history:
            history = list(event.history)
        else:
            stored = self.service.store.get_history(self.ctx, self.now, self.config.history_limit)
            ids = {c.id for c in calls}
            if (
                stored
                and isinstance(stored[-1], AgentMessage)
                and ids & {c.id for c in stored[-1].tool_calls}
            ):  # ScoreTurn recorded this very turn: it is not history before the turn
                stored.pop()
            history = [*stored, *event.tool_results]
            if event.customer_text.strip() and not caller_line_is_current(
                history, event.customer_text
            ):
                history.append(CustomerMessage(role="customer", text=event.customer_text))
        return Turn(
            customer_text=event.customer_text,
            agent_text=event.agent_text,
            tool_calls=calls,
            history=history[-MAX_HISTORY_MESSAGES:],
        )


@dataclass
class _Job:
    """One irreversible call's decision inputs (not hashed: only `request` keys the record)."""

    call: PlannedToolCall
    fingerprint: str
    judgement: _Judgement
    ran: bool = False


@dataclass
class _Deadline:
    """A stand-in Lambda context: how long an in-progress record blocks a concurrent delivery."""

    end: float

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.end - time.monotonic()) * 1000))


# --- the service ----------------------------------------------------------------------------


class GateService:
    """Gates planned tool calls against a call's state. One per container; not thread-safe
    while idempotency is on (Powertools keeps the Lambda context on the shared config)."""

    def __init__(
        self,
        store: StateStore,
        remote_tiers: Sequence[RemoteTier] = (),
        *,
        persistence: BasePersistenceLayer | None = None,
        spoken_lines: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        idempotency_ttl_s: int = IDEMPOTENCY_TTL_S,
    ) -> None:
        """`remote_tiers` (e.g. from `mirror.llm.build_remote_tiers`) run when Tier 0 is silent.
        `persistence` (see `idempotency_layer`) makes each tool call's decision idempotent;
        without it every request decides afresh (local runs, tests of the rules alone)."""
        self.store = store
        self.remote_tiers: tuple[RemoteTier, ...] = tuple(_ObservedTier(t) for t in remote_tiers)
        self.spoken_lines = {**DEFAULT_SPOKEN_LINES, **(spoken_lines or {})}
        self.clock = clock
        self.persistence = persistence
        self._judges = JudgeCache(lambda _config: self.remote_tiers)
        self._idempotency_config: Any = None
        self._decide: Callable[..., dict[str, Any]] = self._decide_call
        if persistence is not None:
            from aws_lambda_powertools.utilities.idempotency import (
                IdempotencyConfig,
                idempotent_function,
            )

            self._idempotency_config = IdempotencyConfig(
                event_key_jmespath="key",
                # The same tool call id with other arguments is not a retry: refuse to replay.
                payload_validation_jmespath="fingerprint",
                raise_on_no_idempotency_key=True,
                expires_after_seconds=idempotency_ttl_s,
            )
            self._decide = idempotent_function(
                self._decide_call,
                data_keyword_argument="request",
                persistence_store=persistence,
                config=self._idempotency_config,
                key_prefix=IDEMPOTENCY_KEY_PREFIX,
            )

    def judge_for(self, config: MirrorConfig) -> Judge:
        return self._judges.get(config)

    @staticmethod
    def config_for(base: MirrorConfig, event: GateToolEvent) -> MirrorConfig:
        """The base config with the event's tenant, policies and irreversible tools. Raises
        pydantic's ValidationError (field `policies`) when an event directive does not parse."""
        return config_for_event(base, event)  # type: ignore[arg-type] - reads the same 3 fields

    # --- entry points ---------------------------------------------------------------------

    def gate(
        self, event: GateToolEvent, config: MirrorConfig, lambda_context: Any | None = None
    ) -> GateOutcome:
        """Decide every planned call. Synchronous (remote tiers run in their own event loop):
        from async code, call it in a worker thread."""
        ctx = event.context()
        failures: list[GateFailure] = []
        judgement = _Judgement(self, event, ctx, config, self.clock(), failures)
        if self._idempotency_config is not None:
            self._idempotency_config.register_lambda_context(
                lambda_context or _Deadline(time.monotonic() + IN_PROGRESS_BUDGET_S)
            )
        decisions: list[ToolDecision] = []
        fresh: list[str] = []
        for call in event.tool_calls:
            decision, was_fresh = self._gate_one(call, config, judgement, failures)
            decisions.append(decision)
            if was_fresh:
                fresh.append(call.id)
        return GateOutcome(_result(ctx, decisions), failures, tuple(fresh))

    def fail_safe(
        self, event: GateToolEvent, config: MirrorConfig, kind: FailureKind, detail: str
    ) -> GateOutcome:
        return fail_safe(event, config, kind, detail, self.spoken_lines)

    # --- one call -------------------------------------------------------------------------

    def _gate_one(
        self,
        call: PlannedToolCall,
        config: MirrorConfig,
        judgement: _Judgement,
        failures: list[GateFailure],
    ) -> tuple[ToolDecision, bool]:
        if not config.is_irreversible(call):
            return _not_gated(call), True
        job = _Job(call, tool_fingerprint(call.name, call.args), judgement)
        request = {
            "key": {
                "tenant_id": judgement.ctx.tenant_id,
                "call_id": judgement.ctx.call_id,
                "tool_call_id": call.id,
            },
            "fingerprint": job.fingerprint,
        }
        try:
            data = self._decide(request=request, job=job)
        except Exception as e:  # noqa: BLE001 - every failure has a decision
            kind, detail = self._classify(e)
            failures.append(GateFailure(kind, call.id, detail))
            if kind == "id_conflict":
                return self._duplicate(call, None), True
            return _failure(call, config, kind, self.spoken_lines), True
        return ToolDecision.model_validate(data), job.ran

    def _decide_call(self, *, request: dict[str, Any], job: _Job) -> dict[str, Any]:
        """The decision for one irreversible call; with idempotency on, its result is stored
        under `request` and replayed for a retry instead of running this again."""
        job.ran = True
        call, judgement = job.call, job.judgement
        ctx, now, config = judgement.ctx, judgement.now, judgement.config
        holder = self.store.get_tool_call(ctx, job.fingerprint, now)
        if holder is not None and holder.tool_call_id not in (call.id, call.retry_of):
            return self._duplicate(call, holder).model_dump(mode="json")
        decision = self._from_verdict(call, judgement.verdict(), judgement)
        if decision.decision == "allow":
            holder = self.store.claim_tool_call(
                ctx, job.fingerprint, call.id, call.name, now, config.state_ttl_s, call.retry_of
            )
            if holder is not None:  # an identical call was allowed meanwhile
                decision = self._duplicate(call, holder)
        return decision.model_dump(mode="json")

    def _from_verdict(
        self, call: PlannedToolCall, verdict: Verdict, judgement: _Judgement
    ) -> ToolDecision:
        config = judgement.config
        reasons = [r for r in verdict.reasons if r.tool_call_id == call.id]
        base = {"tool_call_id": call.id, "name": call.name, "irreversible": True}
        if call.id in verdict.blocked_tool_call_ids:
            top = next(r for r in reasons if r.score >= config.intervention_threshold)
            return ToolDecision(
                **base,
                decision="block",
                reasons=reasons,
                spoken_line=self.line(top.code),
                decided_by=top.tier,
            )
        failed = verdict.decided_by in verdict.failed_tiers
        kind = judgement.tier_failure(verdict.decided_by) if failed and verdict.decided_by else None
        if call.id in verdict.held_tool_call_ids:
            return ToolDecision(
                **base,
                decision="hold",
                reasons=reasons,
                spoken_line=self.line("tier_unavailable"),
                decided_by="failure_mode",
                failure=kind or "tier_error",
            )
        return ToolDecision(
            **base,
            decision="allow",
            reasons=reasons,
            decided_by="failure_mode" if failed else (verdict.decided_by or "tier0"),
            failure=kind,
        )

    def _duplicate(self, call: PlannedToolCall, holder: RecordedToolCall | None) -> ToolDecision:
        if holder is None:
            evidence = (
                f"tool call id {call.id} was gated before with other arguments; "
                "plan the call again under a new id"
            )
        else:
            evidence = (
                f"{call.name} with the same arguments was allowed earlier in this call as "
                f"{holder.tool_call_id}; set retry_of={holder.tool_call_id!r} if that one failed"
            )
        reason = Reason(
            check="duplicate_call",
            tier="tier0",
            code="duplicate_call",
            score=1.0,
            evidence=evidence,
            tool_call_id=call.id,
        )
        return ToolDecision(
            tool_call_id=call.id,
            name=call.name,
            decision="block",
            irreversible=True,
            reasons=[reason],
            spoken_line=self.line("duplicate_call"),
            decided_by="duplicate_check",
        )

    def line(self, code: str) -> str:
        return _line(self.spoken_lines, code)

    def _classify(self, e: Exception) -> tuple[FailureKind, str]:
        """Which failure an exception from deciding one call is; the detail names no value."""
        if isinstance(e, StateStoreError):
            return "store_unavailable", str(e)
        if isinstance(e, _JudgeError):
            return "judge_error", str(e)
        if self.persistence is not None:
            from aws_lambda_powertools.utilities.idempotency import exceptions as idem

            if isinstance(e, idem.IdempotencyAlreadyInProgressError):
                return "in_progress", "another delivery of this tool call is being decided"
            if isinstance(e, idem.IdempotencyValidationError):
                return "id_conflict", "the tool call id was decided before with other arguments"
            if isinstance(
                e,
                idem.IdempotencyPersistenceLayerError | idem.IdempotencyInconsistentStateError,
            ):
                cause = e.__cause__ or e
                return "store_unavailable", f"idempotency records: {type(cause).__name__}: {cause}"
        return "internal_error", f"{type(e).__name__}: {e}"


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


def _strictest(decisions: Sequence[ToolDecision]) -> ToolDecision:
    """The first decision of the strictest kind (max keeps the first of equals)."""
    return max(decisions, key=lambda d: _ORDER[d.decision])


def idempotency_layer(table_name: str, client: Any) -> BasePersistenceLayer:
    """Powertools Idempotency records in the call table: partition `IDEMPOTENCY_PK`, the hashed
    key as the sort key, expiry in the table's TTL attribute. `client` is the state store's."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(
        table_name=table_name,
        key_attr=PK,
        sort_key_attr=SK,
        static_pk_value=IDEMPOTENCY_PK,
        expiry_attr=TTL_ATTRIBUTE,
        in_progress_expiry_attr="in_progress_expires_at_ms",
        boto3_client=client,
    )
