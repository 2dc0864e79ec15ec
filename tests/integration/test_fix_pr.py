"""The FixPr workflow end to end: the real statemachines/fix_pr.asl.json executed by moto, every
Task invoking the real handler from functions/fix_pr/ in-process (mirror_dev.reports_local), the fix
record in moto DynamoDB, the token in moto Secrets Manager, and the approval sent through the
real Api app. GitHub (and OpenAI, where an LLM drafts) are faked at the HTTP layer with respx in
strict mode: an unmocked request fails the test.

Retry intervals are the deployed ones (5 s, x2, FULL jitter): moto's interpreter sleeps them with
`time.sleep`, which these tests replace to record the waits instead of spending them.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import httpx
import pytest
import respx

from mirror.fixes import tasks
from mirror.fixes.store import FixStore
from mirror.reports.models import CallReport, Evidence, ReportEntry
from mirror.reports.naming import execution_name
from mirror.reports.store import DynamoDBReportStore
from mirror_dev.reports_local import (
    create_reports_table,
    deploy_fix_pr,
    handlers_by_function,
    in_process_lambdas,
    load_fix_pr_handlers,
    moto_for_workflows,
    reports_table_properties,
)
from tests.conftest import REPO_ROOT, TEMPLATE_PATH, boto_session
from tests.fakes.openai_http import chat_completion
from tests.support.api import asgi, error_of, http_event, invoke
from tests.support.handlers import CurrentStdout, reset_logger

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mangum"),
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

REPORTS_TABLE = "mirror-reports-test"
SERVICE = "mirror-fixpr-test"
REPO = "acme/pizza-agent"
GH = f"https://api.github.com/repos/{REPO}"
TOKEN = "ghp_test_token_0123456789"
SECRET = "mirror/github-token"
PROMPT_PATH = "prompts/system.md"
PROMPT = "You are Tony's Pizza phone agent.\nBe brief and friendly.\n"
BASE_SHA = "b" * 40
AGENT, PATTERN, WINDOW = "pizza-agent", "retracted_value_used", "20260115"
FIX_ID = execution_name(AGENT, PATTERN, WINDOW)
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


# --- a fake GitHub ---------------------------------------------------------------------------


@dataclass
class FakeGitHub:
    """The GitHub REST endpoints the workflow uses, with state: what was committed and opened.
    `fail` maps a (method, path suffix) to statuses to answer before the real answer."""

    files: dict[str, str] = field(default_factory=lambda: {PROMPT_PATH: PROMPT})
    fail: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    trees: list[dict[str, Any]] = field(default_factory=list)
    commits: list[dict[str, Any]] = field(default_factory=list)
    refs: list[dict[str, Any]] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def install(self, router: respx.MockRouter) -> None:
        router.route(host="api.github.com").mock(side_effect=self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        path = request.url.path.removeprefix(f"/repos/{REPO}")
        self.requests.append((request.method, path))
        for (method, suffix), statuses in self.fail.items():
            if request.method == method and path.endswith(suffix) and statuses:
                return httpx.Response(statuses.pop(0), json={"message": "Server Error"})
        body = json.loads(request.content) if request.content else None
        if request.method == "GET" and path == "/git/ref/heads/main":
            return httpx.Response(200, json={"object": {"sha": BASE_SHA, "type": "commit"}})
        if request.method == "GET" and path.startswith("/contents/"):
            name = path.removeprefix("/contents/")
            assert request.url.params["ref"] == BASE_SHA
            if name not in self.files:
                return httpx.Response(404, json={"message": "Not Found"})
            content = base64.b64encode(self.files[name].encode()).decode()
            return httpx.Response(200, json={"type": "file", "encoding": "base64",
                                             "content": content})  # fmt: skip
        if request.method == "GET" and path == f"/git/commits/{BASE_SHA}":
            return httpx.Response(200, json={"sha": BASE_SHA, "tree": {"sha": "t" * 40}})
        if request.method == "POST" and path == "/git/trees":
            self.trees.append(body)
            return httpx.Response(201, json={"sha": "1" * 40})
        if request.method == "POST" and path == "/git/commits":
            self.commits.append(body)
            return httpx.Response(201, json={"sha": "c" * 40})
        if request.method == "POST" and path == "/git/refs":
            self.refs.append(body)
            return httpx.Response(201, json={"ref": body["ref"]})
        if request.method == "POST" and path == "/pulls":
            self.pulls.append(body)
            return httpx.Response(
                201, json={"html_url": f"https://github.com/{REPO}/pull/7", "number": 7}
            )
        return httpx.Response(404, json={"message": f"unexpected {request.method} {path}"})

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if m != "GET"]


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    sfn: Any
    arn: str
    fixes: FixStore
    github: FakeGitHub
    router: respx.MockRouter
    calls: list[tuple[str, Any]]
    sleeps: list[float]
    api: Callable[[], ModuleType]

    def start(self) -> str:
        payload = {"fix_id": FIX_ID, "agent_id": AGENT, "pattern_id": PATTERN, "window": WINDOW,
                   "tenant_id": "pizzeria", "threshold": 3}  # fmt: skip
        return self.sfn.start_execution(
            stateMachineArn=self.arn, name=FIX_ID, input=json.dumps(payload)
        )["executionArn"]

    def wait(self, arn: str, until: Callable[[], bool] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            d = self.sfn.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING" or (until is not None and until()):
                return d
            time.sleep(0.02)
        raise AssertionError(f"execution still running: {self.steps(arn)}")

    def awaiting(self) -> bool:
        fix = self.fixes.get(FIX_ID)
        return fix is not None and fix.status == "awaiting_approval"

    def steps(self, arn: str) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=arn)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events
                if "stateEnteredEventDetails" in e]  # fmt: skip

    def invoked(self) -> list[str]:
        return [name.removeprefix("mirror-fixpr-") for name, _ in self.calls]


def seed_reports(client: Any, n: int = 3) -> None:
    store = DynamoDBReportStore(REPORTS_TABLE, client=client)
    for i in range(n):
        ended = 1_768_500_000.0 + i
        entry = ReportEntry(
            pattern_id=PATTERN,
            title="A value the caller took back was used",
            severity="high",
            occurrences=1,
            evidence_turn_ids=[f"t{i}-4"],
            evidence=[Evidence(turn_id=f"t{i}-4", decision="block", check="retraction",
                               code="wrong_variant", tier="tier0", score=0.95,
                               tool_call_id="call-2",
                               detail="place_order uses 'large', which the caller took back")],
            what_went_wrong="The agent used a size the caller had corrected.",
            root_cause="x",
            proposed_prompt_change="y",
            confidence=0.95,
            counted=True,
        )  # fmt: skip
        report = CallReport(
            tenant_id="pizzeria", call_id=f"CA-{i}", agent_id=AGENT, ended_at=ended,
            window=WINDOW, generated_at=ended, turns=4, summary="s", entries=[entry],
        )  # fmt: skip
        assert store.put_report(report, now=ended, ttl_s=3600, count_ttl_s=3600)


@pytest.fixture
def stack(
    call_state_table: str,
    dynamodb_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    load_module: Callable[..., ModuleType],
) -> Iterator[Stack]:
    env = {
        "REPORTS_TABLE": REPORTS_TABLE,
        "REPO_PROVIDER": "github",
        "REPO": REPO,
        "PROMPT_PATH": PROMPT_PATH,
        "FIXABLE_FILES": f"{PROMPT_PATH},config/tools.json",
        "REPO_TOKEN_SECRET": SECRET,
        "REPORT_URL_TEMPLATE": "https://mirror.example/reports/{tenant_id}/{call_id}",
        "POWERTOOLS_SERVICE_NAME": SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": "MirrorTest",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("OPENAI_API_KEY", "MIRROR_CONFIG", "REPO_API_URL", "FIX_MAX_FAILURES"):
        monkeypatch.delenv(name, raising=False)
    sleeps: list[float] = []
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class _Clock:
        @staticmethod
        def sleep(seconds: float) -> None:
            sleeps.append(seconds)

    monkeypatch.setattr(retrier_decl, "time", _Clock)
    tasks.reset()
    session = boto_session()
    with moto_for_workflows():
        create_reports_table(
            dynamodb_client, REPORTS_TABLE, reports_table_properties(TEMPLATE_PATH)
        )
        session.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=SECRET, SecretString=json.dumps({"token": TOKEN})
        )
        seed_reports(dynamodb_client)
        deployed = deploy_fix_pr(session, REPO_ROOT)
        reset_logger(SERVICE)
        handlers = handlers_by_function(deployed, load_fix_pr_handlers(REPO_ROOT))
        for handler in logging.getLogger(SERVICE).handlers:  # log to the current test's stdout
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(CurrentStdout())  # type: ignore[arg-type]
        github = FakeGitHub()
        with (
            respx.mock(assert_all_mocked=True, assert_all_called=False) as router,
            in_process_lambdas(handlers) as calls,
        ):
            github.install(router)
            yield Stack(
                sfn=session.client("stepfunctions", region_name="us-east-1"),
                arn=deployed.state_machine_arn,
                fixes=FixStore(REPORTS_TABLE, client=dynamodb_client),
                github=github,
                router=router,
                calls=calls,
                sleeps=sleeps,
                api=load_module,
            )
    tasks.reset()
    reset_logger(SERVICE)


def _approve(stack: Stack, reviewer: str = "alice@acme.test") -> httpx.Response:
    api = stack.api()
    return asgi(api, "POST", f"/v1/fixes/{FIX_ID}/approve",
                json_body={"reviewer": reviewer, "reason": "reads right"})  # fmt: skip


# --- the tests -----------------------------------------------------------------------------------


def test_happy_path_waits_for_approval_then_opens_the_pull_request(stack: Stack) -> None:
    arn = stack.start()
    waiting = stack.wait(arn, until=stack.awaiting)
    assert waiting["status"] == "RUNNING"
    assert stack.invoked() == ["collect", "draft", "validate", "await-approval"]
    assert stack.github.writes == []  # nothing opened before the approval
    fix = stack.fixes.get(FIX_ID)
    assert fix is not None and fix.task_token and fix.files == [PROMPT_PATH]
    assert "+## Mirror: A value the caller took back was used" in (fix.diff or "")
    assert any("applies cleanly" in c for c in fix.checks)

    response = _approve(stack)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"
    done = stack.wait(arn)

    assert done["status"] == "SUCCEEDED", stack.steps(arn)
    assert stack.steps(arn)[-3:] == ["ApprovalDecision", "OpenPullRequest", "RecordOpened"]
    (tree,) = stack.github.trees
    (entry,) = tree["tree"]
    assert entry["path"] == PROMPT_PATH and entry["content"].startswith(PROMPT)
    assert "use only the corrected value" in entry["content"]
    (commit,) = stack.github.commits
    assert commit["parents"] == [BASE_SHA] and commit["tree"] == "1" * 40
    assert stack.github.refs == [{"ref": f"refs/heads/mirror/{FIX_ID}", "sha": "c" * 40}]
    (pr,) = stack.github.pulls
    assert pr["head"] == f"mirror/{FIX_ID}" and pr["base"] == "main"
    body = pr["body"]
    assert "approved by **alice@acme.test**" in body and '"reads right"' in body
    assert "[pizzeria/CA-0](https://mirror.example/reports/pizzeria/CA-0)" in body
    assert "### What was not reviewed" in body and "**not** run against the agent's tests" in body
    fix = stack.fixes.get(FIX_ID)
    assert fix is not None and fix.status == "opened" and fix.task_token is None
    assert fix.pr_url == f"https://github.com/{REPO}/pull/7" and fix.reviewer == "alice@acme.test"


def test_a_second_decision_and_an_unknown_fix_are_4xx(stack: Stack) -> None:
    arn = stack.start()
    stack.wait(arn, until=stack.awaiting)
    api = stack.api()
    first = invoke(api, http_event("POST", f"/v1/fixes/{FIX_ID}/approve",
                                   route="/v1/fixes/{fix_id}/approve", body={}))  # fmt: skip
    again = asgi(api, "POST", f"/v1/fixes/{FIX_ID}/reject",
                 json_body={"reviewer": "bob", "reason": "no"})  # fmt: skip
    unknown = asgi(api, "POST", "/v1/fixes/fix-nope/approve", json_body={"reviewer": "bob"})

    assert first[0] == 200
    assert first[2]["reviewer"] == "arn:aws:iam::123456789012:user/voice-agent"  # the IAM caller
    assert again.status_code == 409
    # the workflow may already have gone on from `approved` to `opened` by now
    assert re.search(
        r"\(status (approved|opened) by arn:aws:iam::123456789012:user/voice-agent\)",
        error_of(again.json(), "fix_conflict")["message"],
    )
    assert unknown.status_code == 404
    error_of(unknown.json(), "fix_not_found")
    assert stack.wait(arn)["status"] == "SUCCEEDED"
    assert len(stack.github.pulls) == 1


def test_rejection_records_who_and_why_and_ends_without_a_pull_request(stack: Stack) -> None:
    arn = stack.start()
    stack.wait(arn, until=stack.awaiting)
    api = stack.api()
    no_reason = asgi(api, "POST", f"/v1/fixes/{FIX_ID}/reject", json_body={"reviewer": "bob"})
    assert no_reason.status_code == 422
    assert stack.fixes.get(FIX_ID).status == "awaiting_approval"  # type: ignore[union-attr]

    why = {"reviewer": "bob", "reason": "the prompt is being rewritten"}
    response = asgi(api, "POST", f"/v1/fixes/{FIX_ID}/reject", json_body=why)
    done = stack.wait(arn)

    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert done["status"] == "SUCCEEDED"
    assert stack.steps(arn)[-3:] == ["ApprovalDecision", "RecordRejection", "Rejected"]
    assert json.loads(done["output"])["record"]["reviewer"] == "bob"
    assert stack.github.writes == []
    fix = stack.fixes.get(FIX_ID)
    assert fix is not None and fix.status == "rejected" and fix.task_token is None
    assert (fix.reviewer, fix.reason) == ("bob", "the prompt is being rewritten")


def test_an_llm_draft_touching_another_file_is_rejected_and_recorded(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    tasks.reset()  # the drafting LLM is built from the environment
    evil = "--- a/src/agent.py\n+++ b/src/agent.py\n@@ -1,1 +1,1 @@\n-x = 1\n+x = 2\n"
    llm = stack.router.post(OPENAI_URL).mock(
        return_value=httpx.Response(200, json=chat_completion(json.dumps({"diff": evil})))
    )
    arn = stack.start()
    done = stack.wait(arn)

    assert llm.called
    sent = json.loads(llm.calls.last.request.content)
    assert json.dumps(PROMPT) in sent["messages"][1]["content"]  # the LLM saw the prompt file
    assert done["status"] == "FAILED" and done["error"] == "FixPrFailed"
    assert stack.steps(arn) == ["CollectFailures", "DraftPatch", "ValidatePatch",
                                "RecordFailure", "Failed"]  # fmt: skip
    fix = stack.fixes.get(FIX_ID)
    assert fix is not None and fix.status == "failed" and fix.error == "PatchRejected"
    assert "outside the fixable set: src/agent.py" in (fix.cause or "")
    assert stack.github.writes == [] and fix.task_token is None
    assert stack.sleeps == []  # a rejected patch is not retried


def test_a_github_5xx_is_retried_with_backoff_then_succeeds(stack: Stack) -> None:
    stack.github.fail[("POST", "/pulls")] = [502, 503]
    arn = stack.start()
    stack.wait(arn, until=stack.awaiting)
    assert _approve(stack).status_code == 200
    done = stack.wait(arn)

    assert done["status"] == "SUCCEEDED", stack.steps(arn)
    assert stack.invoked().count("open-pr") == 3
    assert len(stack.github.pulls) == 1
    # FULL jitter: each wait is drawn from [0, 5 s x 2^n] (moto's retrier, the deployed values)
    assert len(stack.sleeps) == 2
    assert 0 <= stack.sleeps[0] <= 5 and 0 <= stack.sleeps[1] <= 10
    assert stack.fixes.get(FIX_ID).status == "opened"  # type: ignore[union-attr]


def test_a_permanent_github_failure_is_caught_and_recorded(stack: Stack) -> None:
    stack.github.fail[("GET", "/git/ref/heads/main")] = [401]
    arn = stack.start()
    done = stack.wait(arn)

    assert done["status"] == "FAILED" and done["error"] == "FixPrFailed"
    assert stack.steps(arn)[-3:] == ["DraftPatch", "RecordFailure", "Failed"]
    assert stack.invoked().count("draft") == 1 and stack.sleeps == []
    fix = stack.fixes.get(FIX_ID)
    assert fix is not None and fix.status == "failed" and fix.error == "RepoError"
    assert "HTTP 401" in (fix.cause or "") and TOKEN not in (fix.cause or "")


def test_a_decision_the_workflow_no_longer_accepts_is_409_and_expires_the_fix(
    stack: Stack, dynamodb_client: Any
) -> None:
    arn = stack.start()
    stack.wait(arn, until=stack.awaiting)
    token = stack.fixes.get(FIX_ID).task_token  # type: ignore[union-attr]
    dynamodb_client.update_item(  # a token Step Functions no longer knows (InvalidToken)
        TableName=REPORTS_TABLE,
        Key={"pk": {"S": f"FIX#{FIX_ID}"}, "sk": {"S": "FIX"}},
        UpdateExpression="SET task_token = :t",
        ExpressionAttributeValues={":t": {"S": "stale-token"}},
    )
    response = _approve(stack)

    assert response.status_code == 409, response.text
    assert "InvalidToken" in error_of(response.json(), "fix_conflict")["message"]
    assert stack.fixes.get(FIX_ID).status == "expired"  # type: ignore[union-attr]
    stack.sfn.send_task_failure(taskToken=token, error="Test", cause="end the execution")
    assert stack.wait(arn)["status"] == "FAILED"
    assert stack.github.writes == []


def test_two_reviewers_at_once_one_decision_wins(stack: Stack) -> None:
    arn = stack.start()
    stack.wait(arn, until=stack.awaiting)
    api = stack.api()
    results: list[int] = []

    def decide(path: str, reviewer: str) -> None:
        r = asgi(api, "POST", f"/v1/fixes/{FIX_ID}/{path}",
                 json_body={"reviewer": reviewer, "reason": "r"})  # fmt: skip
        results.append(r.status_code)

    threads = [threading.Thread(target=decide, args=a) for a in (("approve", "a"),
                                                                  ("reject", "b"))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]
    assert stack.wait(arn)["status"] == "SUCCEEDED"
