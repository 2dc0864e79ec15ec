"""The tool gate's rules (mirror.gate.GateService): on the in-memory store for the decision rules,
on in-process moto DynamoDB with Powertools Idempotency for retries and concurrent deliveries.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest

from mirror.config import config_for_event
from mirror.gate import (
    DEFAULT_SPOKEN_LINES,
    IDEMPOTENCY_PK,
    GateOutcome,
    GateResult,
    GateService,
    GateToolEvent,
    fail_safe,
    idempotency_layer,
)
from mirror.judge import Finding
from mirror.llm.base import LLMTimeout, LLMUnavailable
from mirror.models import (
    AgentMessage,
    CallContext,
    CustomerMessage,
    MirrorConfig,
    TierTimeouts,
    ToolCall,
    Turn,
    Verdict,
)
from mirror.state import (
    DynamoDBStateStore,
    InMemoryStateStore,
    StateStoreError,
    tool_fingerprint,
)
from mirror.state.base import PK, SK, TTL_ATTRIBUTE
from tests.fakes.stores import BrokenStore
from tests.fakes.tiers import FakeTier

pytestmark = pytest.mark.integration

FAST = TierTimeouts(tier1_s=0.05, tier2_s=0.05)
CTX = CallContext(call_id="CA-1", tenant_id="acme")
CANCEL = {"id": "c1", "name": "cancel_order", "args": {"order_id": "W100"}}
LOOKUP = {"id": "l1", "name": "get_order_details", "args": {"order_id": "W100"}}
CONFIRMED_HISTORY = [
    {"role": "customer", "text": "Please cancel order W100, I don't need it any more."},
    {"role": "agent", "text": "Cancel order W100, correct?"},
    {"role": "customer", "text": "Yes, go ahead."},
]


def event(*calls: dict[str, Any], history: list[dict[str, Any]] | None = None, **extra: Any):
    """A GateTool event for call CA-1 of tenant acme; confirmed and grounded unless told."""
    hist = CONFIRMED_HISTORY if history is None else history
    customer = next((m["text"] for m in reversed(hist) if m["role"] == "customer"), "")
    return GateToolEvent.model_validate(
        {
            "call_id": CTX.call_id,
            "tenant_id": CTX.tenant_id,
            "customer_text": customer,
            "history": hist,
            "tool_calls": list(calls or [CANCEL]),
            **extra,
        }
    )


UNCONFIRMED_HISTORY = [{"role": "customer", "text": "Please cancel order W100."}]


def gate(service: GateService, ev: GateToolEvent, **config: Any) -> GateOutcome:
    return service.gate(ev, config_for_event(MirrorConfig(**config), ev))


def only(outcome: GateOutcome):
    assert len(outcome.result.decisions) == 1
    return outcome.result.decisions[0]


def kinds(outcome: GateOutcome) -> list[str]:
    return [f.kind for f in outcome.failures]


# --- the decisions ----------------------------------------------------------------------------


def test_confirmed_grounded_call_is_allowed_and_recorded() -> None:
    store = InMemoryStateStore()
    outcome = gate(GateService(store), event())

    d = only(outcome)
    assert (d.decision, d.decided_by, d.irreversible) == ("allow", "tier0", True)
    assert d.spoken_line is None and d.failure is None and d.reasons == []
    assert outcome.result.decision == "allow" and outcome.result.spoken_line is None
    assert outcome.fresh == ("c1",) and outcome.failures == []
    fp = tool_fingerprint("cancel_order", {"order_id": "W100"})
    holder = store.get_tool_call(CTX, fp, time.time())
    assert holder is not None and holder.tool_call_id == "c1"


@pytest.mark.parametrize(
    ("history", "call", "code"),
    [
        (UNCONFIRMED_HISTORY, CANCEL, "no_confirmation_yet"),
        (
            CONFIRMED_HISTORY,
            {"id": "c1", "name": "cancel_order", "args": {"order_id": "W999"}},
            "ungrounded_value",
        ),
    ],
    ids=["unconfirmed", "ungrounded"],
)
def test_tier0_block_says_a_spoken_line_for_its_reason(
    history: list[dict[str, Any]], call: dict[str, Any], code: str
) -> None:
    store = InMemoryStateStore()
    outcome = gate(GateService(store), event(call, history=history))

    d = only(outcome)
    assert d.decision == "block" and d.decided_by == "tier0"
    assert d.reasons[0].code == code and d.reasons[0].tool_call_id == "c1"
    assert d.spoken_line == DEFAULT_SPOKEN_LINES[code]
    assert outcome.result.decision == "block"
    assert outcome.result.spoken_line == d.spoken_line
    # a blocked call is not recorded: the corrected call is not a duplicate of it
    fp = tool_fingerprint(call["name"], call["args"])
    assert store.get_tool_call(CTX, fp, time.time()) is None


def test_spoken_lines_are_templates_operators_replace() -> None:
    lines = {"no_confirmation_yet": "Shall I go ahead with that?"}
    service = GateService(InMemoryStateStore(), spoken_lines=lines)
    assert only(gate(service, event(history=UNCONFIRMED_HISTORY))).spoken_line == (
        "Shall I go ahead with that?"
    )
    assert service.line("wrong_amount") == DEFAULT_SPOKEN_LINES["wrong_amount"]
    assert service.line("a_code_without_a_line") == DEFAULT_SPOKEN_LINES["default"]


def test_result_is_the_strictest_decision_in_event_order() -> None:
    bad_refund = {"id": "c2", "name": "refund_order", "args": {"order_id": "W100", "amount": 25}}
    outcome = gate(GateService(InMemoryStateStore()), event(LOOKUP, CANCEL, bad_refund))
    assert [d.tool_call_id for d in outcome.result.decisions] == ["l1", "c1", "c2"]
    assert [d.decision for d in outcome.result.decisions] == ["allow", "allow", "block"]
    assert outcome.result.decision == "block"
    assert outcome.result.spoken_line == DEFAULT_SPOKEN_LINES["wrong_amount"]
    with pytest.raises(ValueError, match="strictest"):
        GateResult.model_validate(
            {**outcome.result.model_dump(), "decision": "allow", "spoken_line": None}
        )


# --- reversible and irreversible --------------------------------------------------------------


def test_reversible_calls_are_allowed_without_any_io() -> None:
    store = BrokenStore("get_tool_call", "claim_tool_call", "get_history")
    tier = FakeTier(error=RuntimeError("down"))
    outcome = gate(GateService(store, [tier]), event(LOOKUP, history=UNCONFIRMED_HISTORY))
    d = only(outcome)
    assert (d.decision, d.decided_by, d.irreversible) == ("allow", "not_gated", False)
    assert store.touched == 0 and tier.calls == 0 and outcome.failures == []


def test_per_tool_irreversible_flag_adds_to_the_configured_names() -> None:
    gated_lookup = {**LOOKUP, "irreversible": True}
    still_gated_cancel = {**CANCEL, "id": "c9", "irreversible": False}  # cannot opt out
    outcome = gate(
        GateService(InMemoryStateStore()),
        event(gated_lookup, still_gated_cancel, history=UNCONFIRMED_HISTORY),
    )
    lookup, cancel = outcome.result.decisions
    assert (lookup.decision, lookup.irreversible) == ("block", True)
    assert lookup.reasons[0].code == "no_confirmation_yet"
    assert (cancel.decision, cancel.irreversible) == ("block", True)
    # and the configured names, per event: added to the operator's, never replacing them
    renamed = event(CANCEL, history=UNCONFIRMED_HISTORY, irreversible_tools=["refund_*"])
    assert only(gate(GateService(InMemoryStateStore()), renamed)).decision == "block"
    config = MirrorConfig(irreversible_tools=["refund_*"])
    assert only(GateService(InMemoryStateStore()).gate(renamed, config)).decided_by == (
        "not_gated"
    )  # the operator's list decides


def test_cooldown_never_suppresses_the_gate() -> None:
    store = InMemoryStateStore()
    now = time.time()
    assert store.claim_cooldown(CTX, now, 600, 3600, owner="t-speech")
    assert store.cooldown_active(CTX, now + 1)
    service = GateService(store)

    assert only(gate(service, event(history=UNCONFIRMED_HISTORY))).decision == "block"
    assert only(gate(service, event())).decision == "allow"
    assert store.cooldown_active(CTX, now + 1)  # the gate neither reads nor touches it


# --- remote tiers and failure modes -----------------------------------------------------------


def test_remote_tier_runs_when_tier0_is_silent_and_can_block() -> None:
    finding = Finding("llm_args", "wrong_object", 0.9, "the caller meant W101", "c1", "tier2")
    tier = FakeTier(result=[finding])
    d = only(gate(GateService(InMemoryStateStore(), [tier]), event()))
    assert tier.calls == 1
    assert (d.decision, d.decided_by) == ("block", "tier2")
    assert d.spoken_line == DEFAULT_SPOKEN_LINES["wrong_object"]

    silent = FakeTier()
    blocked_by_tier0 = gate(
        GateService(InMemoryStateStore(), [silent]), event(history=UNCONFIRMED_HISTORY)
    )
    assert only(blocked_by_tier0).decided_by == "tier0" and silent.calls == 0


@pytest.mark.parametrize(
    ("tier", "kind"),
    [
        (FakeTier(delay=1.0), "tier_timeout"),
        (FakeTier(error=RuntimeError("HTTP 500")), "tier_error"),
        (FakeTier(error=TimeoutError("read timed out")), "tier_timeout"),
        (FakeTier(error=LLMTimeout("tier2 gpt-4o-mini: timed out")), "tier_timeout"),
        (FakeTier(error=LLMUnavailable("tier2 gpt-4o-mini: HTTP 503")), "tier_error"),
    ],
    ids=["slow", "error", "client-timeout", "llm-timeout", "llm-unavailable"],
)
def test_remote_tier_failure_holds_irreversible_calls(tier: FakeTier, kind: str) -> None:
    store = InMemoryStateStore()
    started = time.perf_counter()
    outcome = gate(GateService(store, [tier]), event(LOOKUP, CANCEL), timeouts=FAST)
    assert time.perf_counter() - started < 0.5  # the timeout, not the tier's 1 s

    lookup, cancel = outcome.result.decisions
    assert (cancel.decision, cancel.decided_by, cancel.failure) == ("hold", "failure_mode", kind)
    assert cancel.spoken_line == DEFAULT_SPOKEN_LINES["tier_unavailable"]
    assert cancel.reasons[0].code == "tier_unavailable"
    assert (lookup.decision, lookup.decided_by) == ("allow", "not_gated")  # reversible: open
    assert outcome.result.decision == "hold"
    assert outcome.result.spoken_line == DEFAULT_SPOKEN_LINES["tier_unavailable"]
    assert kinds(outcome) == [kind]
    fp = tool_fingerprint("cancel_order", {"order_id": "W100"})
    assert store.get_tool_call(CTX, fp, time.time()) is None  # a hold is not an allow


def test_fail_open_mode_allows_and_still_records_the_call() -> None:
    store = InMemoryStateStore()
    service = GateService(store, [FakeTier(delay=1.0)])
    outcome = gate(service, event(), timeouts=FAST, tool_gate_failure_mode="allow")
    d = only(outcome)
    assert (d.decision, d.decided_by, d.failure) == ("allow", "failure_mode", "tier_timeout")
    assert d.spoken_line is None
    assert kinds(outcome) == ["tier_timeout"]
    twin = event({**CANCEL, "id": "c2"})
    again = only(gate(service, twin, timeouts=FAST, tool_gate_failure_mode="allow"))
    assert (again.decision, again.decided_by) == ("block", "duplicate_check")


def test_a_tier_that_fails_before_another_decides_is_counted_not_decisive() -> None:
    finding = Finding("llm_args", "wrong_object", 0.9, "W101 was meant", "c1", "tier2")
    tiers = [FakeTier("tier1", delay=1.0), FakeTier("tier2", result=[finding])]
    outcome = gate(GateService(InMemoryStateStore(), tiers), event(), timeouts=FAST)
    d = only(outcome)
    assert (d.decision, d.decided_by, d.failure) == ("block", "tier2", None)
    assert kinds(outcome) == ["tier_timeout"]


@pytest.mark.parametrize("mode", ["hold", "allow"])
def test_state_store_failure_follows_the_failure_mode(mode: str) -> None:
    store = BrokenStore("get_tool_call", "claim_tool_call", "get_history")
    outcome = gate(GateService(store), event(LOOKUP, CANCEL), tool_gate_failure_mode=mode)
    lookup, cancel = outcome.result.decisions
    assert (cancel.decision, cancel.failure, cancel.decided_by) == (
        mode,
        "store_unavailable",
        "failure_mode",
    )
    assert lookup.decision == "allow"
    assert kinds(outcome) == ["store_unavailable"]
    assert outcome.failures[0].tool_call_id == "c1"
    assert "EndpointConnectionError" in outcome.failures[0].detail


def test_judge_error_holds_and_the_judge_runs_once() -> None:
    service = GateService(InMemoryStateStore())
    runs = 0

    class Exploding:
        remote_tiers = ()

        def evaluate(self, turn: Turn) -> Verdict:
            nonlocal runs
            runs += 1
            raise KeyError("a bug in a check")

    service.judge_for = lambda config: Exploding()  # type: ignore[method-assign,assignment,return-value]
    second = {"id": "c2", "name": "cancel_order", "args": {"order_id": "W200"}}
    outcome = gate(service, event(CANCEL, second))
    assert [d.decision for d in outcome.result.decisions] == ["hold", "hold"]
    assert [d.failure for d in outcome.result.decisions] == ["judge_error", "judge_error"]
    assert kinds(outcome) == ["judge_error", "judge_error"] and runs == 1


def test_fail_safe_needs_no_store() -> None:
    ev = event(LOOKUP, CANCEL)
    outcome = fail_safe(ev, MirrorConfig(), "internal_error", "RuntimeError")
    assert [d.decision for d in outcome.result.decisions] == ["allow", "hold"]
    assert outcome.result.decision == "hold" and kinds(outcome) == ["internal_error"]
    opened = fail_safe(ev, MirrorConfig(tool_gate_failure_mode="allow"), "internal_error", "x")
    assert opened.result.decision == "allow"


# --- duplicates -------------------------------------------------------------------------------


def test_second_identical_call_is_blocked_without_judging() -> None:
    tier = FakeTier()
    service = GateService(InMemoryStateStore(), [tier])
    assert only(gate(service, event())).decision == "allow"
    assert tier.calls == 1

    twin = {**CANCEL, "id": "c2", "args": {"order_id": "W100"}}
    d = only(gate(service, event(twin)))
    assert (d.decision, d.decided_by) == ("block", "duplicate_check")
    assert d.reasons[0].code == "duplicate_call" and "c1" in d.reasons[0].evidence
    assert d.spoken_line == DEFAULT_SPOKEN_LINES["duplicate_call"]
    assert tier.calls == 1  # a duplicate needs no judge

    other = {**CANCEL, "id": "c3", "args": {"order_id": "W200"}}
    history = [*CONFIRMED_HISTORY[:-1], {"role": "customer", "text": "Yes, and W200 too."}]
    assert only(gate(service, event(other, history=history))).decision == "allow"


def test_identical_calls_in_one_event_allow_only_the_first() -> None:
    twin = {**CANCEL, "id": "c2"}
    outcome = gate(GateService(InMemoryStateStore()), event(CANCEL, twin))
    first, second = outcome.result.decisions
    assert first.decision == "allow"
    assert (second.decision, second.decided_by) == ("block", "duplicate_check")


FAILED_C1: dict[str, Any] = {
    "tool_results": [
        {"role": "tool", "name": "cancel_order", "tool_call_id": "c1", "is_error": True,
         "text": "error: upstream timeout"}
    ]
}  # fmt: skip
"""The evidence `retry_of="c1"` needs: c1's tool result shows it failed."""


