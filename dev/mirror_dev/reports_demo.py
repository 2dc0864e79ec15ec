"""The local run of "after the call": a finished call's report, then the FixPr workflow on moto.

`show_post_call(store, call_id, tenant_id=...)` is what `make demo` calls at the end of its
simulated call (the store is the demo's, e.g. a DynamoDBStateStore on in-process moto):

1. PostCallReport's service writes the call's report into a moto reports table (threshold 1,
   so this one call starts the workflow) and it is printed.
2. The real statemachines/fix_pr.asl.json runs on moto with the real task handlers
   in-process; the "repository" is a local git repository created for the run (LocalGitRepo:
   the same port as the GitHub client). Offline by design: no LLM, so the draft is the
   deterministic proposal. The workflow is shown reaching the approval step with its diff.
3. With `approve=True` (the default) the fix is approved as the Api would, and the PR step is
   shown as the branch and commit it would push (written into the local repository only).

Inside an active in-process moto mock it reuses it (keeping its data); otherwise it starts one.
`python scripts/demo_post_call.py` runs it standalone on a small seeded call.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from unittest.mock import patch

from mirror.reports.models import CallEndedDetail, CallReport

REPO_ROOT = Path(__file__).resolve().parents[2]
"""dev/mirror_dev/reports_demo.py -> the checkout (for the ASL file and the task handlers)."""
REGION = "us-east-1"
PROMPT_PATH = "prompts/system.md"
DEMO_PROMPT = """\
You are the phone agent of Tony's Pizza. Take delivery and pickup orders.

- Greet the caller and ask what they would like.
- Confirm the delivery address.
- Tell the caller the total and the delivery time.
"""
_QUIET_ENV = {
    "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_SERVICE_NAME": "mirror-demo-fixpr",
    "POWERTOOLS_METRICS_NAMESPACE": "MirrorDemo",
}
_LLM_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "BEDROCK_MODEL_ID",
            "MIRROR_LLM_PROVIDER", "MIRROR_CONFIG")  # fmt: skip


@dataclass
class PostCallDemo:
    report: CallReport | None
    fix_id: str | None = None
    status: str | None = None
    diff: str | None = None
    branch: str | None = None
    commit: str | None = None
    repo: Path | None = None


def render_report(report: CallReport) -> str:
    lines = [
        f"Post-call report: {report.tenant_id}/{report.call_id} (agent {report.agent_id}, "
        f"window {report.window}, auditor {report.auditor.status})",
        f"  {report.summary}",
    ]
    for e in report.entries:
        counted = "counted" if e.counted else "advisory, not counted"
        lines += [
            f"  - {e.pattern_id} [{e.severity}, confidence {e.confidence:.2f}, {counted}]",
            f"    evidence turns: {', '.join(e.evidence_turn_ids)}",
            *[f"      {ev.check}/{ev.code}: {ev.detail}" for ev in e.evidence[:3]],
            f"    what went wrong: {e.what_went_wrong}",
            f"    root cause:      {e.root_cause}",
            f"    prompt change:   {e.proposed_prompt_change}",
        ]
    if report.transcript_ref is not None:
        lines.append(
            f"  transcript: s3://{report.transcript_ref.bucket}/{report.transcript_ref.key}"
        )
    return "\n".join(lines)


def create_local_repo(path: Path) -> Path:
    """A git repository with the agent's prompt on `main` (one commit)."""
    (path / "prompts").mkdir(parents=True, exist_ok=True)
    (path / PROMPT_PATH).write_text(DEMO_PROMPT, encoding="utf-8")
    env = {**os.environ, "GIT_AUTHOR_NAME": "Demo", "GIT_AUTHOR_EMAIL": "demo@localhost",
           "GIT_COMMITTER_NAME": "Demo", "GIT_COMMITTER_EMAIL": "demo@localhost"}  # fmt: skip
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "."],
        ["commit", "-q", "-m", "agent prompt"],
    ):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True,
                       timeout=10)  # fmt: skip
    return path


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    with patch.dict(os.environ, values):
        for name in _LLM_ENV:
            os.environ.pop(name, None)
        yield


_QUIET_LOCK = threading.Lock()


