"""One contract suite for both state stores, plus DynamoDB-specific failure handling.

The DynamoDB store runs against in-process moto, where TTL never deletes anything; the memory
store drops expired items promptly. Both must look the same to a caller.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from mirror.models import (
    AgentMessage,
    CallContext,
    CustomerMessage,
    Message,
    Reason,
    ToolCall,
    ToolMessage,
    Verdict,
)
from mirror.state import (
    DynamoDBStateStore,
    StateStore,
    StateStoreConflictError,
    StateStoreError,
    call_key,
)
from mirror.state.base import (
    MAX_MESSAGES_PER_TURN,
    PK,
    SK,
    TTL_ATTRIBUTE,
    from_attr,
    to_attr,
)
from tests.conftest import call_state_table_properties
from tests.support.state import STORE_KINDS, store_of
from tests.support.threads import race

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
TTL = 3_600
LIMIT = 200
CTX = CallContext(call_id="call-1", tenant_id="acme")
ALLOW = Verdict(decision="allow", score=0.0)


def customer(text: str) -> CustomerMessage:
    return CustomerMessage(role="customer", text=text)


def agent(text: str, *calls: ToolCall) -> AgentMessage:
    return AgentMessage(role="agent", text=text, tool_calls=list(calls))


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> StateStore:
    return store_of(request)


# --- contract ---------------------------------------------------------------------------------


def test_implements_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)


def test_meta_upsert(store: StateStore) -> None:
    assert store.get_call_meta(CTX, T0) is None

    store.put_call_meta(CTX, {"agent_id": "a1", "turns": 0, "lang": "en"}, T0, TTL)
    assert store.get_call_meta(CTX, T0 + 1) == {
        "agent_id": "a1",
        "turns": 0,
        "lang": "en",
        "started_at": T0,
    }

    store.put_call_meta(CTX, {"turns": 3, "score": 0.25, "live": True, "lang": None}, T0 + 5, TTL)
    meta = store.get_call_meta(CTX, T0 + 6)
    assert meta == {
        "agent_id": "a1",
        "turns": 3,
        "score": 0.25,
        "live": True,
        "lang": None,
        "started_at": T0,
    }
    assert meta is not None and meta["live"] is True and isinstance(meta["turns"], int)


@pytest.mark.parametrize(
    "fields",
    [{"next_seq": 5}, {"started_at": 1}, {"expires_at": 1}, {"pk": "x"}, {"": 1}],
)
def test_meta_rejects_reserved_or_empty_names(store: StateStore, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        store.put_call_meta(CTX, fields, T0, TTL)
    assert store.get_call_meta(CTX, T0) is None


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), [1], {"a": 1}, 10**130],
    ids=["nan", "inf", "list", "dict", "beyond-dynamodb-range"],
)
def test_meta_rejects_unstorable_values(store: StateStore, value: object) -> None:
    with pytest.raises(ValueError):
        store.put_call_meta(CTX, {"x": value}, T0, TTL)  # type: ignore[dict-item]


def test_meta_updates_never_touch_the_sequence(store: StateStore) -> None:
    assert store.record_turn(CTX, "t1", [customer("a"), agent("b")], ALLOW, T0, TTL, LIMIT)
    store.put_call_meta(CTX, {"agent_id": "a1"}, T0 + 1, TTL)
    assert store.record_turn(CTX, "t2", [customer("c")], ALLOW, T0 + 2, TTL, LIMIT)

    assert texts(store.get_history(CTX, T0 + 3, LIMIT)) == ["a", "b", "c"]
    seqs = [v.seq for v in store.list_verdicts(CTX, T0 + 3)]
    assert seqs == sorted(set(seqs)) and len(seqs) == 2
    assert store.get_call_meta(CTX, T0 + 3) == {
        "agent_id": "a1",
        "started_at": T0,
        "last_turn_at": T0 + 2,
    }


def test_record_turn_appends_in_order(store: StateStore) -> None:
    assert store.get_history(CTX, T0, LIMIT) == []
    assert store.record_turn(CTX, "t1", [customer("hi"), agent("hello")], ALLOW, T0, TTL, LIMIT)
    assert store.record_turn(CTX, "t2", [customer("book it"), agent("done")], ALLOW, T0 + 1, TTL, 9)
    assert texts(store.get_history(CTX, T0 + 2, LIMIT)) == ["hi", "hello", "book it", "done"]
    meta = store.get_call_meta(CTX, T0 + 2)
    assert meta == {"started_at": T0, "last_turn_at": T0 + 1}


def test_record_turn_is_idempotent_per_turn_id(store: StateStore) -> None:
    first = Verdict(decision="allow", score=0.1)
    second = Verdict(decision="intervene", score=0.9, buffer_text="One moment.")
    assert store.record_turn(CTX, "t1", [customer("a")], first, T0, TTL, LIMIT) is True
    assert store.record_turn(
        CTX, "t1", [customer("x"), agent("y")], second, T0 + 1, TTL, LIMIT
    ) is (False)

    assert texts(store.get_history(CTX, T0 + 2, LIMIT)) == ["a"]
    assert store.get_verdict(CTX, "t1", T0 + 2) == first
    assert [v.turn_id for v in store.list_verdicts(CTX, T0 + 2)] == ["t1"]
    assert store.get_call_meta(CTX, T0 + 2) == {"started_at": T0, "last_turn_at": T0}


def test_concurrent_retries_of_one_turn_record_it_once(store: StateStore) -> None:
    results = race(
        4, lambda i: store.record_turn(CTX, "t1", [customer(f"m{i}")], ALLOW, T0, TTL, LIMIT)
    )
    assert sorted(results) == [False, False, False, True]
    assert len(store.get_history(CTX, T0, LIMIT)) == 1


def test_concurrent_turns_all_land_without_interleaving(store: StateStore) -> None:
    n = 5  # each loss means another writer won, so 5 writers need at most 5 attempts

    def record(i: int) -> bool:
        messages = [customer(f"{i}-q"), agent(f"{i}-a")]
        return store.record_turn(CTX, f"t{i}", messages, ALLOW, T0, TTL, LIMIT)

    assert race(n, record) == [True] * n
    history = texts(store.get_history(CTX, T0 + 1, LIMIT))
    assert len(history) == 2 * n
    pairs = [history[i : i + 2] for i in range(0, len(history), 2)]
    assert sorted(pairs) == sorted([[f"{i}-q", f"{i}-a"] for i in range(n)])
    verdicts = store.list_verdicts(CTX, T0 + 1)
    assert len({v.seq for v in verdicts}) == n
    # Recording order (by seq) is the order the turns' messages appear in the history.
    assert [v.turn_id for v in verdicts] == [f"t{p[0].split('-')[0]}" for p in pairs]


def test_history_is_bounded_by_limit(store: StateStore) -> None:
    for i in range(5):
        turn = [customer(f"q{i}"), agent(f"a{i}")]
        assert store.record_turn(CTX, f"t{i}", turn, ALLOW, T0 + i, TTL, LIMIT)
    assert texts(store.get_history(CTX, T0 + 9, 3)) == ["a3", "q4", "a4"]
    assert texts(store.get_history(CTX, T0 + 9, 1)) == ["a4"]
    assert len(store.get_history(CTX, T0 + 9, 100)) == 10
    assert store.get_history(CTX, T0 + 9, 0) == []
    with pytest.raises(ValueError):
        store.get_history(CTX, T0 + 9, -1)


def test_record_turn_keeps_only_history_limit_messages_of_a_turn(store: StateStore) -> None:
    turn = [customer("1"), agent("2"), customer("3"), agent("4")]
    assert store.record_turn(CTX, "t1", turn, ALLOW, T0, TTL, history_limit=2)
    assert texts(store.get_history(CTX, T0, LIMIT)) == ["3", "4"]
    with pytest.raises(ValueError):
        store.record_turn(CTX, "t2", turn, ALLOW, T0, TTL, history_limit=0)


def test_record_turn_rejects_more_messages_than_one_transaction_holds(store: StateStore) -> None:
    too_many = [customer(str(i)) for i in range(MAX_MESSAGES_PER_TURN + 1)]
    with pytest.raises(ValueError, match="at most"):
        store.record_turn(CTX, "big", too_many, ALLOW, T0, TTL, history_limit=500)
    assert store.get_history(CTX, T0, 500) == []
    assert store.get_verdict(CTX, "big", T0) is None

    assert store.record_turn(CTX, "full", too_many[1:], ALLOW, T0, TTL, history_limit=500)
    assert len(store.get_history(CTX, T0, 500)) == MAX_MESSAGES_PER_TURN


def test_messages_and_verdicts_round_trip(store: StateStore) -> None:
    call = ToolCall(id="c1", name="book_table", args={"party": 4, "when": {"day": "fri"}})
    messages: list[Message] = [
        customer("table for four on friday"),
        agent("Booking now.", call),
        ToolMessage(role="tool", name="book_table", text='{"ok": true, "ref": "ü-42"}'),
    ]
    verdict = Verdict(
        decision="block",
        score=0.93,
        reasons=[
            Reason(
                check="object",
                tier="tier0",
                code="wrong_object",
                score=0.93,
                evidence="party of 4 vs 2",
                tool_call_id="c1",
            )
        ],
        decided_by="tier0",
        latency_us={"tier0": 41.5},
        tiers_run=["tier0"],
        should_report=True,
        blocked_tool_call_ids=["c1"],
    )
    assert store.record_turn(CTX, "t1", messages, verdict, T0, TTL, LIMIT)
    assert store.get_history(CTX, T0, LIMIT) == messages
    assert store.get_verdict(CTX, "t1", T0) == verdict
    assert store.get_verdict(CTX, "unknown", T0) is None


def test_list_verdicts_in_recording_order(store: StateStore) -> None:
    # Lexical turn-id order differs from recording order; one turn records no messages.
    for i, (turn_id, messages) in enumerate(
        [("t-b", [customer("1")]), ("t-a", []), ("t-c", [customer("2"), agent("3")])]
    ):
        assert store.record_turn(CTX, turn_id, messages, ALLOW, T0 + i, TTL, LIMIT)
    recorded = store.list_verdicts(CTX, T0 + 5)
    assert [r.turn_id for r in recorded] == ["t-b", "t-a", "t-c"]
    assert [r.recorded_at for r in recorded] == [T0, T0 + 1, T0 + 2]
    assert [r.seq for r in recorded] == sorted({r.seq for r in recorded})
    assert all(r.verdict == ALLOW for r in recorded)


def test_expired_items_are_invisible(store: StateStore) -> None:
    ttl = 60
    store.put_call_meta(CTX, {"agent_id": "a1"}, T0, ttl)
    assert store.record_turn(CTX, "t1", [customer("old")], ALLOW, T0, ttl, LIMIT)
    assert store.claim_cooldown(CTX, T0, 600, ttl)  # lasts longer than the item itself
    store.put_override(CTX, "say sorry", T0, ttl)

    before = T0 + ttl - 0.5
    assert store.get_call_meta(CTX, before) is not None
    assert texts(store.get_history(CTX, before, LIMIT)) == ["old"]
    assert store.get_verdict(CTX, "t1", before) == ALLOW
    assert store.cooldown_active(CTX, before)

    at_expiry = T0 + ttl  # expires_at is exclusive
    assert store.get_call_meta(CTX, at_expiry) is None
    assert store.get_history(CTX, at_expiry, LIMIT) == []
    assert store.get_verdict(CTX, "t1", at_expiry) is None
    assert store.list_verdicts(CTX, at_expiry) == []
    assert not store.cooldown_active(CTX, at_expiry)
    assert store.take_override(CTX, at_expiry) is None
    assert store.take_override(CTX, before) is None  # the expired note was deleted, not kept
    assert store.claim_cooldown(CTX, at_expiry, 10, TTL)


def test_a_call_restarts_cleanly_after_expiry(store: StateStore) -> None:
    ttl = 60
    store.put_call_meta(CTX, {"agent_id": "a1"}, T0, ttl)
    assert store.record_turn(CTX, "t1", [customer("old")], ALLOW, T0, ttl, LIMIT)

    later = T0 + 1_000
    # The idempotency window is the TTL: an expired turn id may be recorded again.
    assert store.record_turn(CTX, "t1", [customer("new")], ALLOW, later, TTL, LIMIT)
    assert texts(store.get_history(CTX, later, LIMIT)) == ["new"]
    assert store.get_call_meta(CTX, later) == {"started_at": later, "last_turn_at": later}
    assert [r.recorded_at for r in store.list_verdicts(CTX, later)] == [later]


def test_expired_meta_is_not_merged_into_new_meta(store: StateStore) -> None:
    store.put_call_meta(CTX, {"agent_id": "a1", "lang": "en"}, T0, 60)
    store.put_call_meta(CTX, {"lang": "de"}, T0 + 100, TTL)
    assert store.get_call_meta(CTX, T0 + 101) == {"lang": "de", "started_at": T0 + 100}


def test_history_pages_past_expired_newer_messages(store: StateStore) -> None:
    # Newer messages expiring first is unusual, but must not hide the live older ones.
    assert store.record_turn(CTX, "old", [customer("a"), agent("b")], ALLOW, T0, 1_000, LIMIT)
    newer = [customer("c"), agent("d"), customer("e")]
    assert store.record_turn(CTX, "new", newer, ALLOW, T0 + 1, 5, LIMIT)
    assert texts(store.get_history(CTX, T0 + 10, 2)) == ["a", "b"]
    assert texts(store.get_history(CTX, T0 + 10, 1)) == ["b"]
    assert texts(store.get_history(CTX, T0 + 3, 4)) == ["b", "c", "d", "e"]


def test_cooldown(store: StateStore) -> None:
    assert not store.cooldown_active(CTX, T0)
    assert store.claim_cooldown(CTX, T0, 10, TTL) is True
    assert store.cooldown_active(CTX, T0 + 1)
    assert store.claim_cooldown(CTX, T0 + 5, 10, TTL) is False
    assert store.cooldown_active(CTX, T0 + 9.999)  # the failed claim did not extend it
    assert not store.cooldown_active(CTX, T0 + 10)
    assert store.claim_cooldown(CTX, T0 + 10, 10, TTL) is True
    assert store.cooldown_active(CTX, T0 + 19.5)
    with pytest.raises(ValueError):
        store.claim_cooldown(CTX, T0 + 30, -1, TTL)


def test_concurrent_cooldown_claims_have_one_winner(store: StateStore) -> None:
    results = race(8, lambda _: store.claim_cooldown(CTX, T0, 10, TTL))
    assert sorted(results) == [False] * 7 + [True]


def test_override_is_one_shot(store: StateStore) -> None:
    assert store.take_override(CTX, T0) is None
    store.put_override(CTX, "offer a refund", T0, TTL)
    store.put_override(CTX, "offer a voucher", T0 + 1, TTL)  # overwrites
    assert store.take_override(CTX, T0 + 2) == "offer a voucher"
    assert store.take_override(CTX, T0 + 3) is None


def test_concurrent_override_takers_have_one_winner(store: StateStore) -> None:
    store.put_override(CTX, "escalate", T0, TTL)
    results = race(8, lambda _: store.take_override(CTX, T0 + 1))
    assert results.count("escalate") == 1 and results.count(None) == 7


def test_tenants_do_not_share_calls(store: StateStore) -> None:
    a = CallContext(call_id="same-call", tenant_id="tenant-a")
    b = CallContext(call_id="same-call", tenant_id="tenant-b")
    store.put_call_meta(a, {"agent_id": "a1"}, T0, TTL)
    assert store.record_turn(a, "t1", [customer("secret")], ALLOW, T0, TTL, LIMIT)
    assert store.claim_cooldown(a, T0, 10, TTL)
    store.put_override(a, "only for a", T0, TTL)

    assert store.get_call_meta(b, T0) is None
    assert store.get_history(b, T0, LIMIT) == []
    assert store.get_verdict(b, "t1", T0) is None
    assert store.list_verdicts(b, T0) == []
    assert not store.cooldown_active(b, T0)
    assert store.take_override(b, T0) is None
    assert store.claim_cooldown(b, T0, 10, TTL)
    assert store.record_turn(b, "t1", [customer("other")], ALLOW, T0, TTL, LIMIT)

    assert texts(store.get_history(a, T0, LIMIT)) == ["secret"]
    assert store.take_override(a, T0) == "only for a"


def test_hash_in_tenant_id_is_rejected(store: StateStore) -> None:
    # model_construct: the model may itself forbid '#' one day; the store must not rely on it.
    bad = CallContext.model_construct(call_id="c", tenant_id="a#b")
    with pytest.raises(ValueError, match="#"):
        call_key(bad)
    with pytest.raises(ValueError):
        store.record_turn(bad, "t1", [customer("x")], ALLOW, T0, TTL, LIMIT)
    with pytest.raises(ValueError):
        store.get_history(bad, T0, LIMIT)
    with pytest.raises(ValueError):
        store.claim_cooldown(bad, T0, 10, TTL)


def test_call_key_layout() -> None:
    assert call_key(CallContext(call_id="c#1", tenant_id="t")) == "t#c#1"


# --- DynamoDB specifics -----------------------------------------------------------------------


def test_template_matches_the_store_layout() -> None:
    props = call_state_table_properties()
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": PK, "KeyType": "HASH"},
        {"AttributeName": SK, "KeyType": "RANGE"},
    ]
    types = {d["AttributeName"]: d["AttributeType"] for d in props["AttributeDefinitions"]}
    # plus the keys of the sparse CallEndedPendingIndex (mirror.sweeper), which the store
    # never writes itself
    assert types == {PK: "S", SK: "S", "ended_event_source": "S", "ended_event_pending_since": "N"}
    assert props["TimeToLiveSpecification"]["AttributeName"] == TTL_ATTRIBUTE
    assert props["TimeToLiveSpecification"]["Enabled"] is True


def test_importing_the_store_does_not_import_boto3() -> None:
    code = (
        "import sys; import mirror.state as s; s.DynamoDBStateStore('t'); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_own_client_has_timeouts_and_bounded_retries(call_state_table: str) -> None:
    config = DynamoDBStateStore(call_state_table)._get_client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.0, 2.0)
    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] == 3  # the first try and two retries


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("get_call_meta", lambda s: s.get_call_meta(CTX, T0)),
        ("put_call_meta", lambda s: s.put_call_meta(CTX, {"a": 1}, T0, TTL)),
        ("record_turn", lambda s: s.record_turn(CTX, "t", [], ALLOW, T0, TTL, LIMIT)),
        ("get_history", lambda s: s.get_history(CTX, T0, LIMIT)),
        ("claim_cooldown", lambda s: s.claim_cooldown(CTX, T0, 10, TTL)),
        ("take_override", lambda s: s.take_override(CTX, T0)),
    ],
)
def test_missing_table_surfaces_as_state_store_error(
    call_state_table: str, operation: str, call: Callable[[DynamoDBStateStore], object]
) -> None:
    store = DynamoDBStateStore("no-such-table")
    with pytest.raises(StateStoreError, match=operation) as info:
        call(store)
    assert "ResourceNotFoundException" in str(info.value)
    assert info.value.__cause__ is not None


def test_transport_errors_surface_as_state_store_error() -> None:
    from botocore.exceptions import EndpointConnectionError

    class Unreachable:
        def get_item(self, **_: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.invalid")

    store = DynamoDBStateStore("t", client=Unreachable())
    with pytest.raises(StateStoreError, match="cooldown_active"):
        store.cooldown_active(CTX, T0)


class _RivalBeforeTransaction:
    """A client that lets a rival writer record a turn right before some of our transactions:
    the rival lands between record_turn's read of next_seq and its conditional write."""

    def __init__(self, client: Any, rival: DynamoDBStateStore, times: int) -> None:
        self._client = client
        self._rival = rival
        self.remaining = times
        self.rival_turns = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
        if self.remaining:
            self.remaining -= 1
            self.rival_turns += 1
            turn = [customer(f"rival{self.rival_turns}")]
            assert self._rival.record_turn(CTX, f"r{self.rival_turns}", turn, ALLOW, T0, TTL, 9)
        return self._client.transact_write_items(**kwargs)


