"""PostCallReport: the handler (functions/post_call_report/app.py) on moto DynamoDB, S3, Step
Functions, EventBridge and SQS, reading calls recorded through the real DynamoDB state store.
OpenAI (the auditor) is faked at the HTTP layer with respx in strict mode.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import respx

from mirror.calls import CallsService, EventBridgeCallEnded
from mirror.models import (
    AgentMessage,
    CallContext,
    CustomerMessage,
    Reason,
    ToolCall,
    ToolMessage,
    Verdict,
)
from mirror.reports import pattern_id, window_of
from mirror.reports.models import CallReport
from mirror.reports.naming import MAX_EXECUTION_NAME, execution_name
from mirror.reports.service import ReportSettings
from mirror.reports.store import DynamoDBReportStore
from mirror.state import DynamoDBStateStore
from mirror_dev.local import import_file, load_template
from mirror_dev.reports_local import (
    FIX_PR_STEPS,
    create_reports_table,
    reports_table_properties,
    substitute,
)
from tests.conftest import REPO_ROOT, TEMPLATE_PATH, TEST_REGION, boto_session
from tests.fakes.lambda_context import FakeContext
from tests.fakes.openai_http import chat_completion
from tests.support.handlers import CurrentStdout, reset_logger
from tests.support.poison import poison

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

REPORTS_TABLE = "mirror-reports-test"
BUCKET = "mirror-reports-bucket-test"
SERVICE = "mirror-report-test"
TENANT = "pizzeria"
ENDED_AT = 1_768_500_000.0
TTL_S = 20 * 365 * 86_400
"""The calls are recorded in January 2026 and read now: keep them live."""
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
HANDLER_PATH = REPO_ROOT / "functions" / "post_call_report" / "app.py"


# --- pure parts --------------------------------------------------------------------------------


def test_pattern_ids_come_from_check_and_code_only() -> None:
    assert pattern_id("retraction", "wrong_variant") == "retracted_value_used"
    assert pattern_id("retraction", "wrong_amount") == "retracted_value_used"
    assert pattern_id("amount_consistency", "wrong_amount") == "amount_mismatch"
    assert pattern_id("confirmation", "no_confirmation_yet") == "unconfirmed_irreversible"
    assert pattern_id("tier2_llm", "wrong_object") == "wrong_object"
    assert pattern_id("Some Check!", "new-code") == "some_check_new_code"


def test_execution_names_are_deterministic_safe_and_distinct() -> None:
    long_agent = "agent." + "x" * 120
    names = {
        execution_name("a.b", "wrong_object", "20260115"),
        execution_name("a_b", "wrong_object", "20260115"),
        execution_name("a.b", "wrong_object", "20260122"),
        execution_name(long_agent, "retracted_value_used", "20260115"),
    }
    assert len(names) == 4  # sanitising "a.b" to "a_b" cannot merge two fixes
    for name in names:
        assert 1 <= len(name) <= MAX_EXECUTION_NAME
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in name), name
    assert execution_name("a.b", "wrong_object", "20260115") == execution_name(
        "a.b", "wrong_object", "20260115"
    )


def test_windows_are_epoch_aligned() -> None:
    assert window_of(0, 7) == "19700101"
    assert window_of(7 * 86_400 - 0.001, 7) == "19700101"
    assert window_of(7 * 86_400, 7) == "19700108"
    assert window_of(ENDED_AT, 1) == "20260115"
    with pytest.raises(ValueError, match="window_days"):
        window_of(ENDED_AT, 0)


def test_settings_name_the_bad_variable() -> None:
    with pytest.raises(ValueError, match="FIX_THRESHOLD"):
        ReportSettings.from_env({"REPORTS_TABLE": "t", "FIX_THRESHOLD": "0"})
    with pytest.raises(ValueError, match="REPORTS_TABLE"):
        ReportSettings.from_env({})
    s = ReportSettings.from_env({"REPORTS_TABLE": "t", "FIX_WINDOW_DAYS": "14"})
    assert (s.threshold, s.window_days, s.bucket, s.state_machine_arn) == (3, 14, None, None)


# --- a recorded call ---------------------------------------------------------------------------

TOOL_ORDER = ToolCall(
    id="call-2",
    name="place_order",
    args={"items": [{"name": "pepperoni pizza", "size": "large"}]},
)


def _record(store: DynamoDBStateStore, call_id: str, *, agent_id: str | None = None,
            filler: int = 0) -> CallContext:  # fmt: skip
    """A pizza call: the caller changes large to medium, the agent orders large (blocked), says
    a wrong total (intervene), and one advisory finding."""
    ctx = CallContext(call_id=call_id, tenant_id=TENANT)
    now = ENDED_AT - 60
    turns: list[tuple[str, list[Any], Verdict]] = [
        (
            "t1",
            [CustomerMessage(role="customer", text="A large pepperoni, actually make it medium.")]
            + [CustomerMessage(role="customer", text="x" * 200) for _ in range(filler)],
            Verdict(decision="allow", score=0.0),
        ),
        (
            "t2",
            [AgentMessage(role="agent", text="Placing it.", tool_calls=[TOOL_ORDER])],
            Verdict(
                decision="block",
                score=0.95,
                reasons=[
                    Reason(check="retraction", tier="tier0", code="wrong_variant", score=0.95,
                           evidence="place_order uses 'large', which the caller took back",
                           tool_call_id="call-2"),
                    Reason(check="confirmation", tier="tier0", code="no_confirmation_yet",
                           score=0.9, evidence="place_order: no yes yet", tool_call_id="call-2"),
                ],
                blocked_tool_call_ids=["call-2"],
                should_report=True,
            ),
        ),
        (
            "t3",
            [ToolMessage(role="tool", name="quote", text='{"total": 21.5}'),
             AgentMessage(role="agent", text="That's $25 in total.")],
            Verdict(
                decision="intervene",
                score=0.8,
                reasons=[
                    Reason(check="amount_consistency", tier="tier0", code="wrong_amount",
                           score=0.8, evidence="the agent says 25, the tool said 21.5"),
                    Reason(check="grounding", tier="tier0", code="ungrounded_value", score=0.3,
                           evidence="advisory only"),
                    Reason(check="tier_failure", tier="tier1", code="tier_unavailable",
                           score=1.0, evidence="tier1 timed out"),
                ],
                should_report=True,
            ),
        ),
    ]  # fmt: skip
    for turn_id, messages, verdict in turns:
        assert store.record_turn(ctx, turn_id, messages, verdict, now, TTL_S, 200)
        now += 1
    if agent_id is not None:
        store.put_call_meta(ctx, {"agent_id": agent_id}, now, TTL_S)
    return ctx


def _event(call_id: str, source: str = "mirror.bridge") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "c0ffee00-0000-4000-8000-000000000001",
        "detail-type": "CallEnded",
        "source": source,
        "account": "123456789012",
        "time": "2026-01-15T18:40:00Z",
        "region": TEST_REGION,
        "resources": [],
        "detail": {"tenant_id": TENANT, "call_id": call_id, "ended_at": ENDED_AT,
                   "reason": "hangup", "counts": {"turns": 3}},
    }  # fmt: skip


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def aws(call_state_table: str, dynamodb_client: Any) -> dict[str, Any]:
    session = boto_session()
    create_reports_table(dynamodb_client, REPORTS_TABLE, reports_table_properties(TEMPLATE_PATH))
    s3 = session.client("s3", region_name=TEST_REGION)
    s3.create_bucket(Bucket=BUCKET)
    return {
        "ddb": dynamodb_client,
        "s3": s3,
        "sfn": session.client("stepfunctions", region_name=TEST_REGION),
        "store": DynamoDBStateStore(call_state_table, client=dynamodb_client),
        "reports": DynamoDBReportStore(REPORTS_TABLE, client=dynamodb_client),
        "call_table": call_state_table,
    }


def _state_machine(sfn: Any) -> str:
    iam = boto_session().client("iam", region_name=TEST_REGION)
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    arns = {k: f"arn:aws:lambda:{TEST_REGION}:123456789012:function:{v}"
            for k, v in FIX_PR_STEPS.items()}  # fmt: skip
    definition = substitute((REPO_ROOT / "statemachines/fix_pr.asl.json").read_text(), arns)
    return sfn.create_state_machine(name="fixpr", definition=definition, roleArn=role)[
        "stateMachineArn"
    ]


@pytest.fixture
def load_handler(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ModuleType]]:
    """Import the handler fresh with `env` on top of the test environment."""

    def load(**env: str) -> ModuleType:
        base = {
            "CALL_TABLE": aws["call_table"],
            "REPORTS_TABLE": REPORTS_TABLE,
            "POWERTOOLS_SERVICE_NAME": SERVICE,
            "POWERTOOLS_METRICS_NAMESPACE": "MirrorTest",
            "POWERTOOLS_TRACE_DISABLED": "1",
        }
        for name in ("REPORTS_BUCKET", "FIX_STATE_MACHINE_ARN", "FIX_THRESHOLD", "MIRROR_CONFIG",
                     "REPORT_INLINE_TRANSCRIPT_MAX_BYTES", "OPENAI_API_KEY"):  # fmt: skip
            monkeypatch.delenv(name, raising=False)
        for name, value in {**base, **env}.items():
            monkeypatch.setenv(name, value)
        reset_logger(SERVICE)
        module = import_file(HANDLER_PATH, "post_call_report")
        for handler in logging.getLogger(SERVICE).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(CurrentStdout())  # type: ignore[arg-type]
        return module

    yield load
    reset_logger(SERVICE)


def _items(ddb: Any) -> list[dict[str, Any]]:
    items = ddb.scan(TableName=REPORTS_TABLE)["Items"]
    return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


def _run(module: ModuleType, event: Any) -> dict[str, Any]:
    return module.lambda_handler(event, FakeContext(function_name="post-call-report"))


# --- the report --------------------------------------------------------------------------------


def test_a_call_gets_one_entry_per_pattern_stored_and_queryable(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    _record(aws["store"], "CA-1", agent_id="tony-v2")
    result = _run(load_handler(), _event("CA-1"))

    assert result["status"] == "written" and result["agent_id"] == "tony-v2"
    assert result["window"] == window_of(ENDED_AT, 7)
    report = aws["reports"].get_report(TENANT, "CA-1")
    assert isinstance(report, CallReport)
    by_id = {e.pattern_id: e for e in report.entries}
    assert list(by_id) == ["retracted_value_used", "unconfirmed_irreversible",
                           "amount_mismatch", "ungrounded_tool_argument"]  # fmt: skip
    retracted = by_id["retracted_value_used"]
    assert (retracted.severity, retracted.evidence_turn_ids, retracted.counted) == (
        "high", ["t2"], True)  # fmt: skip
    assert retracted.evidence[0].tool_call_id == "call-2" and retracted.confidence == 0.95
    assert "corrected value" in retracted.proposed_prompt_change
    assert by_id["amount_mismatch"].severity == "medium"
    advisory = by_id["ungrounded_tool_argument"]
    assert advisory.severity == "low" and not advisory.counted  # never drafts a fix alone
    assert report.decisions == {"allow": 1, "block": 1, "intervene": 1}
    assert report.end_reason == "hangup" and report.auditor.status == "skipped"
    assert report.transcript is not None and len(report.transcript) == 4
    assert report.transcript[1].tool_calls[0].args == TOOL_ORDER.args  # type: ignore[union-attr]

    everything = aws["reports"].list_entries("tony-v2")
    one = aws["reports"].list_entries("tony-v2", "amount_mismatch")
    windowed = aws["reports"].list_entries("tony-v2", "amount_mismatch", report.window)
    assert len(everything) == 4 and [s.call_id for s in one] == ["CA-1"] and len(windowed) == 1
    assert aws["reports"].list_entries("tony-v2", "amount_mismatch", "19700101") == []
    assert aws["reports"].get_count("tony-v2", "amount_mismatch", report.window) == 1
    assert aws["reports"].get_count("tony-v2", "ungrounded_tool_argument", report.window) == 0


def test_a_redelivered_event_writes_nothing_new(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    _record(aws["store"], "CA-1")
    module = load_handler()
    first = _run(module, _event("CA-1"))
    before = _items(aws["ddb"])
    again = _run(module, _event("CA-1"))
    from_api = _run(module, _event("CA-1", source="mirror.api"))  # the Api's end of the same call
    direct = _run(module, _event("CA-1")["detail"])

    assert first["status"] == "written"
    assert [again["status"], from_api["status"], direct["status"]] == ["replayed"] * 3
    assert _items(aws["ddb"]) == before  # not one attribute changed, counters included
    assert again["patterns"] == first["patterns"]


def test_concurrent_deliveries_of_one_event_write_once(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    _record(aws["store"], "CA-1")
    containers = [load_handler() for _ in range(4)]  # one invocation at a time in each, as Lambda
    statuses: list[str] = []

    def deliver(module: ModuleType) -> None:
        statuses.append(_run(module, _event("CA-1"))["status"])

    threads = [threading.Thread(target=deliver, args=(m,)) for m in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == ["replayed"] * 3 + ["written"]
    assert aws["reports"].get_count(TENANT, "retracted_value_used", window_of(ENDED_AT, 7)) == 1


def test_two_concurrent_threshold_crossings_start_one_execution(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    sm = _state_machine(aws["sfn"])
    for call in ("CA-1", "CA-2", "CA-3", "CA-4"):
        _record(aws["store"], call)
    module = load_handler(FIX_STATE_MACHINE_ARN=sm, FIX_THRESHOLD="2")
    assert _run(module, _event("CA-1"))["fixes"] == []  # 1 of 2

    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda c=c: results.append(_run(module, _event(c))))
               for c in ("CA-2", "CA-3")]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    later = _run(module, _event("CA-4"))  # past the threshold: nothing new

    executions = aws["sfn"].list_executions(stateMachineArn=sm)["executions"]
    counted = ["retracted_value_used", "unconfirmed_irreversible", "amount_mismatch"]
    window = window_of(ENDED_AT, 7)
    assert sorted(e["name"] for e in executions) == sorted(
        execution_name(TENANT, p, window) for p in counted
    )  # one per counted pattern, the advisory one never
    # every start named one of those three: a start matching a running execution's name and
    # input returns it (StartExecution is idempotent), any other is ExecutionAlreadyExists
    arns = {e["executionArn"] for e in executions}
    starts = [f for r in [*results, later] for f in r["fixes"]]
    assert len(starts) == 9 and {f["execution_arn"] for f in starts} == arns
    (execution,) = [e for e in executions if "retracted" in e["name"]]
    described = aws["sfn"].describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"]) == {
        "fix_id": execution["name"], "agent_id": TENANT, "pattern_id": "retracted_value_used",
        "window": window, "tenant_id": TENANT, "threshold": 2,
    }  # fmt: skip


def test_a_large_transcript_goes_to_s3_with_a_pointer(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    _record(aws["store"], "CA/big#1", filler=20)
    result = _run(
        load_handler(REPORTS_BUCKET=BUCKET, REPORT_INLINE_TRANSCRIPT_MAX_BYTES="1000"),
        _event("CA/big#1"),
    )
    report = aws["reports"].get_report(TENANT, "CA/big#1")
    assert report is not None and report.transcript is None and report.transcript_ref
    ref = report.transcript_ref
    assert result["transcript_ref"]["key"] == ref.key == "transcripts/pizzeria/CA%2Fbig%231.json"
    body = aws["s3"].get_object(Bucket=BUCKET, Key=ref.key)["Body"].read()
    assert len(body) == ref.bytes > 1000 and ref.messages == len(json.loads(body)) == 24


def test_without_a_bucket_a_large_transcript_keeps_its_last_messages(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    _record(aws["store"], "CA-1", filler=20)
    _run(load_handler(REPORT_INLINE_TRANSCRIPT_MAX_BYTES="1000"), _event("CA-1"))
    report = aws["reports"].get_report(TENANT, "CA-1")
    assert report is not None and report.transcript_truncated and report.transcript
    assert len(json.dumps([m.model_dump() for m in report.transcript])) <= 1000
    assert report.transcript[-1].text == "That's $25 in total."  # type: ignore[union-attr]


def test_bad_events_are_structured_errors_and_write_nothing(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    module = load_handler()
    wrong_type = {**_event("CA-1"), "detail-type": "CallStarted"}
    foreign = _event("CA-1", source="evil.app")
    for event in (wrong_type, foreign, {"call_id": "CA-1"}, {"detail": {"tenant_id": "a#b"}}):
        result = _run(module, event)
        assert result["error"]["type"] == "invalid_event", result
    assert _items(aws["ddb"]) == []


@pytest.mark.parametrize("ended_at", [1e300, float("inf"), 1e20])
def test_an_absurd_ended_at_is_an_invalid_event_not_a_crash(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType], ended_at: float
) -> None:
    """Issue 13 item 11: the window of 1e300 overflowed datetime (inf: int(nan)) and the
    event went to the DLQ on every delivery."""
    _record(aws["store"], "CA-1")
    event = _event("CA-1")
    event["detail"]["ended_at"] = ended_at
    result = _run(load_handler(), event)
    assert result["error"]["type"] == "invalid_event", result
    assert "ended_at" in json.dumps(result)
    assert _items(aws["ddb"]) == []


def test_a_call_whose_state_holds_an_undecodable_item_gets_its_report(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    """Issue 13 item 1: the undecodable message and verdict are skipped (and logged with the
    call id), the rest of the call is reported."""
    ctx = _record(aws["store"], "CA-1", agent_id="tony-v2")
    poison(aws["ddb"], aws["call_table"], ctx, seq=50, expires_at=ENDED_AT + TTL_S)
    result = _run(load_handler(), _event("CA-1"))

    assert result["status"] == "written", result
    report = aws["reports"].get_report(TENANT, "CA-1")
    assert isinstance(report, CallReport)
    assert report.decisions == {"allow": 1, "block": 1, "intervene": 1}
    assert report.transcript is not None and len(report.transcript) == 4


def test_an_unknown_call_gets_no_report(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    assert _run(load_handler(), _event("CA-never"))["status"] == "unknown_call"
    assert _items(aws["ddb"]) == []


# --- the LLM auditor ---------------------------------------------------------------------------


def _audit_reply(patterns: list[str], turn: str = "t2") -> str:
    return json.dumps({
        "summary": "The agent ignored the caller's correction and misquoted the total.",
        "entries": [{"pattern_id": p, "severity": "high", "evidence_turn_ids": [turn],
                     "what_went_wrong": f"audited {p}", "root_cause": "the prompt",
                     "proposed_prompt_change": f"fix {p}", "confidence": 0.6} for p in patterns],
    })  # fmt: skip


ALL = ["retracted_value_used", "unconfirmed_irreversible", "amount_mismatch",
       "ungrounded_tool_argument"]  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "status", "error"),
    [
        (_audit_reply(ALL), "ok", None),
        (_audit_reply(ALL[:2]), "failed", "LLMBadOutput"),  # drops patterns
        (_audit_reply(ALL, turn="t9"), "failed", "LLMBadOutput"),  # cites an unknown turn
        ("not json", "failed", "LLMBadOutput"),
    ],
    ids=["refined", "drops-patterns", "unknown-turn", "not-json"],
)
def test_the_llm_auditor_refines_or_the_deterministic_report_stands(
    aws: dict[str, Any],
    load_handler: Callable[..., ModuleType],
    reply: str,
    status: str,
    error: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _record(aws["store"], "CA-1")
    module = load_handler(OPENAI_API_KEY="sk-test-0123456789")
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(OPENAI_URL).mock(
            return_value=httpx.Response(200, json=chat_completion(reply))
        )
        result = _run(module, _event("CA-1"))
    sent = json.loads(route.calls.last.request.content)["messages"][1]["content"]
    assert '"place_order"' in sent and '"size": "large"' in sent  # it sees the tool calls

    report = aws["reports"].get_report(TENANT, "CA-1")
    assert report is not None and result["auditor"] == report.auditor.status == status
    assert report.auditor.error == error
    entries = {e.pattern_id: e for e in report.entries}
    assert list(entries) == ALL
    if status == "ok":
        assert entries["amount_mismatch"].source == "llm"
        assert entries["amount_mismatch"].what_went_wrong == "audited amount_mismatch"
    else:
        assert all(e.source == "deterministic" for e in entries.values())
        assert '"ReportAuditorFailures"' in capsys.readouterr().out  # counted (EMF)
    # counting never depends on the LLM: the advisory pattern stays uncounted either way
    assert [e.counted for e in entries.values()] == [True, True, True, False]


# --- CallEnded from the bridge and the Api, through the template's rule -------------------------


def test_the_rule_delivers_both_sources_and_the_api_end_publishes(
    aws: dict[str, Any], load_handler: Callable[..., ModuleType]
) -> None:
    session = boto_session()
    events = session.client("events", region_name=TEST_REGION)
    sqs = session.client("sqs", region_name=TEST_REGION)
    fn = load_template(TEMPLATE_PATH)["Resources"]["PostCallReportFunction"]
    pattern = fn["Properties"]["Events"]["CallEnded"]["Properties"]["Pattern"]
    events.create_event_bus(Name="mirror-events")
    queue = sqs.create_queue(QueueName="post-call-report")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="call-ended", EventBusName="mirror-events",
                    EventPattern=json.dumps(pattern))  # fmt: skip
    events.put_targets(Rule="call-ended", EventBusName="mirror-events",
                       Targets=[{"Id": "report", "Arn": queue_arn}])  # fmt: skip

    ctx = _record(aws["store"], "CA-api")
    calls = CallsService(
        aws["store"], on_ended=EventBridgeCallEnded("mirror-events", client=events)
    )
    ended = calls.end_call(ctx, 3600)
    again = calls.end_call(ctx, 3600)  # no second event
    entries = [{"Source": s, "DetailType": "CallEnded", "EventBusName": "mirror-events",
                "Detail": json.dumps(_event(f"CA-{s}")["detail"])}
               for s in ("mirror.bridge", "someone.else")]  # fmt: skip
    events.put_events(Entries=entries)

    bodies = [json.loads(m["Body"]) for m in
              sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]]  # fmt: skip
    assert ended is not None and again is not None and again.ended_at == ended.ended_at
    assert sorted(b["source"] for b in bodies) == ["mirror.api", "mirror.bridge"]
    (api_event,) = [b for b in bodies if b["source"] == "mirror.api"]
    expected = {"tenant_id": TENANT, "call_id": "CA-api", "ended_at": ended.ended_at,
                "reason": "api", "counts": {}}  # fmt: skip
    assert api_event["detail"] == expected
    result = _run(load_handler(), api_event)
    assert result["status"] == "written" and result["call_id"] == "CA-api"


def test_an_end_whose_event_failed_publishes_on_retry(aws: dict[str, Any]) -> None:
    from mirror.calls import EVENT_PENDING_FIELD, CallEventError

    published: list[str] = []
    ctx = _record(aws["store"], "CA-1")

    def flaky(c: CallContext, meta: Any) -> None:
        if not published:
            published.append("failed")
            raise CallEventError("CallEnded not published (ThrottlingException)")
        published.append(c.call_id)

    calls = CallsService(aws["store"], on_ended=flaky)
    with pytest.raises(CallEventError):
        calls.end_call(ctx, 3600)
    retried = calls.end_call(ctx, 3600)
    calls.end_call(ctx, 3600)
    assert retried is not None and published == ["failed", "CA-1"]
    meta = aws["store"].get_call_meta(ctx, ENDED_AT)
    assert meta is not None and meta[EVENT_PENDING_FIELD] is False


def test_the_sample_events_parse() -> None:
    from mirror.reports.models import parse_call_ended

    detail = parse_call_ended(json.loads((REPO_ROOT / "events/post_call_report.json").read_text()))
    assert (detail.tenant_id, detail.reason) == ("pizzeria", "hangup")
    state = json.loads((REPO_ROOT / "events/fix_pr_collect.json").read_text())["state"]
    from mirror.fixes.workflow import FixInput

    assert FixInput.model_validate(state).pattern_id == "retracted_value_used"