def test_duplicate_is_allowed_when_it_retries_a_failed_call() -> None:
    store = InMemoryStateStore()
    service = GateService(store)
    assert only(gate(service, event())).decision == "allow"

    retry = only(gate(service, event({**CANCEL, "id": "c2", "retry_of": "c1"}, **FAILED_C1)))
    assert (retry.decision, retry.decided_by) == ("allow", "tier0")
    fp = tool_fingerprint("cancel_order", {"order_id": "W100"})
    holder = store.get_tool_call(CTX, fp, time.time())
    assert holder is not None and holder.tool_call_id == "c2"
    # naming a call that is no longer the holder does not unlock it
    stale = only(gate(service, event({**CANCEL, "id": "c3", "retry_of": "c1"}, **FAILED_C1)))
    assert (stale.decision, stale.decided_by) == ("block", "duplicate_check")
    assert "retry_of='c2'" in stale.reasons[0].evidence


def test_retry_of_is_still_judged() -> None:
    service = GateService(InMemoryStateStore())
    assert only(gate(service, event())).decision == "allow"
    retry = event(
        {**CANCEL, "id": "c2", "retry_of": "c1"}, history=UNCONFIRMED_HISTORY, **FAILED_C1
    )
    assert only(gate(service, retry)).reasons[0].code == "no_confirmation_yet"