def test_record_turn_retries_after_losing_the_sequence_race(
    call_state_table: str, dynamodb_client: Any
) -> None:
    real = dynamodb_client
    rival = DynamoDBStateStore(call_state_table, client=real)
    client = _RivalBeforeTransaction(real, rival, times=2)
    store = DynamoDBStateStore(call_state_table, client=client)

    assert store.record_turn(CTX, "mine", [customer("mine")], ALLOW, T0, TTL, LIMIT)
    assert client.rival_turns == 2
    assert texts(store.get_history(CTX, T0, LIMIT)) == ["rival1", "rival2", "mine"]
    assert [v.turn_id for v in store.list_verdicts(CTX, T0)] == ["r1", "r2", "mine"]


def test_record_turn_gives_up_after_bounded_retries(
    call_state_table: str, dynamodb_client: Any
) -> None:
    real = dynamodb_client
    rival = DynamoDBStateStore(call_state_table, client=real)
    client = _RivalBeforeTransaction(real, rival, times=100)
    store = DynamoDBStateStore(call_state_table, client=client, record_attempts=5)

    with pytest.raises(StateStoreConflictError, match="record_turn.*5 attempts"):
        store.record_turn(CTX, "mine", [customer("mine")], ALLOW, T0, TTL, LIMIT)
    assert client.rival_turns == 5
    assert store.get_verdict(CTX, "mine", T0) is None
    assert texts(store.get_history(CTX, T0, LIMIT)) == [f"rival{i}" for i in range(1, 6)]


