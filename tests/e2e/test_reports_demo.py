"""The local run of "after the call" (mirror_dev.reports_demo): a seeded call's report printed, the
real FixPr ASL on moto reaching the approval step with a validated diff, and after approval the
branch and commit in the local git repository it created (nothing pushed)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mirror.state import DynamoDBStateStore
from mirror_dev.reports_demo import PROMPT_PATH, seed_demo_call, show_post_call

pytestmark = pytest.mark.e2e


def test_report_then_approval_then_a_local_branch_and_commit(
    call_state_table: str, dynamodb_client: Any, tmp_path: Path
) -> None:
    store = DynamoDBStateStore(call_state_table, client=dynamodb_client)
    call_id = seed_demo_call(store)
    out = io.StringIO()
    result = show_post_call(store, call_id, tenant_id="pizzeria", out=out, workdir=tmp_path)
    text = out.getvalue()

    assert result.report is not None and result.status == "opened"
    assert "retracted_value_used [high" in text and "evidence turns: turn-2" in text
    assert f"FixPr {result.fix_id} is waiting for approval" in text
    assert "+## Mirror: A value the caller took back was used" in text
    assert f"branch mirror/{result.fix_id}" in text and f"commit {result.commit}" in text
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout  # fmt: skip
    assert git("rev-parse", f"mirror/{result.fix_id}").strip() == result.commit
    assert git("rev-parse", "--abbrev-ref", "HEAD").strip() == "main"  # working tree untouched
    changed = git("show", f"{result.commit}:{PROMPT_PATH}")
    assert "use only the corrected value" in changed
    assert "Mirror" not in (tmp_path / PROMPT_PATH).read_text()


def test_it_can_stop_at_the_approval_step(
    call_state_table: str, dynamodb_client: Any, tmp_path: Path
) -> None:
    store = DynamoDBStateStore(call_state_table, client=dynamodb_client)
    out = io.StringIO()
    result = show_post_call(store, seed_demo_call(store), tenant_id="pizzeria", out=out,
                            workdir=tmp_path, approve=False)  # fmt: skip
    assert result.status == "awaiting_approval" and result.branch is None
    assert "mirror/" not in subprocess.run(["git", "branch"], cwd=tmp_path, capture_output=True,
                                           text=True, check=True).stdout  # fmt: skip
