"""`mirror.usecases` behind every entry point: the same input gets the same answer, metrics and
failure rule whichever function or Api route takes it; a metric that cannot be emitted never
changes an answer; the dependency container is the one way to swap parts."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from mirror.state import InMemoryStateStore
from mirror.usecases import Deps
from tests.fakes.lambda_context import FakeContext
from tests.support.api import (
    API_PATH,
    CORRECTION_PATH,
    GATE_TOOL_PATH,
    SCORE_TURN_PATH,
    asgi,
)
from tests.support.handlers import emf_documents, load_event

pytestmark = pytest.mark.integration

BIG_TOOL_RESULT = "€" * 150_000
"""450 KB as UTF-8: more than one DynamoDB item holds."""


def big_turn(call_id: str, *, gate: bool = False) -> dict[str, Any]:
    """A schema-valid turn with one tool result too big to record, and an irreversible call
    (for GateTool the result is in the history: its event has no `tool_results`)."""
    event = {**load_event("gate_tool_allow.json"), "call_id": call_id}
    result = {"role": "tool", "name": "get_order_details", "text": BIG_TOOL_RESULT}
    if gate:
        return {**event, "history": [*event["history"], result]}
    return {**event, "turn_id": f"{call_id}-t1", "tool_results": [result]}


# --- (a) a metric that cannot be emitted ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "event", "check"),
    [
        (SCORE_TURN_PATH, "score_turn_intervene.json", lambda r: r["decision"] == "intervene"),
        (GATE_TOOL_PATH, "gate_tool_block.json", lambda r: r["decision"] == "block"),
        (CORRECTION_PATH, "generate_correction.json", lambda r: r["source"] == "template"),
    ],
    ids=["score", "gate", "correction"],
)
def test_a_handler_without_a_metrics_namespace_returns_the_real_answer(
    load_module: Callable[..., ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    path: Any,
    event: str,
    check: Callable[[dict[str, Any]], bool],
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    module = load_module(path)
    response = module.lambda_handler(load_event(event), FakeContext())
    assert "error" not in response and check(response), response
    assert emf_documents(capsys.readouterr().out) == []  # nothing emitted, nothing raised


# --- (c) a turn too big to record -------------------------------------------------------------


class SizeCheckedStore(InMemoryStateStore):
    """The in-memory store refusing an item too big for DynamoDB, as DynamoDBStateStore does
    (a ValueError from a record path), for the gate's own write."""

    def claim_tool_call(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("tool call item is 450044 bytes; a stored item holds at most 390000")


def test_a_turn_with_a_tool_result_over_an_item_is_scored_at_every_entry(
    load_module: Callable[..., ModuleType],
) -> None:
    """ScoreTurn and the Api store the result cut (issue 13 item 5: a verdict is always
    returned); the gate's own write refused for size still holds the irreversible call."""
    score = load_module(SCORE_TURN_PATH)
    api = load_module(API_PATH)
    gate = load_module(GATE_TOOL_PATH)

    scored = score.lambda_handler(big_turn("CA-big-1"), FakeContext())  # no raise
    assert "error" not in scored and scored["recorded"] is True, scored

    response = asgi(api, "POST", "/v1/turns:score", json_body=big_turn("CA-big-2"))
    assert response.status_code == 200
    assert response.json()["recorded"] is True

    with gate.deps.using(store=SizeCheckedStore()):
        gated = gate.lambda_handler(big_turn("CA-big-3", gate=True), FakeContext())
    held = {d["name"]: d for d in gated["decisions"]}
    assert gated["decision"] == "hold"
    assert held["cancel_pending_order"]["decision"] == "hold"
    assert held["cancel_pending_order"]["failure"] == "invalid_event"


# --- (d) one outcome, one set of metrics ------------------------------------------------------


def metric_shapes(stdout: str, skip: frozenset[str] = frozenset({"ApiRequests"})) -> list[Any]:
    """(metric, {dimension: value}) of every EMF metric printed, sorted; the service's own
    dimension aside (each function has its own name)."""
    shapes = []
    for doc in emf_documents(stdout):
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            dims = {d for ds in directive["Dimensions"] for d in ds if d != "service"}
            for metric in directive["Metrics"]:
                if metric["Name"] not in skip:
                    shapes.append((metric["Name"], sorted((d, doc[d]) for d in dims)))
    return sorted(shapes, key=json.dumps)


@pytest.mark.parametrize("store_down", [False, True], ids=["stored", "store-down"])
def test_corrections_emit_the_same_metrics_from_the_function_and_the_api(
    load_module: Callable[..., ModuleType],
    capsys: pytest.CaptureFixture[str],
    dynamodb_client: Any,
    store_down: bool,
) -> None:
    from mirror.state import DynamoDBStateStore

    function = load_module(CORRECTION_PATH)
    api = load_module(API_PATH)
    broken = DynamoDBStateStore("no-such-table", client=dynamodb_client)
    parts = {"store": broken} if store_down else {}
    capsys.readouterr()

    with function.deps.using(**parts):
        direct = function.lambda_handler(
            {**load_event("generate_correction.json"), "call_id": "CA-fn"}, FakeContext()
        )
        function.metrics.flush_metrics()  # already flushed by the handler: nothing more
    from_function = metric_shapes(capsys.readouterr().out)
    with api.deps.using(**parts):
        body = {**load_event("generate_correction.json"), "call_id": "CA-api"}
        routed = asgi(api, "POST", "/v1/corrections", json_body=body)
    from_api = metric_shapes(capsys.readouterr().out)

    assert routed.status_code == 200
    assert routed.json()["note_stored"] is direct["note_stored"] is (not store_down)
    assert from_function == from_api
    names = {name for name, _ in from_api}
    assert {"Corrections", "CorrectionSource"} <= names
    assert ("StateStoreErrors" in names) is store_down


# --- the container ------------------------------------------------------------------------------


def test_using_swaps_parts_for_the_block_only_and_builds_the_rest_on_them() -> None:
    deps = Deps()
    first, second = InMemoryStateStore(), InMemoryStateStore()
    with deps.using(store=first):
        scorer = deps.scorer()
        assert scorer.store is first and deps.scorer() is scorer  # built once, on the swap
        with deps.using(store=second):
            assert deps.scorer().store is second
        assert deps.scorer() is scorer
    assert deps.built() == ()
    with pytest.raises(TypeError, match="unknown"):
        deps.using(nothing=1).__enter__()


def test_each_loaded_copy_of_a_handler_is_its_own_container(
    load_module: Callable[..., ModuleType],
) -> None:
    """The bridge loads a handler file once per in-process "container": each copy has its own
    services (GateService is not thread-safe) and its own event loop."""
    one, two = load_module(GATE_TOOL_PATH), load_module(GATE_TOOL_PATH)
    assert one.deps is not two.deps
    with one.deps.using(store=InMemoryStateStore()), two.deps.using(store=InMemoryStateStore()):
        assert one.deps.gate() is not two.deps.gate()
        assert one.deps.gate_lock is not two.deps.gate_lock
    assert one.deps.loop() is not two.deps.loop()
