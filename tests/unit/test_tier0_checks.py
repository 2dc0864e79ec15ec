"""Each Tier 0 check on its own: what it catches, and what it must leave alone."""

from __future__ import annotations

import json

import pytest

from mirror.judge.checks.confirmation import is_confirmation
from mirror.models import Verdict
from tests.support.judge import call, checks, judge, turn

pytestmark = pytest.mark.unit

USER = json.dumps(
    {
        "user_id": "ana_5",
        "payment_methods": {
            "credit_card_111": {
                "source": "credit_card",
                "last_four": "1234",
                "id": "credit_card_111",
            },
            "gift_card_222": {"source": "gift_card", "id": "gift_card_222"},
        },
        "orders": ["#W1000001", "#W2000002"],
    }
)
ORDER = json.dumps(
    {
        "order_id": "#W1000001",
        "items": [
            {"name": "Desk Lamp", "item_id": "5550001", "price": 30},
            {"name": "Air Purifier", "item_id": "5550002", "price": 200},
            {"name": "Patio Umbrella", "item_id": "5550003", "price": 90},
        ],
    }
)


def _return(
    *,
    item_ids: list[str],
    order_id: str = "#W1000001",
    pm: str = "gift_card_222",
    confirm: str = "Yes, please go ahead.",
    read_back: str | None = None,
):
    read_back = read_back or (
        "To confirm: return the Desk Lamp and the Air Purifier from order #W1000001, "
        "refund to your gift card. Shall I proceed?"
    )
    return turn(
        ("customer", "I want to return my desk lamp and air purifier, refund to my gift card."),
        ("agent", [call("get_user_details", "l1", user_id="ana_5")]),
        ("tool", ("get_user_details", USER)),
        ("agent", [call("get_order_details", "l2", order_id="#W1000001")]),
        ("tool", ("get_order_details", ORDER)),
        ("agent", read_back),
        ("customer", confirm),
        calls=[call("return_items", order_id=order_id, item_ids=item_ids, payment_method_id=pm)],
    )


GOOD = ["5550001", "5550002"]


def test_confirmed_grounded_call_is_allowed() -> None:
    v = judge(_return(item_ids=GOOD))
    assert v.decision == "allow", v.reasons


@pytest.mark.parametrize(
    "answer, ok",
    [
        ("Yes, please go ahead.", True),
        ("That's right, do it.", True),
        ("Fine, just do it.", True),
        ("Yes, actually make it the other lamp.", False),
        ("No, wait.", False),
        ("Can you tell me the price first?", False),
    ],
)
def test_confirmation_needs_a_plain_yes(answer: str, ok: bool) -> None:
    assert is_confirmation(answer) is ok
    v = judge(_return(item_ids=GOOD, confirm=answer))
    assert (v.decision == "allow") is ok
    if not ok:
        assert v.reasons[0].code == "no_confirmation_yet"


def test_agent_speaking_after_the_yes_needs_a_new_yes() -> None:
    t = turn(
        ("customer", "Yes, cancel it."),
        ("agent", "Before I do: the fee is $20. Shall I still cancel order #W1?"),
        calls=[call("cancel_order", order_id="#W1")],
    )
    v = judge(t)
    assert v.decision == "block" and "confirmation" in checks(v)


def test_reversible_calls_are_not_gated() -> None:
    t = turn(("customer", "hi"), calls=[call("get_order_details", order_id="#W999")])
    assert judge(t).decision == "allow"


def test_ungrounded_id_blocks() -> None:
    v = judge(_return(item_ids=GOOD, order_id="#W7777777"))
    assert v.decision == "block"
    assert any(r.check == "grounding" and r.code == "ungrounded_value" for r in v.reasons)


def test_other_users_id_is_other_user() -> None:
    t = _return(item_ids=GOOD)
    bad = t.model_copy(
        update={
            "tool_calls": [
                t.tool_calls[0].model_copy(
                    update={"args": {**t.tool_calls[0].args, "user_id": "bob_9"}}
                )
            ]
        }
    )
    v = judge(bad)
    assert any(r.code == "other_user" for r in v.reasons)


def test_ungrounded_date_and_email() -> None:
    t = turn(
        ("customer", "Book me on May 24th, my email is jo@example.com."),
        ("agent", "Booking May 24 for jo@example.com. Confirm?"),
        ("customer", "Yes."),
        calls=[call("book_flight", date="2024-05-24", email="jo@example.com")],
    )
    assert judge(t).decision == "allow"
    wrong = t.model_copy(
        update={
            "tool_calls": [
                t.tool_calls[0].model_copy(
                    update={"args": {"date": "2024-05-25", "email": "joe@example.com"}}
                )
            ]
        }
    )
    v = judge(wrong)
    assert {r.evidence.split("=")[0] for r in v.reasons if r.check == "grounding"} == {
        "book_flight.date",
        "book_flight.email",
    }


def test_sibling_order_the_caller_did_not_name_is_wrong_object() -> None:
    v = judge(_return(item_ids=GOOD, order_id="#W2000002"))
    assert any(r.check == "object_identity" and r.code == "wrong_object" for r in v.reasons)


