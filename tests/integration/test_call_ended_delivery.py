"""CallEnded is never lost (issue 13, item 3): a refused PutEvents entry is retried with backoff
inside the close budget; when every attempt fails the call's META is marked pending and the
CallEndedSweeper function re-sends it. All on moto: the bus carries PostCallReport's own rule
(what arrives is read back with the report's parser), the call table is template.yaml's (its
sparse CallEndedPendingIndex included), faults are injected at the client (tests/fakes)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mirror.calls import CallEventError, CallsService, EventBridgeCallEnded
from mirror.events import (
    CALL_ENDED,
    PENDING_FIELD,
    PENDING_INDEX,
    PENDING_SINCE_FIELD,
    PENDING_SOURCE_FIELD,
    EventBridgePublisher,
    EventPublishError,
    RetryPolicy,
    call_ended_detail,
)
from mirror.models import CallContext
from mirror.reports.models import parse_call_ended as report_parser
from mirror.state import DynamoDBStateStore
from mirror.sweeper import DynamoDBPendingIndex
from mirror_bridge.call_end import CallEnd, EventBridgeSink, StoreStateWriter
from mirror_dev.local import import_file
from tests.conftest import REPO_ROOT, run
from tests.fakes.eventbridge import FlakyEvents
from tests.fakes.lambda_context import FakeContext
from tests.fakes.session import make_session, turn
from tests.fakes.stores import BrokenStore
from tests.fakes.transport import ALLOW, CALL_ID, FakeTransport
from tests.support.bus import BUS_NAME, call_ended_bus, delivered
from tests.support.handlers import load_event, reset_logger

pytestmark = pytest.mark.integration

SWEEPER = REPO_ROOT / "functions/call_ended_sweeper/app.py"
FAST = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.002, budget_s=2.0)
DETAIL = call_ended_detail("acme", "CA-1", 1_700_000_000.5, "hangup", {"turns": 2})


@pytest.fixture
def bus(dynamodb_client: Any) -> dict[str, Any]:
    return call_ended_bus()


@pytest.fixture
def store(call_state_table: str) -> DynamoDBStateStore:
    return DynamoDBStateStore(call_state_table)


def meta_item(dynamodb_client: Any, table: str, tenant: str, call_id: str) -> dict[str, Any]:
    item: dict[str, Any] = dynamodb_client.get_item(
        TableName=table, Key={"pk": {"S": f"{tenant}#{call_id}"}, "sk": {"S": "META"}}
    )["Item"]
    return item


def load_sweeper(monkeypatch: pytest.MonkeyPatch, table: str, min_age_s: str) -> ModuleType:
    monkeypatch.setenv("CALL_TABLE", table)
    monkeypatch.setenv("EVENT_BUS_NAME", BUS_NAME)
    monkeypatch.setenv("CALL_ENDED_SWEEP_MIN_AGE_S", min_age_s)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Mirror")
    reset_logger("mirror")
    return import_file(SWEEPER, "call_ended_sweeper")


def sweep_once(module: ModuleType, event: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = module.lambda_handler(
        load_event("call_ended_sweeper.json") if event is None else event, FakeContext()
    )
    return result


# --- the publisher: retries with backoff, bounded ------------------------------------------


def test_one_refused_entry_is_retried_and_delivered_once(bus: dict[str, Any]) -> None:
    flaky = FlakyEvents(bus["events"], fail=1)
    sleeps: list[float] = []
    publisher = EventBridgePublisher(BUS_NAME, "mirror.bridge", client=flaky, sleep=sleeps.append)
    assert publisher.publish(CALL_ENDED, DETAIL) == 1  # one retry
    assert flaky.calls == 2 and len(sleeps) == 1 and 0 <= sleeps[0] <= 0.1
    assert [report_parser(b).call_id for b in delivered(bus)] == ["CA-1"]


def test_a_transport_error_is_retried_like_a_refused_entry(bus: dict[str, Any]) -> None:
    flaky = FlakyEvents(bus["events"], fail=2, mode="raise")
    publisher = EventBridgePublisher(
        BUS_NAME, "mirror.bridge", client=flaky, retry=FAST, sleep=lambda s: None
    )
    assert publisher.publish(CALL_ENDED, DETAIL) == 2
    assert len(delivered(bus)) == 1


def test_an_entry_accepted_first_time_is_not_retried(bus: dict[str, Any]) -> None:
    flaky = FlakyEvents(bus["events"], fail=0)
    sleeps: list[float] = []
    publisher = EventBridgePublisher(BUS_NAME, "mirror.api", client=flaky, sleep=sleeps.append)
    assert publisher.publish(CALL_ENDED, DETAIL) == 0
    assert flaky.calls == 1 and sleeps == [] and len(delivered(bus)) == 1


def test_always_refused_gives_up_after_its_attempts_naming_the_code(bus: dict[str, Any]) -> None:
    flaky = FlakyEvents(bus["events"], fail=None, code="InternalFailure")
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=4, base_delay_s=0.1, max_delay_s=1.0, budget_s=10.0)
    publisher = EventBridgePublisher(
        BUS_NAME, "mirror.bridge", client=flaky, retry=policy, sleep=sleeps.append
    )
    secret = call_ended_detail("acme", "CA-1", 1.0, "caller said 4111 1111 1111 1111")
    with pytest.raises(EventPublishError) as raised:
        publisher.publish(CALL_ENDED, secret)
    assert raised.value.attempts == 4 and flaky.calls == 4
    assert "InternalFailure" in str(raised.value) and "4111" not in str(raised.value)
    # backoff: full jitter under 0.1, 0.2, 0.4
    assert len(sleeps) == 3 and all(
        s <= cap for s, cap in zip(sleeps, (0.1, 0.2, 0.4), strict=True)
    )
    assert delivered(bus) == []


def test_the_budget_bounds_the_attempts_whatever_their_number(bus: dict[str, Any]) -> None:
    now = [0.0]

    class SlowRefusals(FlakyEvents):
        def put_events(self, **kwargs: Any) -> dict[str, Any]:
            now[0] += 1.5  # each attempt takes 1.5 s (a slow, failing bus)
            return super().put_events(**kwargs)

    flaky = SlowRefusals(bus["events"], fail=None)
    policy = RetryPolicy(attempts=100, base_delay_s=0.01, max_delay_s=0.01, budget_s=4.0)
    publisher = EventBridgePublisher(
        BUS_NAME, "mirror.bridge", client=flaky, retry=policy, sleep=lambda s: None,
        clock=lambda: now[0],
    )  # fmt: skip
    with pytest.raises(EventPublishError):
        publisher.publish(CALL_ENDED, DETAIL)
    assert flaky.calls == 3  # 1.5, 3.0, 4.5 s: no attempt starts past the 4 s budget


# --- the bridge: retried, else marked pending ----------------------------------------------


def test_bridge_call_end_retries_a_refused_entry_and_says_so(
    bus: dict[str, Any], store: DynamoDBStateStore
) -> None:
    flaky = FlakyEvents(bus["events"], fail=1)
    sink = EventBridgeSink(flaky, bus_name=BUS_NAME, retry=FAST)
    end = CallEnd(CallContext(call_id="CA-2", tenant_id="acme"), events=sink,
                  state=StoreStateWriter(store))  # fmt: skip
    result = run(end.finish("hangup", {"turns": 1}))
    assert (result.event_emitted, result.event_pending, result.event_retries) == (True, False, 1)
    assert [report_parser(b).call_id for b in delivered(bus)] == ["CA-2"]
    meta = store.get_call_meta(CallContext(call_id="CA-2", tenant_id="acme"), time.time())
    assert meta is not None and PENDING_FIELD not in meta and PENDING_SOURCE_FIELD not in meta


def test_bridge_call_with_a_failing_bus_is_marked_pending_and_the_sweeper_resends_it(
    bus: dict[str, Any],
    store: DynamoDBStateStore,
    call_state_table: str,
    dynamodb_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole bridge path: a real CallSession whose EventBridgeSink always fails."""
    flaky = FlakyEvents(bus["events"], fail=None)
    sink = EventBridgeSink(flaky, bus_name=BUS_NAME, retry=FAST)

    async def call() -> Any:
        session, _, _ = make_session(
            FakeTransport({"score_turn": [(0.0, ALLOW)]}),
            events=sink,  # type: ignore[arg-type]
            extra={"state": StoreStateWriter(store)},
        )
        await session.on_mirror_message(turn("t1"))
        await asyncio.sleep(0.05)
        await session.close("hangup")
        return await session.call_end.finish("again", {})  # the one result, shared

    with caplog.at_level(logging.WARNING, logger="mirror_bridge.call_end"):
        result = run(call())
    assert (result.event_emitted, result.event_pending, result.event_retries) == (False, True, 2)
    assert flaky.calls == FAST.attempts and delivered(bus) == []
    assert any(r.getMessage().startswith("CallEnded marked pending") for r in caplog.records)
    assert all(getattr(r, "call_id", None) == CALL_ID for r in caplog.records)
    item = meta_item(dynamodb_client, call_state_table, "acme", CALL_ID)
    assert item[PENDING_FIELD] == {"BOOL": True}
    assert item[PENDING_SOURCE_FIELD] == {"S": "mirror.bridge"}

    sweeper = load_sweeper(monkeypatch, call_state_table, "0")
    out = sweep_once(sweeper)
    assert out == {"found": 1, "swept": [CALL_ID], "cleared": [], "failed": {}, "retries": 0}
    [envelope] = delivered(bus)
    assert envelope["source"] == "mirror.bridge"
    detail = report_parser(envelope)  # what PostCallReport reads: the detail the bridge built
    assert detail.model_dump(exclude={"agent_id"}) == {**result.detail, "counts": {
        k: float(v) for k, v in result.detail["counts"].items()}}  # fmt: skip
    assert detail.reason == "hangup" and detail.counts["turns"] == 1
    item = meta_item(dynamodb_client, call_state_table, "acme", CALL_ID)
    assert item[PENDING_FIELD] == {"BOOL": False}
    assert PENDING_SOURCE_FIELD not in item and PENDING_SINCE_FIELD not in item  # sparse again
    assert sweep_once(sweeper)["found"] == 0 and delivered(bus) == []  # once


