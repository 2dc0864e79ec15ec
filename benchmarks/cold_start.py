"""Cold-start proxy: wall time to import each Lambda handler module in a fresh interpreter.

Each run is a new `python -I -c "import app"` subprocess with sys.path = [handler dir, shared/]
in front of the venv's own path, roughly like Lambda (/var/task, then the layer). The env looks
like Lambda's (LAMBDA_TASK_ROOT, dummy credentials, CALL_TABLE), so Powertools Tracer is
enabled, not short-circuited. One warm-up run per module writes the .pyc files first, as the
`make build` compileall step does for the real artifact. Times include interpreter start-up;
`baseline_s` is `python -c pass` measured the same way.

    python benchmarks/cold_start.py          # table
    python benchmarks/cold_start.py --json   # one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO / "shared"

# Result key prefix -> (handler file relative to the repo root, the statement that does what
# the first invocation does before its first request: build the AWS clients). One line each.
HANDLERS: dict[str, tuple[str, str]] = {
    "score_turn": ("functions/score_turn/app.py", "app.deps.scorer().store.connect()"),
    "gate_tool": ("functions/gate_tool/app.py", "app.deps.gate()"),
    "generate_correction": (
        "functions/generate_correction/app.py",
        "app.deps.corrections().store.connect()",
    ),
    "api": ("functions/api/app.py", "app.deps.store().connect()"),
}


def lambda_env(task_root: Path, function_name: str) -> dict[str, str]:
    """The parent environment minus AWS/Powertools/Python settings, plus Lambda-like values."""
    drop = ("AWS_", "POWERTOOLS_", "PYTHON", "LAMBDA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_LAMBDA_FUNCTION_NAME=function_name,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
        LAMBDA_TASK_ROOT=str(task_root),
        POWERTOOLS_SERVICE_NAME="mirror",
        POWERTOOLS_METRICS_NAMESPACE="Mirror",
        CALL_TABLE="mirror-bench",
        MIRROR_STAGE="dev",
    )
    return env


def time_once(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed (exit {proc.returncode}):\n{proc.stderr}")
    return elapsed


def measure(code: str, env: dict[str, str], runs: int) -> list[float]:
    time_once(code, env)  # warm-up: fills __pycache__ and the OS file cache
    return [time_once(code, env) for _ in range(runs)]


def import_code(handler: Path) -> str:
    paths = [str(handler.parent), str(SHARED)]
    return f"import sys; sys.path[:0] = {paths!r}; import {handler.stem}"


def run(runs: int) -> dict[str, float | int | str]:
    results: dict[str, float | int | str] = {
        "runs": runs,
        "python": sys.version.split()[0],
    }
    base = measure("pass", lambda_env(REPO, "baseline"), runs)
    results["baseline_s"] = round(statistics.median(base), 4)
    results["baseline_min_s"] = round(min(base), 4)
    for name, (rel, first_use) in HANDLERS.items():
        handler = REPO / rel
        env = lambda_env(handler.parent, name)
        samples = measure(import_code(handler), env, runs)
        results[f"{name}_import_s"] = round(statistics.median(samples), 4)
        results[f"{name}_import_min_s"] = round(min(samples), 4)
        # Clients are built lazily, so the import alone hides boto3: report both.
        init = measure(f"{import_code(handler)}; {first_use}", env, runs)
        results[f"{name}_init_with_clients_s"] = round(statistics.median(init), 4)
    return results


def print_table(results: dict[str, float | int | str]) -> None:
    base = float(results["baseline_s"])
    print(f"Python {results['python']}, {results['runs']} fresh interpreters each")
    print(f"{'module':<24}{'median s':>10}{'min s':>10}{'over base':>12}")
    print(f"{'python -c pass':<24}{base:>10.3f}{float(results['baseline_min_s']):>10.3f}")
    for name in HANDLERS:
        med = float(results[f"{name}_import_s"])
        low = float(results[f"{name}_import_min_s"])
        print(f"{name:<24}{med:>10.3f}{low:>10.3f}{(med - base) * 1000:>9.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per module (default 7)")
    args = parser.parse_args(argv)
    results = run(args.runs)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