def test_extra_and_missing_items() -> None:
    extra = judge(_return(item_ids=[*GOOD, "5550003"]))
    assert any(r.code == "extra_item" for r in extra.reasons)
    missing = judge(_return(item_ids=["5550001"]))
    assert any(r.code == "missing_item" for r in missing.reasons)


def test_payment_method_the_caller_did_not_choose() -> None:
    v = judge(_return(item_ids=GOOD, pm="credit_card_111"))
    assert any(r.code == "wrong_payment_method" for r in v.reasons)


def test_amount_against_the_stated_count() -> None:
    t = turn(
        ("customer", "I need 2 checked bags on reservation ABC123."),
        ("agent", "Adding 2 checked bags to ABC123. Shall I go ahead?"),
        ("customer", "Yes."),
        calls=[
            call("update_baggages", reservation_id="ABC123", total_baggages=2, nonfree_baggages=0)
        ],
    )
    assert judge(t).decision == "allow"
    bad = t.model_copy(
        update={
            "tool_calls": [
                t.tool_calls[0].model_copy(
                    update={
                        "args": {
                            "reservation_id": "ABC123",
                            "total_baggages": 3,
                            "nonfree_baggages": 0,
                        }
                    }
                )
            ]
        }
    )
    v = judge(bad)
    assert any(r.check == "amount_consistency" for r in v.reasons)


def test_speech_count_mismatch_intervenes() -> None:
    t = turn(("customer", "Two large pizzas please."), agent_text="Great, three large pizzas!")
    v = judge(t)
    assert v.decision == "intervene" and "amount_consistency" in checks(v)
    fine = turn(("customer", "Two large pizzas please."), agent_text="Great, two large pizzas!")
    assert judge(fine).decision == "allow"


def test_agent_reading_back_a_retracted_value_intervenes() -> None:
    t = turn(("customer", "Make it blue, no wait, red."), agent_text="One blue scarf, coming up.")
    assert "retraction" in checks(judge(t))
    assert (
        judge(
            turn(
                ("customer", "Make it blue, no wait, red."), agent_text="One red scarf, coming up."
            )
        ).decision
        == "allow"
    )


def test_an_item_refused_after_a_marker_is_wrong_even_beside_the_replacement() -> None:
    said = ("customer", "A large pepperoni, actually no pepperoni, make it a cheese pizza.")
    read_back = ("agent", "One large cheese pizza. Shall I place the order?")

    def order(*items: str) -> Verdict:
        calls = [call("place_order", items=list(items), size="large")]
        return judge(turn(said, read_back, ("customer", "Yes, please."), calls=calls))

    kept = order("pepperoni pizza", "cheese pizza")  # the replacement is there too
    assert kept.decision == "block" and "retraction" in checks(kept)
    assert order("cheese pizza").decision == "allow"
    assert order("cheese pizza, no pepperoni").decision == "allow"  # negated in the args
    spoken = judge(turn(said, agent_text="One large pepperoni and cheese pizza, coming up."))
    assert spoken.decision == "intervene" and "retraction" in checks(spoken)
    fine = judge(turn(said, agent_text="One large cheese pizza, no pepperoni, coming up."))
    assert "retraction" not in checks(fine)


CATALOG = json.dumps(
    {
        "name": "Desk Lamp",
        "variants": {
            "7000001": {"item_id": "7000001", "options": {"color": "black", "brightness": "low"}},
            "7000002": {"item_id": "7000002", "options": {"color": "black", "brightness": "high"}},
            "7000003": {"item_id": "7000003", "options": {"color": "white", "brightness": "high"}},
        },
    }
)
LAMP_ORDER = json.dumps(
    {
        "order_id": "#W3",
        "items": [
            {
                "name": "Desk Lamp",
                "item_id": "7000001",
                "options": {"color": "black", "brightness": "low"},
            }
        ],
    }
)


def _swap(
    new_item: str,
    read_back: str = "Swap your lamp for the black one with high brightness. Shall I proceed?",
):
    return turn(
        ("customer", "I want a brighter desk lamp on order W3."),
        ("agent", [call("get_order_details", "l1", order_id="#W3")]),
        ("tool", ("get_order_details", LAMP_ORDER)),
        ("agent", [call("get_product_details", "l2", product_id="p1")]),
        ("tool", ("get_product_details", CATALOG)),
        ("agent", read_back),
        ("customer", "Yes, go ahead."),
        calls=[call("modify_items", order_id="#W3", item_ids=["7000001"], new_item_ids=[new_item])],
    )


def test_new_variant_must_match_the_read_back_options() -> None:
    assert judge(_swap("7000002")).decision == "allow"
    v = judge(_swap("7000003"))  # white, though the agent read back black
    assert any(r.check == "variant_options" and r.code == "wrong_variant" for r in v.reasons)
    # the replaced lamp's own options ("low") are no evidence against the new one
    from_to = "Change the low brightness lamp to high brightness, still black. Proceed?"
    assert judge(_swap("7000002", from_to)).decision == "allow"
