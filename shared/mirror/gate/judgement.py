"""The tool gate's per-request judgement: the judge runs at most once per request.

`_Judgement` builds the turn (from the event or the stored history) and runs the judge on first
need; `_ObservedTier` notes how a remote tier failed (timeout or error) for the failure kinds.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mirror.gate.models import FailureKind, GateFailure, GateToolEvent, PlannedToolCall
from mirror.judge import Finding, RemoteTier
from mirror.judge.dialogue import caller_line_is_current
from mirror.llm.base import LLMTimeout
from mirror.models import (
    MAX_HISTORY_MESSAGES,
    AgentMessage,
    CallContext,
    CustomerMessage,
    Message,
    MirrorConfig,
    Tier,
    ToolMessage,
    Turn,
    Verdict,
)

if TYPE_CHECKING:
    from mirror.gate.service import GateService

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
    _built: Turn | None = None

    def failed_call(self, tool_call_id: str) -> bool:
        """Whether a tool result for `tool_call_id` (in the event's `tool_results` or the
        turn's history) shows that call failed: the only evidence `retry_of` is honoured on."""
        messages = [*self.event.tool_results, *self.turn().history]
        return any(
            isinstance(m, ToolMessage) and m.is_error and m.tool_call_id == tool_call_id
            for m in messages
        )

    def turn(self) -> Turn:
        """The judged turn, built once per request (a stored-history read at most once)."""
        if self._built is None:
            self._built = self._turn()
        return self._built

    def verdict(self) -> Verdict:
        if self._verdict is not None:
            return self._verdict
        if self._error is not None:
            raise self._error
        turn = self.turn()  # a StateStoreError here is retried by the next call that asks
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
