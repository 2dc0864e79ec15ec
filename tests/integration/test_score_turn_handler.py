"""The ScoreTurn Lambda handler, called for real against in-process moto DynamoDB.

Each test imports functions/score_turn/app.py afresh under a unique module name, with its
environment already set, so the module-level Logger/Metrics/config see the test's settings and
the services its `deps` builds on first use (and their DynamoDB client) belong to this test's
moto.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mirror.models import CallContext, CustomerMessage, Verdict
from mirror.state import DynamoDBStateStore
from tests.conftest import REPO_ROOT
from tests.fakes.lambda_context import FakeContext
from tests.support.handlers import (
    EVENTS_DIR,
    NAMESPACE,
    PII_TEXT,
    PII_VALUES,
    assert_invalid_event,
    changed,
    ctx_of,
    emf_documents,
    emf_metric,
    error_fields,
    handler_loader,
    heavy_modules_on_import,
    invoke_handler,
    load_event,
    set_handler_env,
    table_items,
    without,
)

pytestmark = pytest.mark.integration

HANDLER_PATH = REPO_ROOT / "functions" / "score_turn" / "app.py"
SERVICE_NAME = "mirror-score-turn-test"
"""Not the deployed name: the test owns (and resets) this stdlib logger."""
REPLAY_WARNING = "ignore:No application metrics to publish:UserWarning"
"""A replayed turn adds no metric, so Powertools warns on flush; expected, not under test."""


@pytest.fixture
def handler_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_handler_env(monkeypatch, call_state_table, SERVICE_NAME)


@pytest.fixture
def app(
    handler_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The handler module, imported fresh for this test (after capsys and the env are set)."""
    loader = handler_loader(
        monkeypatch, SERVICE_NAME, HANDLER_PATH, "score_turn_app", stub_tiers=False
    )
    for load in loader:  # one pass: the import, then (after the test) the clean-up
        yield load()


@pytest.fixture
def store(call_state_table: str, dynamodb_client: Any) -> DynamoDBStateStore:
    """A reader of what the handler wrote (its own client on the same moto backend)."""
    return DynamoDBStateStore(call_state_table, client=dynamodb_client)


def invoke(app: ModuleType, event: Any, context: FakeContext | None = None) -> dict[str, Any]:
    return invoke_handler(app, event, context or FakeContext())


# --- the sample events ------------------------------------------------------------------------

SAMPLE_EVENTS = {
    "score_turn_allow.json": "allow",
    "score_turn_intervene.json": "intervene",
    "score_turn_block.json": "block",
    "score_turn_bad_input.json": "invalid_event",
}


def test_every_sample_event_is_covered() -> None:
    assert {p.name for p in EVENTS_DIR.glob("score_turn_*.json")} == set(SAMPLE_EVENTS)


@pytest.mark.parametrize(
    "name", [n for n, want in SAMPLE_EVENTS.items() if want != "invalid_event"]
)
def test_sample_event_verdict_is_recorded(
    app: ModuleType, store: DynamoDBStateStore, name: str
) -> None:
    event = load_event(name)
    response = invoke(app, event)

    verdict = Verdict.model_validate(response)
    assert verdict.decision == SAMPLE_EVENTS[name]
    assert verdict.decided_by == "tier0" and verdict.latency_us["tier0"] > 0
    if verdict.decision == "allow":
        assert verdict.reasons == [] and verdict.blocked_tool_call_ids == []
    elif verdict.decision == "intervene":
        assert verdict.buffer_text
        assert verdict.reasons[0].check == "operator_rule"
        assert "guaranteed" in verdict.reasons[0].evidence
        assert verdict.blocked_tool_call_ids == []
    else:
        assert verdict.blocked_tool_call_ids == ["c2"]
        assert verdict.reasons[0].tool_call_id == "c2"
        assert verdict.reasons[0].code == "ungrounded_value"

    ctx = ctx_of(event)
    now = time.time()
    # the store starts empty, so it now holds exactly this turn: caller line, then agent turn
    history = store.get_history(ctx, now, 500)
    assert [m.role for m in history] == ["customer", "agent"]
    assert history[0].text == event["customer_text"]
    assert history[1].text == event["agent_text"]
    assert [c.id for c in history[1].tool_calls] == [c["id"] for c in event["tool_calls"]]
    recorded = store.list_verdicts(ctx, now)
    assert [r.turn_id for r in recorded] == [event["turn_id"]]
    assert recorded[0].verdict == verdict


def test_sample_bad_input_is_a_structured_error(
    app: ModuleType, dynamodb_client: Any, handler_env: str
) -> None:
    response = invoke(app, load_event("score_turn_bad_input.json"))
    assert set(response) == {"error"}
    assert response["error"]["type"] == "invalid_event"
    assert error_fields(response) == {
        "call_id",
        "customer_text",
        "tool_calls.0.id",
        "tool_calls.0.<extra>",  # an unknown key is never echoed
    }
    assert table_items(dynamodb_client, handler_env) == []


