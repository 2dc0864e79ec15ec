"""Tier 0 latency per turn: the eval gate files (full history, nothing cached across cases:
every turn builds its own grounding index) and one short synthetic turn; and LLM routing on the
turn-scoring files: which turns the judge sends on to a remote tier. --json prints JSON.

    python benchmarks/judge.py --eval-dir ../shared/eval/dev --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from mirror.evaluation import load_cases, percentile
from mirror.judge import Judge
from mirror.judge.base import Finding
from mirror.models import MirrorConfig, Tier, Turn

SHORT_TURN = Turn.model_validate(
    {
        "customer_text": "Yes, book it for two at seven.",
        "agent_text": "Booking a table for two at seven.",
        "tool_calls": [{"id": "c1", "name": "book_table", "args": {"party_size": 2}}],
        "history": [{"role": "customer", "text": "Yes, book it for two at seven."}],
    }
)


SHORT_TURN_REVERSIBLE = SHORT_TURN.model_copy(
    update={"tool_calls": [SHORT_TURN.tool_calls[0].model_copy(update={"name": "find_table"})]}
)
"""The same turn with a call that changes nothing: no argument checks, most turns' path."""


def _time_us(judge: Judge, turn: Turn) -> float:
    start = time.perf_counter_ns()
    judge.tier0(turn)
    return (time.perf_counter_ns() - start) / 1e3


def gate_latencies(eval_dir: Path, rounds: int) -> tuple[list[float], int]:
    cases = [c for c in load_cases(sorted(eval_dir.glob("tau_*_gate*.jsonl")))]
    if not cases:
        raise SystemExit(f"no gate files (tau_*_gate*.jsonl) in {eval_dir}")
    judges = [
        Judge(MirrorConfig(policies=c.policies, irreversible_tools=c.irreversible_tools))
        for c in cases
    ]
    per_case: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for samples, judge, case in zip(per_case, judges, cases, strict=True):
            samples.append(_time_us(judge, case.turn))
    # One figure per case (its median over the rounds), so p99 is a slow case, not a hiccup.
    return [statistics.median(s) for s in per_case], len(cases)


def short_latencies(n: int, turn: Turn = SHORT_TURN) -> list[float]:
    judge = Judge(MirrorConfig())
    for _ in range(200):
        judge.tier0(turn)
    return [_time_us(judge, turn) for _ in range(n)]


class _CountingTier:
    """A remote tier that only counts the turns that reach it (and is never confident)."""

    tier: Tier = "tier2"

    def __init__(self) -> None:
        self.calls = 0

    async def judge(self, turn: Turn, config: MirrorConfig) -> list[Finding] | None:
        self.calls += 1
        return None


def llm_routing(eval_dir: Path) -> dict[str, float | int]:
    """On the turn-scoring files: the share of allow turns decided with no LLM call, and the
    share of intervene turns that reach an LLM tier, through `Judge.aevaluate`."""
    cases = load_cases(sorted(eval_dir.glob("complibench_*.jsonl")))
    if not cases:
        raise SystemExit(f"no turn-scoring files (complibench_*.jsonl) in {eval_dir}")
    reached = {"allow": [0, 0], "intervene": [0, 0]}
    for case in cases:
        tier = _CountingTier()
        judge = Judge(case.config(), [tier])
        asyncio.run(judge.aevaluate(case.turn))
        counts = reached.get(case.expect.decision)
        if counts is not None:
            counts[0] += tier.calls > 0
            counts[1] += 1
    allow, intervene = reached["allow"], reached["intervene"]
    return {
        "no_llm_share_allow": round(1 - allow[0] / allow[1], 3) if allow[1] else 0.0,
        "llm_routing_recall_intervene": round(intervene[0] / intervene[1], 3)
        if intervene[1]
        else 0.0,
        "routing_cases": allow[1] + intervene[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=Path("../shared/eval/dev"))
    parser.add_argument("--rounds", type=int, default=5, help="passes over the gate cases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.eval_dir.is_dir():
        print(f"eval dir not found: {args.eval_dir} (pass --eval-dir)", file=sys.stderr)
        return 2
    gate, cases = gate_latencies(args.eval_dir, args.rounds)
    short = short_latencies(20_000)
    short_reversible = short_latencies(20_000, SHORT_TURN_REVERSIBLE)
    figures = {
        "gate_p50_us": round(percentile(gate, 50), 1),
        "gate_p99_us": round(percentile(gate, 99), 1),
        "short_p50_us": round(percentile(short, 50), 2),
        "short_p99_us": round(percentile(short, 99), 2),
        "short_reversible_p50_us": round(percentile(short_reversible, 50), 2),
        "cases": cases,
        **llm_routing(args.eval_dir),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>14}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
