"""The supervised agent cannot opt out of its supervision (issue 13, item 10).

Irreversibility is the operator's configuration: a request may ADD gated tools (a call's
`irreversible: true`, an event's `irreversible_tools`), never remove them (`irreversible: false`,
`irreversible_tools: []`). `retry_of` lifts the duplicate check only when a tool result for that
id shows the earlier call failed (`is_error: true`). Each adversarial case has its allow twin.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mirror.config import config_for_event
from mirror.gate import GateOutcome, GateService, GateToolEvent
from mirror.models import (
    AgentMessage,
    CallContext,
    CustomerMessage,
    MirrorConfig,
    ScoreTurnEvent,
    ToolCall,
    ToolMessage,
    Verdict,
)
from mirror.state import InMemoryStateStore, tool_fingerprint

pytestmark = pytest.mark.unit

CTX = CallContext(call_id="CA-1", tenant_id="acme")
CANCEL = {"id": "c1", "name": "cancel_order", "args": {"order_id": "W100"}}
UNCONFIRMED = [{"role": "customer", "text": "Please cancel order W100."}]
CONFIRMED = [
    {"role": "customer", "text": "Please cancel order W100, I don't need it any more."},
    {"role": "agent", "text": "Cancel order W100, correct?"},
    {"role": "customer", "text": "Yes, go ahead."},
]


def event(*calls: dict[str, Any], history: list[Any] = CONFIRMED, **extra: Any) -> GateToolEvent:
    customer = next((m["text"] for m in reversed(history) if m["role"] == "customer"), "")
    return GateToolEvent.model_validate(
        {
            "call_id": CTX.call_id,
            "tenant_id": CTX.tenant_id,
            "customer_text": customer,
            "history": history,
            "tool_calls": list(calls or [CANCEL]),
            **extra,
        }
    )


def gate(service: GateService, ev: GateToolEvent, **config: Any) -> GateOutcome:
    return service.gate(ev, config_for_event(MirrorConfig(**config), ev))


def only(outcome: GateOutcome) -> Any:
    (decision,) = outcome.result.decisions
    return decision


# --- irreversibility: the operator's list, which a request may extend only ------------------


def test_a_call_saying_irreversible_false_is_still_gated() -> None:
    ev = event({**CANCEL, "irreversible": False}, history=UNCONFIRMED)
    d = only(gate(GateService(InMemoryStateStore()), ev))
    assert (d.decision, d.irreversible) == ("block", True)
    assert d.reasons[0].code == "no_confirmation_yet"
    assert MirrorConfig().is_irreversible(ToolCall(id="x", name="cancel_order", irreversible=False))


def test_a_call_may_add_gating_with_irreversible_true() -> None:
    # the allow twin: a tool the operator did not list is gated when the call asks for it
    lookup = {"id": "l1", "name": "lookup_order", "args": {"order_id": "W100"}}
    service = GateService(InMemoryStateStore())
    assert only(gate(service, event(lookup, history=UNCONFIRMED))).decided_by == "not_gated"
    flagged = event({**lookup, "id": "l2", "irreversible": True}, history=UNCONFIRMED)
    d = only(gate(service, flagged))
    assert (d.decision, d.irreversible) == ("block", True)


def test_an_empty_irreversible_tools_list_does_not_turn_gating_off() -> None:
    ev = event(history=UNCONFIRMED, irreversible_tools=[])
    d = only(gate(GateService(InMemoryStateStore()), ev))
    assert (d.decision, d.irreversible) == ("block", True)
    # ScoreTurn reads its config the same way
    score = ScoreTurnEvent.model_validate(
        {"call_id": "CA-1", "tool_calls": [CANCEL], "irreversible_tools": []}
    )
    assert config_for_event(MirrorConfig(), score).is_irreversible(ToolCall(**CANCEL))


def test_an_event_list_adds_to_the_operators_list() -> None:
    base = MirrorConfig(irreversible_tools=["cancel_*"])
    ev = event(
        CANCEL, {"id": "z1", "name": "zap_account", "args": {}}, history=UNCONFIRMED,
        irreversible_tools=["zap_*"],
    )  # fmt: skip
    config = config_for_event(base, ev)
    assert config.irreversible_tools == ["cancel_*", "zap_*"]
    outcome = GateService(InMemoryStateStore()).gate(ev, config)
    assert [d.irreversible for d in outcome.result.decisions] == [True, True]
    # an event repeating the operator's names changes nothing, and is the same config object
    same = event(history=UNCONFIRMED, irreversible_tools=["cancel_*"])
    assert config_for_event(base, same).irreversible_tools == ["cancel_*"]
    assert config_for_event(base, same) is config_for_event(base, same)


def test_a_reversible_call_stays_ungated() -> None:
    # the allow twin of the above: nothing the operator did not list is gated by default
    lookup = {"id": "l1", "name": "get_order_details", "args": {"order_id": "W100"}}
    d = only(gate(GateService(InMemoryStateStore()), event(lookup, irreversible_tools=[])))
    assert (d.decision, d.decided_by, d.irreversible) == ("allow", "not_gated", False)


# --- retry_of: only with a failing tool result for that id ----------------------------------


def failed(call_id: str, *, is_error: bool = True) -> dict[str, Any]:
    return {
        "role": "tool",
        "name": "cancel_order",
        "tool_call_id": call_id,
        "is_error": is_error,
        "text": "error: upstream timeout" if is_error else "cancelled",
    }


def allowed_once() -> tuple[InMemoryStateStore, GateService]:
    store = InMemoryStateStore()
    service = GateService(store)
    assert only(gate(service, event())).decision == "allow"
    return store, service


def test_retry_of_without_evidence_is_a_duplicate() -> None:
    _, service = allowed_once()
    d = only(gate(service, event({**CANCEL, "id": "c2", "retry_of": "c1"})))
    assert (d.decision, d.decided_by) == ("block", "duplicate_check")
    assert "no tool result shows c1 failed" in d.reasons[0].evidence


@pytest.mark.parametrize(
    "results",
    [
        [failed("c1", is_error=False)],  # it succeeded
        [failed("c9")],  # another call failed
        [{"role": "tool", "name": "cancel_order", "text": "error: timeout"}],  # no id: no evidence
    ],
    ids=["succeeded", "other-id", "no-id"],
)
def test_retry_of_with_other_results_is_a_duplicate(results: list[dict[str, Any]]) -> None:
    _, service = allowed_once()
    ev = event({**CANCEL, "id": "c2", "retry_of": "c1"}, history=[], tool_results=results)
    d = only(gate(service, ev))
    assert (d.decision, d.decided_by) == ("block", "duplicate_check")


def test_retry_of_a_failed_call_is_allowed_from_the_events_results() -> None:
    store, service = allowed_once()
    # stored history: the conversation as ScoreTurn recorded it (the event has no `history`)
    now = time.time()
    verdict = Verdict(decision="allow", score=0.0)
    messages = [
        CustomerMessage(**m) if m["role"] == "customer" else AgentMessage(**m) for m in CONFIRMED
    ]
    assert store.record_turn(CTX, "t1", messages, verdict, now, 3600, 200)
    retry = event({**CANCEL, "id": "c2", "retry_of": "c1"}, history=[])
    ev = GateToolEvent.model_validate(
        {**retry.model_dump(exclude_none=True), "tool_results": [failed("c1")]}
    )
    d = only(gate(service, ev))
    assert (d.decision, d.decided_by) == ("allow", "tier0")
    holder = store.get_tool_call(CTX, tool_fingerprint("cancel_order", CANCEL["args"]), now)
    assert holder is not None and holder.tool_call_id == "c2"


def test_retry_of_a_failed_call_is_allowed_from_the_history() -> None:
    _, service = allowed_once()
    history = [*CONFIRMED[:2], failed("c1"), CONFIRMED[2]]
    d = only(gate(service, event({**CANCEL, "id": "c2", "retry_of": "c1"}, history=history)))
    assert (d.decision, d.decided_by) == ("allow", "tier0")


def test_a_tool_message_may_say_which_call_failed() -> None:
    msg = ToolMessage.model_validate(failed("c1"))
    assert (msg.tool_call_id, msg.is_error) == ("c1", True)
    plain = ToolMessage(role="tool", name="x", text="ok")
    assert (plain.tool_call_id, plain.is_error) == (None, False)
