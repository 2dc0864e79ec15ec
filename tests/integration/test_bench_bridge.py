"""benchmarks/bridge.py stays runnable: a few calls through the bridge subprocess, one JSON line
with every figure, nothing lost, every scripted mistake intervened on. (The figures themselves
depend on the machine; only their presence and sanity are checked.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEYS = {
    "calls", "frames", "relay_p50_ms", "relay_p99_ms", "late_frames", "clear_after_verdict_ms",
    "verdict_ms", "targets", "met", "verdict_handler_ms", "bridge_cpu_us_per_frame",
    "load_cpu_us_per_frame", "bridge_gc_max_ms", "bridge_loop", "load_loop",
}  # fmt: skip


def test_bridge_benchmark_prints_one_json_line_with_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "benchmarks/bridge.py", "--json", "--calls", "4", "--seconds", "1",
         "--mistakes", "2", "--ramp", "0.2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout[-2000:]
    figures = json.loads(lines[0])
    assert KEYS <= set(figures)
    assert figures["calls"] == 4 and figures["errors"] == 0 and figures["lost_frames"] == 0
    # 50 caller frames per call, each relayed to the agent; the echoes of the two clean calls
    # and of the mistake calls until their mistaken turn
    assert 4 * 50 + 2 * 50 < figures["frames"] <= 4 * 50 * 2
    assert figures["mistake_calls"] == 2 and figures["interventions"] == 2
    assert figures["call_ended_events"] == 4
    assert 0 < figures["relay_p50_ms"] <= figures["relay_p99_ms"]
    assert figures["verdict_ms"] > 0 and figures["clear_after_verdict_ms"] >= 0
    # each verdict's interval holds its handler's run, so the medians keep that order
    assert 0 < figures["verdict_handler_ms"] <= figures["verdict_ms"]
    assert 0 <= figures["verdict_to_handler_ms"] < figures["verdict_ms"]
    assert 0 <= figures["verdict_from_handler_ms"] < figures["verdict_ms"]
    # the bridge on one CPU, as its 1-vCPU Fargate task, the load on the others
    if len(os.sched_getaffinity(0)) >= 2:
        assert len(figures["bridge_cpus"]) == 1
        assert not set(figures["bridge_cpus"]) & set(figures["load_cpus"])
    else:
        assert figures["bridge_cpus"] == figures["load_cpus"] == "any"
    assert figures["bridge_gc_frozen"] > 0  # the start-up heap, frozen at the first call
    assert set(figures["met"]) == set(figures["targets"])
    assert figures["met"]["calls"] is False  # 4 calls are not the 200 of the target


def test_calls_start_at_spread_phases_of_the_frame_clock_unless_aligned() -> None:
    from benchmarks.bridge import FRAME_S, call_starts

    spread = call_starts(100.0, 2.0, 200)
    aligned = call_starts(100.0, 2.0, 200, aligned=True)
    assert aligned == [100.0 + 2.0 * i / 200 for i in range(200)]
    # aligned: every start is on a 10 ms step, so all frames share two slots of each 20 ms
    assert {round((t - 100.0) % FRAME_S * 1000, 6) % 10 for t in aligned} == {0.0}
    # spread: each call within one frame of its ramp step, no two at the same phase, and every
    # 2 ms slice of the 20 ms clock holds some
    assert all(0 <= s - a < FRAME_S for s, a in zip(spread, aligned, strict=True))
    phases = [(t - 100.0) % FRAME_S for t in spread]
    assert len({round(p, 9) for p in phases}) == 200
    assert {int(p / FRAME_S * 10) for p in phases} == set(range(10))
