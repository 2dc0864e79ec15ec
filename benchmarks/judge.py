"""Tier 0 latency per turn: the eval gate files (full history, nothing cached across cases:
every turn builds its own grounding index) and one short synthetic turn. --json prints JSON.

    python benchmarks/judge.py --eval-dir ../shared/eval/dev --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mirror.evaluation import load_cases, percentile
from mirror.judge import Judge
from mirror.models import MirrorConfig, Turn

SHORT_TURN = Turn.model_validate(
    {
        "customer_text": "Yes, book it for two at seven.",
        "agent_text": "Booking a table for two at seven.",
        "tool_calls": [{"id": "c1", "name": "book_table", "args": {"party_size": 2}}],
        "history": [{"role": "customer", "text": "Yes, book it for two at seven."}],
    }
)


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


def short_latencies(n: int) -> list[float]:
    judge = Judge(MirrorConfig())
    for _ in range(200):
        judge.tier0(SHORT_TURN)
    return [_time_us(judge, SHORT_TURN) for _ in range(n)]


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
    figures = {
        "gate_p50_us": round(percentile(gate, 50), 1),
        "gate_p99_us": round(percentile(gate, 99), 1),
        "short_p50_us": round(percentile(short, 50), 2),
        "short_p99_us": round(percentile(short, 99), 2),
        "cases": cases,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>14}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
