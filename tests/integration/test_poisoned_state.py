"""A call whose stored state holds an item no reader can decode (issue 13 item 1): written
straight into moto DynamoDB past the models, as an older version or a hostile write would have
left it. ScoreTurn, GateTool and the Api's GET /v1/calls keep working for that call (the item is
skipped, counted and logged); the handlers refuse the input that used to create such items with
an `invalid_event` naming the field. PostCallReport's side is in test_reports.py."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from mirror.models import MAX_ARGS_DEPTH, CallContext, Message, Verdict
from mirror.state import DynamoDBStateStore
from mirror.state.base import MESSAGE_ADAPTER
from tests.fakes.lambda_context import FakeContext
from tests.support.api import GATE_TOOL_PATH, SCORE_TURN_PATH, error_of, invoke
from tests.support.handlers import load_event
from tests.support.poison import nested
from tests.support.poison import poison as poison_call

pytestmark = pytest.mark.integration

NOW = time.time()
"""The functions read the real clock; the items written here live for hours after NOW."""
TTL_S = 3_600


def poison(ddb: Any, table: str, ctx: CallContext, seq: int) -> None:
    poison_call(ddb, table, ctx, seq, expires_at=NOW + 10 * TTL_S)


@pytest.fixture
def store(api_env: str, dynamodb_client: Any) -> DynamoDBStateStore:
    return DynamoDBStateStore(api_env, client=dynamodb_client)


def record(store: DynamoDBStateStore, ctx: CallContext, messages: list[dict[str, Any]]) -> None:
    parsed: list[Message] = [MESSAGE_ADAPTER.validate_python(m) for m in messages]
    verdict = Verdict(decision="allow", score=0.0)
    assert store.record_turn(ctx, "t-before", parsed, verdict, NOW, TTL_S, 200)


def lambda_invoke(module: ModuleType, event: Any) -> dict[str, Any]:
    response: dict[str, Any] = module.lambda_handler(event, FakeContext())
    json.dumps(response)
    return response


def test_score_turn_keeps_scoring_a_poisoned_call(
    load_module: Callable[..., ModuleType],
    store: DynamoDBStateStore,
    dynamodb_client: Any,
    api_env: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = CallContext(call_id="CA-poison-1", tenant_id="retail")
    record(store, ctx, [{"role": "customer", "text": "Hi, one medium pepperoni please."}])
    poison(dynamodb_client, api_env, ctx, seq=1)
    app = load_module(SCORE_TURN_PATH)
    event = {"call_id": ctx.call_id, "tenant_id": ctx.tenant_id, "turn_id": "t-next",
             "customer_text": "Thanks.", "agent_text": "You're welcome!"}  # fmt: skip

    verdict = lambda_invoke(app, event)

    assert verdict["decision"] == "allow" and verdict["recorded"] is True, verdict
    assert [m.text for m in store.get_history(ctx, NOW, 50)][-2:] == ["Thanks.", "You're welcome!"]
    assert any(getattr(r, "call_id", None) == ctx.call_id for r in caplog.records)


def test_gate_tool_decides_on_the_readable_history_of_a_poisoned_call(
    load_module: Callable[..., ModuleType],
    store: DynamoDBStateStore,
    dynamodb_client: Any,
    api_env: str,
) -> None:
    event = copy.deepcopy(load_event("gate_tool_allow.json"))
    ctx = CallContext(call_id=event["call_id"], tenant_id=event["tenant_id"])
    record(store, ctx, event.pop("history"))
    poison(dynamodb_client, api_env, ctx, seq=len(store.get_history(ctx, NOW, 200)))
    app = load_module(GATE_TOOL_PATH)

    result = lambda_invoke(app, event)

    assert result["decision"] == "allow", result  # before: held on every call (store error)
    assert all(d["failure"] is None for d in result["decisions"])


def test_the_api_reads_a_poisoned_call(
    load_module: Callable[..., ModuleType],
    store: DynamoDBStateStore,
    dynamodb_client: Any,
    api_env: str,
) -> None:
    event = load_event("api_get_call.json")  # CA-demo-0003 of tenant retail
    ctx = CallContext(call_id="CA-demo-0003", tenant_id="retail")
    record(store, ctx, [{"role": "customer", "text": "Where is my order?"}])
    poison(dynamodb_client, api_env, ctx, seq=1)
    api = load_module()

    status, _, state = invoke(api, event)

    assert status == 200, state  # before: 500 for this call, for good
    assert [m["text"] for m in state["history"]] == ["Where is my order?"]
    assert [v["turn_id"] for v in state["verdicts"]] == ["t-before"]


@pytest.mark.parametrize(
    "path, sample",
    [(SCORE_TURN_PATH, "score_turn_allow.json"), (GATE_TOOL_PATH, "gate_tool_allow.json")],
    ids=["score_turn", "gate_tool"],
)
def test_deep_args_are_an_invalid_event_naming_the_field_and_store_nothing(
    load_module: Callable[..., ModuleType],
    dynamodb_client: Any,
    api_env: str,
    path: Any,
    sample: str,
) -> None:
    app = load_module(path)
    event = copy.deepcopy(load_event(sample))
    event["tool_calls"][0]["args"] = nested(200)  # ~1 KB of JSON

    response = lambda_invoke(app, event)

    error = error_of(response, "invalid_event")
    assert any(f.get("field", "").endswith("args") for f in error.get("fields", [])), error
    assert dynamodb_client.scan(TableName=api_env)["Items"] == []

    event["tool_calls"][0]["args"] = {"order_id": "#W5199551", "deep": nested(MAX_ARGS_DEPTH - 1)}
    assert "error" not in lambda_invoke(app, event)  # the allow twin