def test_duplicates_are_per_call_and_tenant() -> None:
    store = InMemoryStateStore()
    service = GateService(store)
    assert only(gate(service, event())).decision == "allow"
    for extra in ({"call_id": "CA-2"}, {"tenant_id": "other"}):
        ev = GateToolEvent.model_validate(
            {**event({**CANCEL, "id": "c2"}).model_dump(exclude_none=True), **extra}
        )
        assert only(gate(service, ev)).decision == "allow"


# --- stored history -------------------------------------------------------------------------


def test_stored_history_is_used_without_the_turn_scoreturn_already_recorded() -> None:
    store = InMemoryStateStore()
    now = time.time()
    call = ToolCall.model_validate(CANCEL)
    recorded = [
        CustomerMessage(role="customer", text="Please cancel order W100."),
        AgentMessage(role="agent", text="Cancel order W100, correct?"),
        CustomerMessage(role="customer", text="Yes, go ahead."),
        # ScoreTurn records the planned turn itself; its words come after the yes
        AgentMessage(role="agent", text="Cancelling it now.", tool_calls=[call]),
    ]
    verdict = Verdict(decision="allow", score=0.0)
    assert store.record_turn(CTX, "t1", recorded, verdict, now, 3600, 200)
    # the caller's yes is already stored: the event brings only the planned call
    ev = event(CANCEL, history=[], customer_text="")
    assert only(gate(GateService(store, clock=lambda: now), ev)).decision == "allow"

    # without the yes in the store, this turn's caller line is appended and judged
    other = CallContext(call_id="CA-9", tenant_id="acme")
    assert store.record_turn(other, "t1", recorded[:2], verdict, now, 3600, 200)
    ev = GateToolEvent.model_validate(
        {**ev.model_dump(exclude_none=True), "call_id": "CA-9", "customer_text": "Hmm, wait."}
    )
    assert only(gate(GateService(store, clock=lambda: now), ev)).decision == "block"