def test_call_ended_neither_emitted_nor_marked_is_reported_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FailingSink:
        async def put_event(self, detail_type: str, detail: Any) -> int | None:
            raise EventPublishError("CallEnded not published (InternalFailure)", attempts=4)

    broken = StoreStateWriter(BrokenStore("put_call_meta"))  # type: ignore[arg-type]
    end = CallEnd(CallContext(call_id="CA-3", tenant_id="acme"), events=FailingSink(),
                  state=broken)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mirror_bridge.call_end"):
        result = run(end.finish("hangup", {}))
    assert (result.event_emitted, result.event_pending, result.event_retries) == (False, False, 3)
    assert any("CallEnded lost" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)  # fmt: skip


# --- the Api's end, and the sweeper's choices ----------------------------------------------


def _api_call(store: DynamoDBStateStore, call_id: str, events: Any) -> CallsService:
    ctx = CallContext(call_id=call_id, tenant_id="acme")
    store.put_call_meta(ctx, {"agent_id": "agent-1"}, time.time(), 3600)
    on_ended = EventBridgeCallEnded(BUS_NAME, client=events)
    on_ended.publisher.retry = FAST
    return CallsService(store, on_ended=on_ended)


def test_an_api_end_whose_publish_failed_is_swept_with_its_own_source(
    bus: dict[str, Any],
    store: DynamoDBStateStore,
    call_state_table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _api_call(store, "CA-api", FlakyEvents(bus["events"], fail=None))
    with pytest.raises(CallEventError):
        calls.end_call(CallContext(call_id="CA-api", tenant_id="acme"), 3600)
    assert delivered(bus) == []
    out = sweep_once(load_sweeper(monkeypatch, call_state_table, "0"))
    assert out["swept"] == ["CA-api"]
    [envelope] = delivered(bus)
    assert envelope["source"] == "mirror.api" and report_parser(envelope).reason == "api"


def test_an_api_end_published_leaves_only_its_index_keys_which_are_cleared_not_resent(
    bus: dict[str, Any],
    store: DynamoDBStateStore,
    call_state_table: str,
    dynamodb_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _api_call(store, "CA-ok", FlakyEvents(bus["events"], fail=1))  # one retry: sent
    calls.end_call(CallContext(call_id="CA-ok", tenant_id="acme"), 3600)
    assert len(delivered(bus)) == 1
    out = sweep_once(load_sweeper(monkeypatch, call_state_table, "0"))
    assert (out["swept"], out["cleared"]) == ([], ["CA-ok"])
    assert delivered(bus) == []  # not sent twice
    item = meta_item(dynamodb_client, call_state_table, "acme", "CA-ok")
    assert PENDING_SOURCE_FIELD not in item and item[PENDING_FIELD] == {"BOOL": False}


def test_a_young_mark_is_left_to_its_sender(
    bus: dict[str, Any],
    store: DynamoDBStateStore,
    call_state_table: str,
    dynamodb_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _api_call(store, "CA-young", FlakyEvents(bus["events"], fail=None))
    with pytest.raises(CallEventError):
        calls.end_call(CallContext(call_id="CA-young", tenant_id="acme"), 3600)
    sweeper = load_sweeper(monkeypatch, call_state_table, "300")
    assert sweep_once(sweeper)["found"] == 0 and delivered(bus) == []
    item = meta_item(dynamodb_client, call_state_table, "acme", "CA-young")
    assert item[PENDING_FIELD] == {"BOOL": True}  # still pending: swept on a later run
    assert sweep_once(sweeper, {"min_age_s": 0})["swept"] == ["CA-young"]  # direct invoke


def test_a_failed_resend_keeps_the_mark_for_the_next_run(
    bus: dict[str, Any],
    store: DynamoDBStateStore,
    call_state_table: str,
    dynamodb_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _api_call(store, "CA-again", FlakyEvents(bus["events"], fail=None))
    with pytest.raises(CallEventError):
        calls.end_call(CallContext(call_id="CA-again", tenant_id="acme"), 3600)
    sweeper = load_sweeper(monkeypatch, call_state_table, "0")
    for publisher in sweeper.publishers.values():
        publisher._client = FlakyEvents(bus["events"], fail=None)
        publisher.retry = FAST
    out = sweep_once(sweeper)
    assert out["swept"] == [] and out["failed"] == {"CA-again": "EventPublishError"}
    item = meta_item(dynamodb_client, call_state_table, "acme", "CA-again")
    assert item[PENDING_FIELD] == {"BOOL": True} and PENDING_SOURCE_FIELD in item
    for publisher in sweeper.publishers.values():
        publisher._client = bus["events"]
    assert sweep_once(sweeper)["swept"] == ["CA-again"] and len(delivered(bus)) == 1


def test_the_sweeper_answers_bad_input_and_an_unreadable_index_with_the_error_shape(
    call_state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeper = load_sweeper(monkeypatch, call_state_table, "0")
    bad = sweep_once(sweeper, {"detail": {"limit": -1}})
    assert bad["error"]["type"] == "invalid_event" and "-1" not in str(bad)
    assert sweep_once(sweeper, ["not", "an", "object"])["error"]["type"] == "invalid_event"
    sweeper.index = DynamoDBPendingIndex("no-such-table")
    down = sweep_once(sweeper)
    assert down["error"]["type"] == "state_unavailable"


def test_the_template_table_has_the_sparse_pending_index(
    dynamodb_client: Any, call_state_table: str, store: DynamoDBStateStore
) -> None:
    table = dynamodb_client.describe_table(TableName=call_state_table)["Table"]
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == PENDING_INDEX
    assert [k["AttributeName"] for k in index["KeySchema"]] == [
        PENDING_SOURCE_FIELD,
        PENDING_SINCE_FIELD,
    ]
    # a call that ended normally is not in the index: the sweeper never reads it
    ctx = CallContext(call_id="CA-plain", tenant_id="acme")
    store.put_call_meta(ctx, {"ended_at": 1.0, "end_reason": "hangup"}, time.time(), 3600)
    assert DynamoDBPendingIndex(call_state_table).find("mirror.bridge", time.time(), 10) == []
    assert Path(SWEEPER).exists()
