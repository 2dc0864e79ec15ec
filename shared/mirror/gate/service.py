"""The tool gate's service: `GateService` decides each planned tool call (allow, block, hold).

The rules are described in the package docstring (`mirror.gate`); this module holds the service
that applies them, one irreversible call at a time, inside its idempotency record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
    IDEMPOTENCY_TTL_S,
    IN_PROGRESS_BUDGET_S,
    _Deadline,
)
from mirror.gate.judgement import _Job, _JudgeError, _Judgement, _ObservedTier
from mirror.gate.models import (
    FailureKind,
    GateFailure,
    GateOutcome,
    GateToolEvent,
    PlannedToolCall,
    ToolDecision,
)
from mirror.judge import Judge, JudgeCache, RemoteTier
from mirror.models import MirrorConfig, Reason, Verdict
from mirror.state import StateStore, StateStoreError, tool_fingerprint
from mirror.state.base import RecordedToolCall

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer


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
        # `retry_of` lifts the duplicate check only on evidence: a tool result for that id that
        # shows a failure. The agent's word alone would let it repeat any irreversible call.
        retry_of = call.retry_of
        if retry_of is not None and not judgement.failed_call(retry_of):
            retry_of = None
        if holder is not None and holder.tool_call_id not in (call.id, retry_of):
            return self._duplicate(call, holder).model_dump(mode="json")
        decision = self._from_verdict(call, judgement.verdict(), judgement)
        if decision.decision == "allow":
            holder = self.store.claim_tool_call(
                ctx, job.fingerprint, call.id, call.name, now, config.state_ttl_s, retry_of
            )
            if holder is not None:  # an identical call was allowed meanwhile
                decision = self._duplicate(call, holder)
        return decision.model_dump(mode="json")

    def _from_verdict(
        self, call: PlannedToolCall, verdict: Verdict, judgement: _Judgement
    ) -> ToolDecision:
        config = judgement.config
        reasons = [r for r in verdict.reasons if r.tool_call_id == call.id]
        if call.id in verdict.blocked_tool_call_ids:
            top = next(r for r in reasons if r.score >= config.intervention_threshold)
            return ToolDecision(
                tool_call_id=call.id,
                name=call.name,
                irreversible=True,
                decision="block",
                reasons=reasons,
                spoken_line=self.line(top.code),
                decided_by=top.tier,
            )
        failed = verdict.decided_by in verdict.failed_tiers
        kind = judgement.tier_failure(verdict.decided_by) if failed and verdict.decided_by else None
        if call.id in verdict.held_tool_call_ids:
            return ToolDecision(
                tool_call_id=call.id,
                name=call.name,
                irreversible=True,
                decision="hold",
                reasons=reasons,
                spoken_line=self.line("tier_unavailable"),
                decided_by="failure_mode",
                failure=kind or "tier_error",
            )
        return ToolDecision(
            tool_call_id=call.id,
            name=call.name,
            irreversible=True,
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
                " and send its tool result with tool_call_id and is_error: true"
            )
            if call.retry_of is not None:
                evidence += f" (no tool result shows {call.retry_of} failed)"
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