# --- idempotency under moto -------------------------------------------------------------------


def dynamo_service(table: str, tiers: list[FakeTier] | None = None, **kw: Any) -> GateService:
    store = DynamoDBStateStore(table)
    return GateService(
        store, tiers or [], persistence=idempotency_layer(store.table_name, store.client), **kw
    )


@pytest.mark.parametrize(
    "history", [CONFIRMED_HISTORY, UNCONFIRMED_HISTORY], ids=["allow", "block"]
)
def test_retry_returns_the_stored_decision_and_the_judge_ran_once(
    call_state_table: str, dynamodb_client: Any, history: list[dict[str, Any]]
) -> None:
    tier = FakeTier()
    service = dynamo_service(call_state_table, [tier])
    ev = event(LOOKUP, CANCEL, history=history)
    first = gate(service, ev)
    assert first.fresh == ("l1", "c1")
    items = dynamodb_client.scan(TableName=call_state_table)["Items"]

    # a new container (fresh service, fresh judge) gets the retry
    other_tier = FakeTier()
    retry = gate(dynamo_service(call_state_table, [other_tier]), copy.deepcopy(ev))
    assert retry.result.model_dump(mode="json") == first.result.model_dump(mode="json")
    assert retry.fresh == ("l1",)  # the irreversible call was replayed, not decided
    assert other_tier.calls == 0 and tier.calls == (1 if history is CONFIRMED_HISTORY else 0)
    assert retry.failures == []
    assert dynamodb_client.scan(TableName=call_state_table)["Items"] == items

    records = [i for i in items if i[PK]["S"] == IDEMPOTENCY_PK]
    assert len(records) == 1  # one per irreversible tool call; none for the lookup
    record = records[0]
    assert record["status"]["S"] == "COMPLETED"
    assert record[SK]["S"].startswith("gate_tool#")
    assert int(record[TTL_ATTRIBUTE]["N"]) > time.time()
    assert "W100" not in str(record[SK]) and "acme" not in str(record[SK])


