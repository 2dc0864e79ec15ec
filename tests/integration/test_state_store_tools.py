"""The state store's record of allowed irreversible tool calls (the tool gate's duplicate check).

One contract suite for both stores, in the style of test_state_store.py: the DynamoDB store runs
against in-process moto, where TTL never deletes anything, so expiry must be checked on read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mirror.models import CallContext
from mirror.state import (
    DynamoDBStateStore,
    RecordedToolCall,
    StateStore,
    StateStoreError,
    tool_fingerprint,
)
from mirror.state.base import PK, SK, TTL_ATTRIBUTE
from tests.support.state import STORE_KINDS, store_of
from tests.support.threads import race

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
TTL = 3_600
CTX = CallContext(call_id="call-1", tenant_id="acme")
FP = tool_fingerprint("refund_order", {"order_id": "W1", "amount": 25})
OTHER_FP = tool_fingerprint("refund_order", {"order_id": "W2", "amount": 25})


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> StateStore:
    return store_of(request)


def claim(store: StateStore, call_id: str, now: float = T0, **kw: Any) -> RecordedToolCall | None:
    fingerprint = kw.pop("fingerprint", FP)
    ttl = kw.pop("ttl", TTL)
    return store.claim_tool_call(CTX, fingerprint, call_id, "refund_order", now, ttl, **kw)


# --- fingerprints -----------------------------------------------------------------------------


def test_fingerprint_is_canonical_json_of_name_and_args() -> None:
    a = tool_fingerprint("refund", {"order": {"id": "W1", "lines": [1, 2]}, "amount": 25})
    b = tool_fingerprint("refund", {"amount": 25.0, "order": {"lines": [1, 2], "id": "W1"}})
    assert a == b  # key order and 25 vs 25.0 do not matter
    assert len(a) == 64 and all(c in "0123456789abcdef" for c in a)
    assert tool_fingerprint("refund", {"amount": 25.5}) != tool_fingerprint(
        "refund", {"amount": 25}
    )
    assert tool_fingerprint("refund", {"lines": [1, 2]}) != tool_fingerprint(
        "refund", {"lines": [2, 1]}
    )  # list order is part of the action
    assert tool_fingerprint("refund", {"id": "W1"}) != tool_fingerprint("cancel", {"id": "W1"})
    assert tool_fingerprint("refund", {"id": "W1"}) != tool_fingerprint("refund", {"id": "w1"})
    assert tool_fingerprint("refund", {"flag": True}) != tool_fingerprint("refund", {"flag": 1})


# --- contract ---------------------------------------------------------------------------------


def test_first_claim_wins_and_is_readable(store: StateStore) -> None:
    assert store.get_tool_call(CTX, FP, T0) is None
    assert claim(store, "c1") is None
    assert store.get_tool_call(CTX, FP, T0 + 1) == RecordedToolCall("c1", "refund_order", T0)
    assert store.get_tool_call(CTX, OTHER_FP, T0 + 1) is None


def test_second_call_with_the_same_fingerprint_gets_the_holder(store: StateStore) -> None:
    assert claim(store, "c1") is None
    holder = claim(store, "c2", T0 + 5)
    assert holder == RecordedToolCall("c1", "refund_order", T0)
    # the refused claim changed nothing
    assert store.get_tool_call(CTX, FP, T0 + 6) == RecordedToolCall("c1", "refund_order", T0)
    assert claim(store, "c2", T0 + 7, fingerprint=OTHER_FP) is None  # other arguments: fine


def test_redelivery_of_the_holder_wins_again(store: StateStore) -> None:
    assert claim(store, "c1") is None
    assert claim(store, "c1", T0 + 3) is None
    recorded = store.get_tool_call(CTX, FP, T0 + 4)
    assert recorded is not None and recorded.tool_call_id == "c1"


def test_retry_of_the_holder_takes_over(store: StateStore) -> None:
    assert claim(store, "c1") is None
    assert claim(store, "c2", T0 + 5, retry_of="c1") is None
    assert store.get_tool_call(CTX, FP, T0 + 6) == RecordedToolCall("c2", "refund_order", T0 + 5)
    # c1 no longer holds it: another retry must name c2
    assert claim(store, "c3", T0 + 7, retry_of="c1") == RecordedToolCall(
        "c2", "refund_order", T0 + 5
    )
    assert claim(store, "c3", T0 + 8, retry_of="c2") is None


def test_retry_of_a_call_that_was_never_recorded_is_a_plain_claim(store: StateStore) -> None:
    assert claim(store, "c2", retry_of="c-unknown") is None
    recorded = store.get_tool_call(CTX, FP, T0)
    assert recorded is not None and recorded.tool_call_id == "c2"


def test_expired_holder_is_invisible_and_can_be_replaced(store: StateStore) -> None:
    assert claim(store, "c1", ttl=60) is None
    assert store.get_tool_call(CTX, FP, T0 + 59.5) is not None
    assert store.get_tool_call(CTX, FP, T0 + 60) is None  # expires_at is exclusive
    assert claim(store, "c2", T0 + 60) is None
    assert store.get_tool_call(CTX, FP, T0 + 61) == RecordedToolCall("c2", "refund_order", T0 + 60)


def test_concurrent_claims_have_one_winner(store: StateStore) -> None:
    results = race(8, lambda i: claim(store, f"c{i}"))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    holder = store.get_tool_call(CTX, FP, T0)
    assert holder is not None and holder.tool_call_id == f"c{winners[0]}"
    assert all(r == holder for r in results if r is not None)


def test_tenants_and_calls_do_not_share_tool_records(store: StateStore) -> None:
    assert claim(store, "c1") is None
    other_tenant = CallContext(call_id=CTX.call_id, tenant_id="other")
    other_call = CallContext(call_id="call-2", tenant_id=CTX.tenant_id)
    for ctx in (other_tenant, other_call):
        assert store.get_tool_call(ctx, FP, T0) is None
        assert store.claim_tool_call(ctx, FP, "c9", "refund_order", T0, TTL) is None


def test_tool_records_are_not_history_or_verdicts(store: StateStore) -> None:
    assert claim(store, "c1") is None
    assert store.get_history(CTX, T0, 100) == []
    assert store.list_verdicts(CTX, T0) == []
    assert store.get_call_meta(CTX, T0) is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.get_tool_call(CTX, "", T0), "fingerprint"),
        (lambda s: s.get_tool_call(CTX, "a#b", T0), "fingerprint"),
        (lambda s: s.get_tool_call(CTX, "f" * 129, T0), "fingerprint"),
        (lambda s: s.claim_tool_call(CTX, FP, "", "refund", T0, TTL), "tool_call_id"),
        (lambda s: s.claim_tool_call(CTX, FP, "c1", "", T0, TTL), "name"),
        (lambda s: s.claim_tool_call(CTX, FP, "c1", "r", T0, TTL, retry_of=""), "retry_of"),
        (lambda s: s.claim_tool_call(CTX, FP, "c1", "refund", T0, 0), "ttl_s"),
        (
            lambda s: s.claim_tool_call(
                CallContext.model_construct(call_id="c", tenant_id="a#b"), FP, "c1", "r", T0, TTL
            ),
            "#",
        ),
    ],
)
def test_bad_arguments_are_rejected(
    store: StateStore, call: Callable[[StateStore], object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        call(store)
    assert store.get_tool_call(CTX, FP, T0) is None


# --- DynamoDB specifics -----------------------------------------------------------------------


def test_tool_item_layout_and_integer_ttl(call_state_table: str, dynamodb_client: Any) -> None:
    store = DynamoDBStateStore(call_state_table, client=dynamodb_client)
    assert store.claim_tool_call(CTX, FP, "c1", "refund_order", T0 + 0.75, 60) is None
    items = dynamodb_client.scan(TableName=call_state_table)["Items"]
    assert len(items) == 1
    item = items[0]
    assert item[PK]["S"] == "acme#call-1"
    assert item[SK]["S"] == f"TOOL#{FP}"
    assert item[TTL_ATTRIBUTE]["N"] == str(int(T0 + 60.75))
    assert item["tool_call_id"]["S"] == "c1" and item["name"]["S"] == "refund_order"
    assert "W1" not in str(item)  # the arguments are only hashed, never stored


def test_expired_holder_stays_in_the_table_but_is_ignored(
    call_state_table: str, dynamodb_client: Any
) -> None:
    """moto (like DynamoDB's lazy TTL) keeps the expired item: only the read check hides it."""
    store = DynamoDBStateStore(call_state_table, client=dynamodb_client)
    assert store.claim_tool_call(CTX, FP, "c1", "refund_order", T0, 60) is None
    later = T0 + 600
    assert len(dynamodb_client.scan(TableName=call_state_table)["Items"]) == 1
    assert store.get_tool_call(CTX, FP, later) is None
    assert store.claim_tool_call(CTX, FP, "c2", "refund_order", later, 60) is None


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("get_tool_call", lambda s: s.get_tool_call(CTX, FP, T0)),
        ("claim_tool_call", lambda s: s.claim_tool_call(CTX, FP, "c1", "refund", T0, TTL)),
    ],
)
def test_missing_table_surfaces_as_state_store_error(
    call_state_table: str, operation: str, call: Callable[[DynamoDBStateStore], object]
) -> None:
    store = DynamoDBStateStore("no-such-table")
    with pytest.raises(StateStoreError, match=operation) as info:
        call(store)
    assert "ResourceNotFoundException" in str(info.value)


def test_client_property_is_the_store_client(call_state_table: str) -> None:
    store = DynamoDBStateStore(call_state_table)
    assert store.client is store.client
    assert store.client.meta.config.retries["total_max_attempts"] == 3