def test_items_carry_an_integer_ttl(call_state_table: str, dynamodb_client: Any) -> None:
    client = dynamodb_client
    store = DynamoDBStateStore(call_state_table, client=client)
    store.put_call_meta(CTX, {}, T0 + 0.75, 60)
    assert store.record_turn(CTX, "t1", [customer("a")], ALLOW, T0 + 0.75, 60, LIMIT)
    assert store.claim_cooldown(CTX, T0 + 0.75, 5, 60)
    store.put_override(CTX, "n", T0 + 0.75, 60)
    items = client.scan(TableName=call_state_table)["Items"]
    assert {i[SK]["S"] for i in items} == {
        "META",
        "MSG#0000000000",
        "VERDICT#t1",
        "COOLDOWN",
        "OVERRIDE",
    }
    assert {i[PK]["S"] for i in items} == {"acme#call-1"}
    assert {i[TTL_ATTRIBUTE]["N"] for i in items} == {str(int(T0 + 60.75))}


def test_cooldown_owner_may_renew_its_own_claim(store: StateStore) -> None:
    """A redelivery of the turn that claimed the cooldown still wins it; nobody else does."""
    ctx = CallContext(call_id="call-owner")
    assert store.claim_cooldown(ctx, 1000.0, 10.0, 3600, owner="t1")
    assert not store.cooldown_active(ctx, 1001.0, owner="t1")
    assert store.cooldown_active(ctx, 1001.0, owner="t2")
    assert store.claim_cooldown(ctx, 1002.0, 10.0, 3600, owner="t1")
    assert not store.claim_cooldown(ctx, 1003.0, 10.0, 3600, owner="t2")
    assert store.cooldown_active(ctx, 1011.0)  # renewed at 1002, so active until 1012


def test_attribute_values_round_trip_and_refuse_what_they_cannot_hold() -> None:
    """One encoder for every table store: what goes in comes back (integral numbers as int)."""
    values = [None, True, "a", 3, 2.5, 1e20, ["x", 1, [False, None]]]
    assert [from_attr(to_attr(v)) for v in values] == values
    assert to_attr(1.0) == {"N": "1"} and to_attr((1, "b")) == {"L": [{"N": "1"}, {"S": "b"}]}
    with pytest.raises(TypeError, match="dict"):
        to_attr({"nested": "maps are not stored"})
    with pytest.raises(ValueError, match="SS"):
        from_attr({"SS": ["a"]})
