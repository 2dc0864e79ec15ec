"""Scoring a turn against a call's stored state: the one path behind ScoreTurn and the API.

Order matters for correctness under retries and races:
1. a turn id already recorded returns its stored verdict (idempotent retries);
2. the judge runs on the event's history, or the stored one when the event brings none;
3. a speech intervention must win the call's cooldown with a conditional write, so two
   concurrent scorers never both intervene (the loser reports `cooldown_suppressed`);
4. the turn's messages and its verdict are written in one transaction; a turn too large to
   store still gets its verdict, with `recorded: false`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mirror.judge import Judge, JudgeCache
from mirror.judge.dialogue import caller_line_is_current
from mirror.judge.judge import RemoteTier
from mirror.models import (
    AgentMessage,
    CustomerMessage,
    Message,
    MirrorConfig,
    ScoreTurnEvent,
    Turn,
    Verdict,
)
from mirror.state import StateStore


@dataclass(frozen=True, slots=True)
class ScoredTurn:
    verdict: Verdict
    turn_id: str
    replayed: bool
    """True when the verdict came from an earlier delivery of the same turn."""


def no_remote_tiers(config: MirrorConfig) -> Sequence[RemoteTier]:
    return ()


@dataclass
class ScoreTurnService:
    store: StateStore
    clock: Callable[[], float] = time.time
    remote_tiers_for: Callable[[MirrorConfig], Sequence[RemoteTier]] = no_remote_tiers
    """Builds a config's remote tiers (`mirror.llm.build_remote_tiers` in the functions);
    called once per config, so SDK imports and clients are paid before any timeout starts."""
    _judges: JudgeCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._judges = JudgeCache(self.remote_tiers_for)

    def judge_for(self, config: MirrorConfig) -> Judge:
        return self._judges.get(config)

    def score(
        self,
        event: ScoreTurnEvent,
        config: MirrorConfig,
        turn_id: str,
        *,
        record_history: bool = True,
        cooldown_owner: str | None = None,
        decided: Verdict | None = None,
    ) -> ScoredTurn:
        """`ascore` for synchronous callers (direct-invoke handlers, the CLI, streaming).

        With no remote tiers nothing in `ascore` suspends, so its coroutine is stepped once in
        place (no event loop: a loop costs more than Tier 0 itself); otherwise a loop runs it."""
        coro = self.ascore(
            event,
            config,
            turn_id,
            record_history=record_history,
            cooldown_owner=cooldown_owner,
            decided=decided,
        )
        if self.judge_for(config).remote_tiers:
            return asyncio.run(coro)
        try:
            coro.send(None)
        except StopIteration as done:
            scored: ScoredTurn = done.value
            return scored
        coro.close()
        raise RuntimeError("ScoreTurnService.ascore suspended without remote tiers")

    async def ascore(
        self,
        event: ScoreTurnEvent,
        config: MirrorConfig,
        turn_id: str,
        *,
        record_history: bool = True,
        cooldown_owner: str | None = None,
        decided: Verdict | None = None,
    ) -> ScoredTurn:
        """Judge the turn and record it under `turn_id` (see the module docstring).

        Streaming (`mirror.streaming`) scores one agent turn several times, so it needs three
        options: `record_history=False` records a partial's verdict without the turn's messages
        (the final scoring appends them, once); `cooldown_owner` (default: `turn_id`) lets the
        partials and the final share one cooldown claim, so the turn never suppresses itself;
        `decided` records a verdict a partial already reached instead of judging again.
        """
        ctx = event.context()
        owner = cooldown_owner or turn_id
        now = self.clock()
        earlier = self.store.get_verdict(ctx, turn_id, now)
        if earlier is not None:
            return ScoredTurn(earlier, turn_id, replayed=True)

        stored = self.store.get_history(ctx, now, config.history_limit)
        added = new_messages(event, stored)
        if decided is not None:  # its cooldown was claimed when it was reached
            verdict = decided
        else:
            # The event's own history wins (stateless callers send the whole conversation);
            # otherwise the stored one plus this turn's caller line: the eval case shape.
            if event.history:
                history = list(event.history)
            else:  # everything new but the agent's planned turn itself
                history = [*stored, *(m for m in added if not isinstance(m, AgentMessage))]
            turn = Turn(
                customer_text=event.customer_text,
                agent_text=event.agent_text,
                tool_calls=event.tool_calls,
                history=history,
            )
            cooling = self.store.cooldown_active(ctx, now, owner=owner)
            judge = self.judge_for(config)
            if judge.remote_tiers:
                verdict = await judge.aevaluate(turn, cooldown_active=cooling)
            else:
                verdict = judge.evaluate(turn, cooldown_active=cooling)
            if verdict.decision == "intervene" and not self.store.claim_cooldown(
                ctx, now, config.cooldown_s, config.state_ttl_s, owner=owner
            ):
                verdict = verdict.model_copy(
                    update={"decision": "allow", "cooldown_suppressed": True, "buffer_text": None}
                )

        try:
            recorded = self.store.record_turn(
                ctx,
                turn_id,
                added if record_history else [],
                verdict,
                now,
                config.state_ttl_s,
                config.history_limit,
            )
        except ValueError:
            # Too large to store (the store's size refusal; nothing was written). The judge
            # decided: the verdict stands, marked unrecorded, rather than the turn going
            # unsupervised. Reasons are capped and tool output truncated before this point,
            # so only a turn of many maximal tool calls gets here.
            return ScoredTurn(verdict.model_copy(update={"recorded": False}), turn_id, False)
        if not recorded:  # a concurrent delivery of the same turn won the write
            winner = self.store.get_verdict(ctx, turn_id, now)
            return ScoredTurn(winner or verdict, turn_id, replayed=True)
        return ScoredTurn(verdict, turn_id, replayed=False)


def new_messages(event: ScoreTurnEvent, stored: list[Message]) -> list[Message]:
    """What this turn adds to the stored history, in conversation order: tool results that came
    back since the agent's last turn, the caller's line (unless the store already ends with it:
    an agent tool turn that follows the same caller line), then the agent's planned turn."""
    out: list[Message] = list(event.tool_results)
    if event.customer_text.strip() and not caller_line_is_current(stored, event.customer_text):
        out.append(CustomerMessage(role="customer", text=event.customer_text))
    if event.agent_text or event.tool_calls:
        out.append(AgentMessage(role="agent", text=event.agent_text, tool_calls=event.tool_calls))
    return out