# --- idempotency and cooldown ---------------------------------------------------------------


@pytest.mark.filterwarnings(REPLAY_WARNING)
def test_retried_turn_returns_the_same_verdict_and_records_nothing(
    app: ModuleType,
    store: DynamoDBStateStore,
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = load_event("score_turn_intervene.json")
    first = invoke(app, event, FakeContext(aws_request_id="req-1"))
    items = table_items(dynamodb_client, handler_env)
    capsys.readouterr()

    retry = invoke(app, copy.deepcopy(event), FakeContext(aws_request_id="req-2"))
    assert retry == first  # identical, latency included: the stored verdict, not a re-run
    assert retry["decision"] == "intervene" and not retry["cooldown_suppressed"]
    assert table_items(dynamodb_client, handler_env) == items
    assert len(store.list_verdicts(ctx_of(event), time.time())) == 1
    # a replay is not counted again
    docs = emf_documents(capsys.readouterr().out)
    assert emf_metric(docs, "Verdicts") == [] and emf_metric(docs, "Tier0Latency") == []


@pytest.mark.filterwarnings(REPLAY_WARNING)
def test_turn_id_defaults_to_the_request_id(app: ModuleType, store: DynamoDBStateStore) -> None:
    event = load_event("score_turn_intervene.json")
    del event["turn_id"]
    first = invoke(app, event, FakeContext(aws_request_id="req-7"))
    assert invoke(app, event, FakeContext(aws_request_id="req-7")) == first  # Lambda's retry
    assert [r.turn_id for r in store.list_verdicts(ctx_of(event), time.time())] == ["req-7"]


def test_second_intervention_within_cooldown_is_suppressed(
    app: ModuleType, store: DynamoDBStateStore
) -> None:
    first_event = load_event("score_turn_intervene.json")
    second_event = {
        **first_event,
        "turn_id": "t-0004",
        "history": [
            *first_event["history"],
            {"role": "agent", "text": first_event["agent_text"]},
            {"role": "customer", "text": "Guaranteed? Really?"},
        ],
        "customer_text": "Guaranteed? Really?",
        "agent_text": "Yes, delivery is guaranteed in 20 minutes.",
    }
    first = invoke(app, first_event)
    second = invoke(app, second_event)

    assert first["decision"] == "intervene" and not first["cooldown_suppressed"]
    assert second["decision"] == "allow"
    assert second["cooldown_suppressed"] is True
    assert second["buffer_text"] is None
    assert second["reasons"][0]["check"] == "operator_rule"  # still reported
    recorded = store.list_verdicts(ctx_of(first_event), time.time())
    assert [(r.turn_id, r.verdict.decision) for r in recorded] == [
        ("t-0002", "intervene"),
        ("t-0004", "allow"),
    ]


def test_stored_history_spans_invocations(app: ModuleType, store: DynamoDBStateStore) -> None:
    """Events without history: the second turn is judged on what the first one stored."""
    base = {"call_id": "CA-stored-1", "tenant_id": "pizzeria"}
    first = invoke(
        app,
        {
            **base,
            "turn_id": "t1",
            "customer_text": "A large pepperoni, actually make it medium.",
            "agent_text": "Got it. Anything else?",
        },
    )
    second = invoke(
        app,
        {
            **base,
            "turn_id": "t2",
            "customer_text": "No, that's all.",
            "agent_text": "One large pepperoni pizza coming up.",
        },
    )
    assert first["decision"] == "allow"
    assert second["decision"] == "intervene"
    assert second["reasons"][0]["check"] == "retraction"
    history = store.get_history(CallContext(call_id="CA-stored-1", tenant_id="pizzeria"), 0, 10)
    assert [type(m) is CustomerMessage for m in history] == [True, False, True, False]


# --- bad input --------------------------------------------------------------------------------

GOOD_EVENT: dict[str, Any] = {
    "call_id": "CA-bad-1",
    "tenant_id": "pizzeria",
    "turn_id": "t1",
    "customer_text": "Yes, please.",
    "agent_text": "",
    "tool_calls": [{"id": "c1", "name": "place_order", "args": {"items": ["pizza"]}}],
    "history": [{"role": "customer", "text": "Yes, please."}],
}


def _without(key: str) -> dict[str, Any]:
    return without(GOOD_EVENT, key)


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    return changed(GOOD_EVENT, path, value)


def _tool_call_without_id() -> dict[str, Any]:
    return without(GOOD_EVENT, "tool_calls", 0, "id")


BAD_EVENTS: dict[str, tuple[Any, str]] = {
    "missing call_id": (_without("call_id"), "call_id"),
    "customer_text not a string": (_with(("customer_text",), ["yes"]), "customer_text"),
    "agent_text too long": (_with(("agent_text",), "a" * 8001), "agent_text"),
    "tool call with unknown key": (
        _with(("tool_calls", 0, "arguments"), {"items": ["pizza"]}),
        "tool_calls.0.<extra>",
    ),
    "tool call without id": (_tool_call_without_id(), "tool_calls.0.id"),
    "event is a list": ([GOOD_EVENT], "(event)"),
    "event is a string": (json.dumps(GOOD_EVENT), "(event)"),
    "event is null": (None, "(event)"),
    "history role unknown": (_with(("history", 0, "role"), "supervisor"), "history.0"),
    "tenant_id with '#'": (_with(("tenant_id",), "acme#evil"), "tenant_id"),
    "event policy that does not parse": (_with(("policies",), ["FORBID"]), "policies"),
}


def test_the_good_event_is_good(app: ModuleType) -> None:
    """The bad events below differ from this one only in the named field."""
    assert invoke(app, copy.deepcopy(GOOD_EVENT))["decision"] == "allow"


@pytest.mark.parametrize(("event", "field_name"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_input_names_the_field_and_writes_nothing(
    app: ModuleType,
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
    event: Any,
    field_name: str,
) -> None:
    assert_invalid_event(
        invoke(app, copy.deepcopy(event)), field_name, dynamodb_client, handler_env
    )
    docs = emf_documents(capsys.readouterr().out)
    assert [m["Metric"]["Name"] for m, _ in emf_metric(docs, "InvalidEvents")] == ["InvalidEvents"]


# --- logs and metrics -------------------------------------------------------------------------


def test_logs_never_contain_caller_pii(app: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    event = {
        "call_id": "CA-pii-1",
        "tenant_id": "bank",
        "turn_id": "t1",
        "history": [{"role": "customer", "text": PII_TEXT}],
        "customer_text": PII_TEXT,
        "agent_text": f"Thanks, I noted {PII_TEXT.split(', call')[0]}.",
    }
    invoke(app, event)
    invalid = {**event, "turn_id": "t2", "tool_calls": [{"id": "c1", "name": "x", "bad": 1}]}
    assert "error" in invoke(app, invalid)
    invoke(app, {**event, "call_id": 42})  # a wrong type next to the PII

    captured = capsys.readouterr()
    logs = captured.out + captured.err
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    turn_logs = [line for line in lines if line.get("message") == "turn"]
    assert turn_logs, "the DEBUG turn log (the one that would carry the event) was not emitted"
    assert "[email]" in json.dumps(turn_logs) and "[card]" in json.dumps(turn_logs)
    assert "[phone]" in json.dumps(turn_logs)
    assert any(line.get("message") == "invalid ScoreTurn event" for line in lines)
    for value in PII_VALUES:
        assert value not in logs


def test_emf_metrics(app: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("score_turn_intervene.json", "score_turn_block.json"):
        response = invoke(app, load_event(name))
        docs = emf_documents(capsys.readouterr().out)

        verdicts = emf_metric(docs, "Verdicts")
        assert len(verdicts) == 1
        directive, doc = verdicts[0]
        assert directive["Namespace"] == NAMESPACE
        assert any({"decision", "tier"} <= set(dims) for dims in directive["Dimensions"])
        assert doc["decision"] == response["decision"]
        assert doc["tier"] == "tier0"
        assert doc["Verdicts"] in ([1.0], 1.0)

        latency = emf_metric(docs, "Tier0Latency")
        assert len(latency) == 1
        directive, doc = latency[0]
        assert directive["Namespace"] == NAMESPACE
        assert len(docs) == 1  # one EMF document per turn: the verdict's dimensions are its own
        assert doc["decision"] == response["decision"] and doc["tier"] == "tier0"
        assert directive["Metric"]["Unit"] == "Microseconds"
        assert doc["Tier0Latency"] in (
            [response["latency_us"]["tier0"]],
            response["latency_us"]["tier0"],
        )


# --- failures ---------------------------------------------------------------------------------


def test_missing_table_is_state_unavailable(
    app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CALL_TABLE", "no-such-table")  # read when the service is first built
    response = invoke(app, load_event("score_turn_intervene.json"))

    assert set(response) == {"error"}
    assert response["error"]["type"] == "state_unavailable"
    assert "ResourceNotFoundException" in response["error"]["message"]
    assert "no-such-table" in response["error"]["message"]
    assert table_items(dynamodb_client, handler_env) == []
    docs = emf_documents(capsys.readouterr().out)
    assert len(emf_metric(docs, "StateStoreErrors")) == 1
    assert emf_metric(docs, "Verdicts") == []


def test_handler_module_imports_no_heavy_clients() -> None:
    heavy = ("openai", "plivo", "fastapi")
    loaded, path = heavy_modules_on_import("score_turn", heavy, then="app.__file__")[-2:]
    assert loaded == "[]"
    assert Path(path).resolve() == HANDLER_PATH.resolve()
