"""`make demo` (scripts/demo_call.py): one call through the whole local stack, end to end.

The subprocess test runs exactly what `make demo` runs; the in-process one checks the extension
point (`after_call` steps see the stack still up, with the call's state in moto)."""

from __future__ import annotations

import importlib
import io
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.support.process import clean_python

pytestmark = pytest.mark.e2e

SCRIPT = REPO_ROOT / "scripts" / "demo_call.py"
SPEED = "8"


def demo_module() -> Any:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("scripts.demo_call")


def in_order(text: str, patterns: list[str]) -> list[str]:
    """The patterns found one after the other in `text` (regexes, each after the last match)."""
    found: list[str] = []
    position = 0
    for pattern in patterns:
        match = re.compile(pattern, re.MULTILINE).search(text, position)
        if match is None:
            break
        found.append(pattern)
        position = match.end()
    return found


INTERVENTION = [
    r"agent→bridge\s+mirror\.turn t2: caller 'Yes, please\.', agent 'Great, placing your "
    r"order for one large",
    r"bridge\s+ScoreTurn t2 → INTERVENE retraction: the agent says 'large'",
    r"bridge→plivo\s+clearAudio$",
    r"bridge→plivo\s+playAudio",
    r"bridge→plivo\s+checkpoint mirror-\S+-buffer$",
    r"plivo→bridge\s+playedStream mirror-\S+-buffer$",
    r"bridge→plivo\s+playAudio",
    r"bridge→plivo\s+checkpoint mirror-\S+-correction$",
    r"plivo→bridge\s+playedStream mirror-\S+-correction$",
    r"bridge→agent\s+mirror\.override for t2: ",
    r"agent→bridge\s+mirror\.turn t3: ",
    r"bridge→agent\s+mirror\.tool_decision g2: allow",
    r"plivo→bridge\s+stop",
    r"bridge→aws\s+CallEnded → EventBridge \(moto\): reason stop",
]


def test_make_demo_plays_the_call_with_the_intervention_and_stores_the_state() -> None:
    """What `make demo` runs, in a clean process with no AWS settings of the caller."""
    started = time.perf_counter()
    result = clean_python(
        [str(SCRIPT), "--speed", SPEED],
        strip=("AWS_", "POWERTOOLS_"),
        AWS_PROFILE="no-such-profile-mirror-demo",
    )
    elapsed = time.perf_counter() - started
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert in_order(out, INTERVENTION) == INTERVENTION
    # the tool call with the retracted size was blocked by GateTool, the corrected one allowed
    assert re.search(r"GateTool → place_order BLOCK \(tier0: wrong_variant\)", out)
    assert "mirror.tool_decision g1: block" in out
    assert out.count("mirror.verdict t") == 4 and out.count("INTERVENE") == 2  # ScoreTurn, verdict
    assert "POST /plivo/answer (V3-signed) → 200" in out and 'bidirectional="true"' in out
    # where the state is: the table on the moto server, the call's items read back
    table = re.search(r"Call state in DynamoDB: moto server (http://127\.0\.0\.1:\d+), table "
                      r"(\S+), pk 'pizzeria#([0-9a-f-]{36})' \((\d+) items\)", out)  # fmt: skip
    assert table is not None and table.group(2) == "mirror-demo-call-state"
    assert int(table.group(4)) >= 10
    assert re.search(r"^\s+META\s+end_reason=stop, bridge_interventions=1", out, re.M)
    assert re.search(r"^\s+VERDICT#t2\s+decision intervene", out, re.M)
    # the override note was delivered (mirror.override), so its stored copy was consumed: a
    # note delivered is a note consumed (issue 13, item 12)
    assert "mirror.override" in out
    assert not re.search(r"^\s+OVERRIDE\s+note=", out, re.M)
    assert re.search(r"^\s+MSG#0000000003\s+agent: 'Great, placing your order", out, re.M)
    assert f"reason stop, call {table.group(3)}" in out  # CallEnded, read back from SQS
    # after the call: its report from the stored state, then FixPr on moto to the approval
    # step and on to the local branch and commit
    report = out.index("Post-call report: pizzeria/" + table.group(3))
    assert re.search(r"- retracted_value_used \[medium, confidence [0-9.]+, counted\]", out)
    assert report < out.index("is waiting for approval. Validated diff:") < out.index("Approved.")
    assert re.search(r"^  branch mirror/fix-pizzeria-retracted_value_used-", out, re.M)
    assert re.search(r"^  commit [0-9a-f]{40}$", out, re.M)
    assert out.rstrip().endswith("The call went as scripted.")
    assert elapsed < 25, f"make demo took {elapsed:.1f} s"


def test_run_demo_steps_after_the_call_see_the_stack_up(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = demo_module()
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile-mirror-demo")
    before = dict(os.environ)
    seen: list[tuple[str, int, int]] = []

    def post_call(result: Any) -> None:
        items = result.stack.moto.call_items(result.pk)  # moto is still serving the table
        seen.append((result.endpoint, len(items), len(result.call_ended)))
        result.out.write("POST-CALL STEP\n")

    out = io.StringIO()
    result = demo.run_demo(out, after_call=[post_call], speed=float(SPEED))
    assert result.ok, result.problems
    assert result.stack.closed and dict(os.environ) == before
    assert result.tenant_id == "pizzeria" and result.pk == f"pizzeria#{result.call_id}"
    assert result.table_name == "mirror-demo-call-state" and result.queue_url
    assert seen == [(result.endpoint, len(result.items), 1)] and len(result.items) >= 10
    text = out.getvalue()
    assert text.index("POST-CALL STEP") < text.index("The call went as scripted.")
    assert any("clearAudio" in line for line in result.timeline)


def test_a_call_that_misses_a_step_is_reported() -> None:
    demo = demo_module()
    Entry = demo.Entry

    def entry(at: float, lane: str, message: dict[str, Any]) -> Any:
        return Entry(at, lane, message["event"], message)

    good = [
        entry(1, "agent→bridge", {"event": "mirror.turn", "turn_id": "t2"}),
        entry(2, "bridge→plivo", {"event": "clearAudio"}),
        entry(3, "bridge→plivo", {"event": "playAudio"}),
        entry(4, "bridge→plivo", {"event": "checkpoint", "name": "mirror-x-1-a-buffer"}),
        entry(5, "plivo→bridge", {"event": "playedStream", "name": "mirror-x-1-a-buffer"}),
        entry(6, "bridge→plivo", {"event": "playAudio"}),
        entry(7, "bridge→plivo", {"event": "checkpoint", "name": "mirror-x-1-a-correction"}),
        entry(8, "plivo→bridge", {"event": "playedStream", "name": "mirror-x-1-a-correction"}),
        entry(9, "bridge→agent", {"event": "mirror.override", "turn_id": "t2"}),
    ]
    assert demo.check_intervention(good) == []
    no_ack = [e for e in good if not e.message.get("name", "").endswith("correction")]
    assert "no checkpoint" in demo.check_intervention(no_ack)[0]
    early = [*good[:-1], entry(7.5, "bridge→agent", {"event": "mirror.override"})]
    assert "override" in demo.check_intervention(early)[0]


def test_the_script_is_what_make_demo_runs() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/demo_call.py" in recipe
    assert Path(SCRIPT).is_file()
