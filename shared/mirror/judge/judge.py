"""The Mirror Judge: Tier 0 on every turn, remote tiers only when Tier 0 is silent.

Failure rules live here, in one place: a remote tier that times out or fails leaves speech
allowed (fail open, counted in `failed_tiers`) and holds irreversible calls when the config says
`hold` (fail closed, the default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from mirror.judge.base import Finding
from mirror.judge.tier0 import run_tier0
from mirror.models import Decision, MirrorConfig, Reason, Tier, Turn, Verdict
from mirror.policy import compile_policies

MAX_REASONS_PER_CHECK = 5
"""Reasons a verdict lists per check and tool call (the strongest first); the rest are counted
in `Verdict.omitted_reasons`. Grounding finds one reason per ungrounded value, so without a cap
a large order (48 KB of ids) made a verdict of ~600 KB that the state store cannot hold."""


class RemoteTier(Protocol):
    """A classifier or LLM tier. Returns its findings, or None when it is not confident."""

    tier: Tier

    async def judge(self, turn: Turn, config: MirrorConfig) -> list[Finding] | None: ...


class Judge:
    def __init__(self, config: MirrorConfig, remote_tiers: Sequence[RemoteTier] = ()) -> None:
        self.config = config
        self.policies = compile_policies(config.policies)
        config.irreversible_pattern  # noqa: B018 - compiled here, not on the first turn
        self.remote_tiers = tuple(remote_tiers)

    def tier0(self, turn: Turn) -> list[Finding]:
        return run_tier0(turn, self.config, self.policies)

    def evaluate(self, turn: Turn, *, cooldown_active: bool = False) -> Verdict:
        """Tier 0 only: synchronous, no I/O."""
        start = time.perf_counter()
        findings = self.tier0(turn)
        latency = {"tier0": (time.perf_counter() - start) * 1e6}
        return self.verdict(turn, findings, "tier0", latency, ["tier0"], [], cooldown_active)

    async def aevaluate(self, turn: Turn, *, cooldown_active: bool = False) -> Verdict:
        """Tier 0, then each remote tier in order while nothing has decided."""
        import asyncio  # here, not at module level: direct-invoke handlers never await

        start = time.perf_counter()
        findings = self.tier0(turn)
        latency = {"tier0": (time.perf_counter() - start) * 1e6}
        tiers_run: list[Tier] = ["tier0"]
        failed: list[Tier] = []
        decided_by: Tier = "tier0"
        if self.remote_tiers and self.needs_remote(turn, findings):
            for tier in self.remote_tiers:
                tiers_run.append(tier.tier)
                t0 = time.perf_counter()
                try:
                    result = await asyncio.wait_for(
                        tier.judge(turn, self.config), timeout=self._timeout(tier.tier)
                    )
                except Exception:  # noqa: BLE001 - any failure follows the failure rule
                    failed.append(tier.tier)
                    result = None
                latency[tier.tier] = (time.perf_counter() - t0) * 1e6
                if result is not None:
                    findings.extend(result)
                    decided_by = tier.tier
                    break
            else:
                if failed:
                    findings.extend(self._failure_findings(turn, failed[-1]))
                    decided_by = failed[-1]
        return self.verdict(turn, findings, decided_by, latency, tiers_run, failed, cooldown_active)

    def needs_remote(self, turn: Turn, findings: list[Finding]) -> bool:
        """Whether a turn goes on to the remote tiers. Only what Tier 0 can prove is kept
        back: a turn Tier 0 already decided, reversible calls with no words (they fail open
        anyway), and an agent line the operator scripted word for word. Silence is judged
        too: saying nothing can break a policy. Skipping a turn that needs the LLM is the
        costly mistake, so everything else goes on."""
        if self._actionable(findings):
            return False
        if any(self.config.is_irreversible(c) for c in turn.tool_calls):
            return True  # the gate always checks arguments against intent and policy
        if turn.tool_calls and not turn.agent_text.strip():
            return False  # reversible calls only, no words: nothing to hold or correct
        return not self.policies.is_scripted(turn.agent_text)

    def _timeout(self, tier: Tier) -> float:
        return self.config.timeouts.tier1_s if tier == "tier1" else self.config.timeouts.tier2_s

    def _actionable(self, findings: list[Finding]) -> bool:
        return any(f.score >= self.config.intervention_threshold for f in findings)

    def _failure_findings(self, turn: Turn, tier: Tier) -> list[Finding]:
        if self.config.tool_gate_failure_mode != "hold":
            return []
        return [
            Finding(
                "tier_failure",
                "tier_unavailable",
                1.0,
                f"{tier} could not decide in time; {c.name} held for confirmation",
                c.id,
                tier,
            )
            for c in turn.tool_calls
            if self.config.is_irreversible(c)
        ]

    def verdict(
        self,
        turn: Turn,
        findings: list[Finding],
        decided_by: Tier,
        latency_us: dict[str, float],
        tiers_run: list[Tier],
        failed_tiers: list[Tier],
        cooldown_active: bool,
    ) -> Verdict:
        threshold = self.config.intervention_threshold
        irreversible = {c.id for c in turn.tool_calls if self.config.is_irreversible(c)}
        actionable = [f for f in findings if f.score >= threshold]
        blocked = _unique(
            f.tool_call_id
            for f in actionable
            if f.tool_call_id in irreversible and f.check != "tier_failure"
        )
        held = _unique(
            f.tool_call_id
            for f in actionable
            if f.check == "tier_failure" and f.tool_call_id not in blocked
        )
        speech = [f for f in actionable if f.tool_call_id is None]
        suppressed = bool(speech) and cooldown_active
        decision: Decision
        if blocked or held:
            decision = "block"
        elif speech and not suppressed:
            decision = "intervene"
        else:
            decision = "allow"
        listed, omitted = _capped(sorted(findings, key=lambda f: -f.score))
        return Verdict(
            decision=decision,
            score=max((f.score for f in findings), default=0.0),
            reasons=[
                Reason(
                    check=f.check,
                    tier=f.tier,
                    code=f.code,
                    score=f.score,
                    evidence=f.evidence,
                    tool_call_id=f.tool_call_id,
                )
                for f in listed
            ],
            omitted_reasons=omitted,
            decided_by=decided_by,
            latency_us=latency_us,
            tiers_run=tiers_run,
            failed_tiers=failed_tiers,
            should_report=bool(findings) or bool(failed_tiers),
            blocked_tool_call_ids=blocked,
            held_tool_call_ids=held,
            buffer_text=self.config.buffer_text if decision == "intervene" else None,
            cooldown_suppressed=suppressed,
        )


class JudgeCache:
    """Judges (compiled policies, remote tiers) kept per config for the container's life:
    built on a config's first turn, looked up by its fingerprint after that. At most `size`
    are kept; a container serving more configs than that starts over."""

    def __init__(
        self, tiers_for: Callable[[MirrorConfig], Sequence[RemoteTier]], size: int = 64
    ) -> None:
        self._tiers_for = tiers_for
        self._size = size
        self._judges: dict[str, Judge] = {}

    def __len__(self) -> int:
        return len(self._judges)

    def get(self, config: MirrorConfig) -> Judge:
        key = config.fingerprint
        judge = self._judges.get(key)
        if judge is None:
            if len(self._judges) >= self._size:
                self._judges.clear()
            judge = self._judges[key] = Judge(config, self._tiers_for(config))
        return judge


def _capped(findings: list[Finding]) -> tuple[list[Finding], dict[str, int]]:
    """At most `MAX_REASONS_PER_CHECK` findings per (check, tool call), in the given order (the
    strongest first, so each call keeps the reason that decided it), and how many each check
    left out. Blocked and held ids are computed from every finding, before the cap."""
    if len(findings) <= MAX_REASONS_PER_CHECK:
        return findings, {}
    seen: dict[tuple[str, str | None], int] = {}
    listed: list[Finding] = []
    omitted: dict[str, int] = {}
    for f in findings:
        key = (f.check, f.tool_call_id)
        n = seen[key] = seen.get(key, 0) + 1
        if n <= MAX_REASONS_PER_CHECK:
            listed.append(f)
        else:
            omitted[f.check] = omitted.get(f.check, 0) + 1
    return listed, omitted


def _unique(ids: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for i in ids:
        if i is not None and i not in out:
            out.append(i)
    return out