def test_a_held_decision_is_replayed_too(call_state_table: str) -> None:
    slow = FakeTier(delay=1.0)
    first = gate(dynamo_service(call_state_table, [slow]), event(), timeouts=FAST)
    assert only(first).decision == "hold"
    fast = FakeTier()
    retry = gate(dynamo_service(call_state_table, [fast]), event(), timeouts=FAST)
    assert retry.result == first.result and fast.calls == 0


def test_store_failures_are_not_stored_as_decisions(call_state_table: str) -> None:
    service = dynamo_service(call_state_table)
    real = service.store.claim_tool_call
    service.store.claim_tool_call = lambda *a, **k: (_ for _ in ()).throw(  # type: ignore[method-assign]
        StateStoreError("state store claim_tool_call failed: ThrottlingException")
    )
    held = gate(service, event())
    assert (only(held).decision, only(held).failure) == ("hold", "store_unavailable")

    service.store.claim_tool_call = real  # type: ignore[method-assign]
    again = gate(service, event())
    assert only(again).decision == "allow" and again.fresh == ("c1",)


def test_tool_call_id_reused_with_other_arguments_is_blocked(call_state_table: str) -> None:
    service = dynamo_service(call_state_table)
    assert only(gate(service, event())).decision == "allow"
    reused = {**CANCEL, "args": {"order_id": "W200"}}  # same id c1, other order
    history = [*CONFIRMED_HISTORY[:-1], {"role": "customer", "text": "Yes, and W200 too."}]
    outcome = gate(service, event(reused, history=history))
    d = only(outcome)
    assert (d.decision, d.decided_by) == ("block", "duplicate_check")
    assert "other arguments" in d.reasons[0].evidence
    assert kinds(outcome) == ["id_conflict"]