def _quiet(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """The handler with its stdout (Powertools' JSON logs and EMF metrics) swallowed. One at a
    time, so the process-wide redirection is always undone in order."""

    def run(event: Any, context: Any) -> Any:
        with _QUIET_LOCK, contextlib.redirect_stdout(io.StringIO()):
            return handler(event, context)

    return run


def _wait(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("the FixPr workflow did not get there in time")


def show_post_call(
    store: object,
    call_id: str,
    *,
    tenant_id: str = "default",
    out: TextIO | None = None,
    approve: bool = True,
    workdir: Path | None = None,
    ended_at: float | None = None,
    root: Path = REPO_ROOT,
) -> PostCallDemo:
    """Print the call's report and run FixPr to the approval step (and on, with `approve`)."""
    from mirror.fixes import tasks
    from mirror.fixes.approval import FixApprovals
    from mirror.fixes.store import FixStore
    from mirror.reports.service import PostCallReportService, ReportSettings
    from mirror.reports.store import DynamoDBReportStore, FixWorkflowStarter
    from mirror_dev.reports_local import (
        create_reports_table,
        deploy_fix_pr,
        handlers_by_function,
        in_process_lambdas,
        load_fix_pr_handlers,
        moto_for_workflows,
        reports_table_properties,
    )

    out = out or sys.stdout
    suffix = uuid.uuid4().hex[:8]
    table = f"mirror-demo-reports-{suffix}"
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mirror-demo-repo-"))
    repo = create_local_repo(workdir)
    env = {**_QUIET_ENV, "REPORTS_TABLE": table, "REPO_PROVIDER": "local", "REPO": str(repo),
           "PROMPT_PATH": PROMPT_PATH, "AWS_DEFAULT_REGION": REGION}  # fmt: skip
    logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)  # its own failure dumps
    with _environment(env), moto_for_workflows():
        import boto3

        session = boto3.session.Session(region_name=REGION)
        ddb = session.client("dynamodb")
        create_reports_table(ddb, table, reports_table_properties(root / "template.yaml"))
        tasks.reset()
        stack = deploy_fix_pr(session, root, prefix=f"mirror-demo-fixpr-{suffix}", region=REGION)
        handlers = {
            n: _quiet(h) for n, h in handlers_by_function(stack, load_fix_pr_handlers(root)).items()
        }
        sfn = session.client("stepfunctions")
        fixes = FixStore(table, client=ddb)
        with in_process_lambdas(handlers):
            service = PostCallReportService(
                state=store,  # type: ignore[arg-type]
                reports=DynamoDBReportStore(table, client=ddb),
                settings=ReportSettings(
                    reports_table=table, threshold=1, state_machine_arn=stack.state_machine_arn
                ),  # fmt: skip
                starter=FixWorkflowStarter(stack.state_machine_arn, client=sfn),
            )
            detail = CallEndedDetail(
                tenant_id=tenant_id, call_id=call_id, ended_at=ended_at or time.time(),
                reason="demo",
            )  # fmt: skip
            outcome = service.handle(detail)
            result = PostCallDemo(outcome.report, repo=repo)
            if outcome.report is None:
                print(f"No report: call {tenant_id}/{call_id} has no recorded state.", file=out)
                return result
            print(render_report(outcome.report), file=out)
            if not outcome.fixes:
                print("\nNo counted failure pattern: no fix workflow.", file=out)
                return result
            for f in outcome.fixes:
                print(f"\nFixPr started (threshold 1): {f.name}", file=out)
            fix_id = outcome.fixes[0].name
            result.fix_id = fix_id

            def at(*statuses: str) -> bool:
                fix = fixes.get(fix_id)
                return fix is not None and fix.status in statuses

            _wait(lambda: at("awaiting_approval", "failed"))
            fix = fixes.get(fix_id)
            assert fix is not None
            result.status, result.diff = fix.status, fix.diff
            if fix.status != "awaiting_approval":
                print(f"FixPr failed: {fix.error}: {fix.cause}", file=out)
                return result
            print(f"\nFixPr {fix_id} is waiting for approval. Validated diff:", file=out)
            print("  " + "\n  ".join((fix.diff or "").rstrip("\n").splitlines()), file=out)
            print("  checks: " + "; ".join(fix.checks), file=out)
            print(f"  approve: POST /v1/fixes/{fix_id}/approve   reject: .../reject", file=out)
            if not approve:
                return result
            FixApprovals(fixes, sfn).decide(fix_id, True, "demo reviewer (local run)", "demo")
            _wait(lambda: at("opened", "failed"))
            fix = fixes.get(fix_id)
            assert fix is not None
            result.status, result.branch, result.commit = fix.status, fix.branch, fix.commit
            if fix.status != "opened":
                print(f"FixPr failed: {fix.error}: {fix.cause}", file=out)
                return result
            print(
                f"\nApproved. The PR step committed locally (nothing pushed) in {repo}:\n"
                f"  branch {fix.branch}\n  commit {fix.commit}\n"
                f"  it would push: git push origin {fix.branch}",
                file=out,
            )
            return result


def seed_demo_call(store: object, call_id: str = "CA-demo-post-call", tenant_id: str = "pizzeria",
                   now: float | None = None) -> str:  # fmt: skip
    """Record a small finished call (the caller switches to a medium pizza, the agent orders a
    large one without a read-back: blocked; then misstates the total) with its verdicts."""
    from mirror.models import (
        AgentMessage,
        CallContext,
        CustomerMessage,
        Reason,
        ToolCall,
        ToolMessage,
        Verdict,
    )

    now = time.time() if now is None else now
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id)
    order = ToolCall(id="call-2", name="place_order",
                     args={"items": [{"name": "pepperoni pizza", "size": "large"}]})  # fmt: skip
    turns = [
        ("turn-1", [CustomerMessage(role="customer",
                                    text="A large pepperoni, actually make it medium.")],
         Verdict(decision="allow", score=0.0)),
        ("turn-2", [AgentMessage(role="agent", text="Sure, placing that now.",
                                 tool_calls=[order])],
         Verdict(decision="block", score=0.95, blocked_tool_call_ids=["call-2"],
                 should_report=True, reasons=[
                     Reason(check="retraction", tier="tier0", code="wrong_variant", score=0.95,
                            evidence="place_order uses 'large', which the caller took back "
                                     "('actually make it medium')", tool_call_id="call-2"),
                     Reason(check="confirmation", tier="tier0", code="no_confirmation_yet",
                            score=0.9, evidence="place_order: details not read back yet",
                            tool_call_id="call-2")])),
        ("turn-3", [ToolMessage(role="tool", name="quote", text='{"total": 18.5}'),
                    AgentMessage(role="agent", text="That comes to $21.50.")],
         Verdict(decision="intervene", score=0.8, should_report=True, reasons=[
             Reason(check="amount_consistency", tier="tier0", code="wrong_amount", score=0.8,
                    evidence="the agent says 21.5, the quote said 18.5")])),
    ]  # fmt: skip
    for i, (turn_id, messages, verdict) in enumerate(turns):
        store.record_turn(ctx, turn_id, messages, verdict, now + i, 24 * 3600, 200)  # type: ignore[attr-defined]
    return call_id
