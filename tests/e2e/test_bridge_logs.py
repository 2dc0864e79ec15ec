"""The bridge run as its image runs it: `uvicorn main:build_app --factory` with the Dockerfile
CMD's own flags, in a subprocess on loopback, one call through it, and its stdout read back.

Regression (issue 13, item 13): under uvicorn's log configuration the bridge's INFO lines were
dropped (the root logger has no handler) and its warnings reached logging's last resort, which
wrote the message alone: no call id, no error. Every line of ours must now be one JSON object
naming the call (and its stream and tenant), redacted, and the EMF metric documents must be
there too.

AWS is a closed loopback port (every boto3 call fails at once), so the call's end writes
nothing: its warnings are part of what is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mirror_bridge import metrics
from mirror_bridge.contract import NUMBER_HEADER
from mirror_dev.plivo_peer import PlivoPeer
from mirror_dev.scripted_agent import ScriptedAgent
from tests.conftest import REPO_ROOT, run
from tests.support.live_server import free_port

pytestmark = pytest.mark.e2e

DOCKERFILE = REPO_ROOT / "bridge" / "Dockerfile"
CALLER = "+14155550123"


def dockerfile_cmd(path: Path = DOCKERFILE) -> list[str]:
    """The exec-form CMD of the bridge's Dockerfile, continuation lines joined."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("CMD ")]
    argv = json.loads(line[len("CMD ") :])
    assert argv[0] == "uvicorn" and isinstance(argv, list)
    return [str(a) for a in argv]


def served_argv(port: int) -> list[str]:
    """The CMD with the host and port moved to loopback and a free port; every other flag kept
    (the log configuration uvicorn applies comes from these flags)."""
    argv = dockerfile_cmd()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return [sys.executable, "-m", *argv]


def bridge_env(port: int, agent_url: str) -> dict[str, str]:
    dead = free_port()  # nothing listens: every AWS call is refused at once
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.pop("LOG_LEVEL", None)  # the default must be INFO
    env.update(
        PYTHONPATH=str(REPO_ROOT / "bridge"),
        BRIDGE_MODE="aws",
        SCORE_TURN_FUNCTION="score-turn",
        GATE_TOOL_FUNCTION="gate-tool",
        GENERATE_CORRECTION_FUNCTION="generate-correction",
        CALL_TABLE="mirror-calls",
        EVENT_BUS_NAME="mirror-bus",
        TTS_ENGINE="offline",
        SIGNATURE_MODE="off",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        DEFAULT_AGENT_URL=agent_url,
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{dead}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
        AWS_RETRY_MODE="standard",
        METRICS_INTERVAL_S="0.5",
    )
    return env


def wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the bridge exited: {proc.communicate()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the bridge did not become healthy")


def json_lines(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_the_image_command_writes_json_logs_naming_the_call_and_emf_metrics() -> None:
    port = free_port()

    async def call(agent: ScriptedAgent) -> tuple[str, str]:
        peer = PlivoPeer(
            f"ws://127.0.0.1:{port}/plivo/stream",
            speed=20.0,
            extra_headers=f"{NUMBER_HEADER}={CALLER}",
        )
        async with peer:
            await peer.start()
            await peer.media(3)
            await asyncio.wait_for(agent.connected.wait(), 10)
            await peer.stop()
            await asyncio.wait_for(agent.calls[0].closed.wait(), 15)
        return peer.call_id, peer.stream_id

    async def main() -> tuple[str, str, str, str]:
        async with ScriptedAgent() as agent:
            proc = subprocess.Popen(
                served_argv(port), cwd=REPO_ROOT / "bridge", env=bridge_env(port, agent.url),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                await asyncio.to_thread(wait_healthy, proc, port)
                call_id, stream_id = await call(agent)
                await asyncio.sleep(1.5)  # the call's end and a process metrics document
            finally:
                proc.send_signal(signal.SIGTERM)
                out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        return call_id, stream_id, out, err

    call_id, stream_id, out, err = run(main(), timeout=90)
    lines = json_lines(out)
    logs = [d for d in lines if "_aws" not in d]
    docs = [d for d in lines if "_aws" in d]
    assert logs, f"no JSON log line on stdout: {out[-2000:]!r} / {err[-2000:]!r}"

    # Every log line of ours is one complete JSON object with the fields named.
    for d in logs:
        assert {"time", "level", "logger", "message"} <= d.keys(), d
        assert d["logger"].startswith(("mirror_bridge", "mirror"))
    ours = [d for d in logs if d.get("call_id") == call_id]
    info = [d for d in ours if d["level"] == "INFO"]
    assert info, f"no INFO line for call {call_id}: {logs}"
    assert any(d.get("stream_id") == stream_id and d.get("tenant_id") for d in info), info
    # The call's end could not reach AWS: the warning names the call and carries the error.
    problems = [d for d in ours if d["level"] in ("WARNING", "ERROR")]
    assert any("CallEnded" in d["message"] and d.get("error") for d in problems), problems
    # The caller's number never appears (redacted wherever a line would carry it).
    assert CALLER not in out and CALLER[2:] not in out

    # EMF: the call's document and a process document, in the bridge's namespace.
    def directive(d: dict[str, Any]) -> dict[str, Any]:
        (cw,) = d["_aws"]["CloudWatchMetrics"]
        return dict(cw)

    per_call = [d for d in docs if d.get("call_id") == call_id and metrics.CALLS in d]
    assert len(per_call) == 1, docs
    (doc,) = per_call
    assert directive(doc)["Namespace"] == metrics.NAMESPACE
    assert doc[metrics.SERVICE_DIMENSION] == metrics.SERVICE and doc[metrics.CALLS] == 1
    assert doc["end_reason"] == "stop"
    assert any(metrics.ACTIVE_CALLS in d for d in docs)