def test_concurrent_delivery_of_one_call_is_held_while_the_first_decides(
    call_state_table: str,
) -> None:
    slow = FakeTier(delay=0.4)
    first_service = dynamo_service(call_state_table, [slow])
    second_service = dynamo_service(call_state_table, [FakeTier()])
    timeouts = TierTimeouts(tier1_s=2, tier2_s=2)
    results: dict[str, GateOutcome] = {}

    def deliver(name: str, service: GateService) -> None:
        results[name] = gate(service, event(), timeouts=timeouts)

    first = threading.Thread(target=deliver, args=("first", first_service))
    first.start()
    deadline = time.monotonic() + 5
    while slow.calls == 0 and time.monotonic() < deadline:  # the first is judging now
        time.sleep(0.01)
    deliver("second", second_service)
    first.join(timeout=10)

    assert only(results["first"]).decision == "allow"
    second = only(results["second"])
    assert (second.decision, second.failure) == ("hold", "in_progress")
    assert kinds(results["second"]) == ["in_progress"]
    # once decided, a later retry gets the stored allow
    assert only(gate(second_service, event())).decision == "allow"


def test_unreachable_table_holds_irreversible_calls(call_state_table: str) -> None:
    service = dynamo_service("no-such-table")
    outcome = gate(service, event(LOOKUP, CANCEL))
    lookup, cancel = outcome.result.decisions
    assert lookup.decision == "allow"
    assert (cancel.decision, cancel.failure) == ("hold", "store_unavailable")
    assert kinds(outcome) == ["store_unavailable"]
    assert "ResourceNotFoundException" in outcome.failures[0].detail


def test_gate_module_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import mirror.gate; "
        "heavy = [m for m in ('boto3', 'botocore', 'aws_lambda_powertools', 'asyncio') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
