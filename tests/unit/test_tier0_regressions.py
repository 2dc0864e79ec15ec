"""Regressions carried over from the earlier plivo-mirror packages (issue 2's list)."""

from __future__ import annotations

import pytest

from mirror.judge.checks.retraction import active_retractions
from mirror.models import MirrorConfig
from mirror.policy import compile_policies
from mirror.prompt import build_judging_prompt
from tests.support.judge import call, checks, judge, turn

pytestmark = pytest.mark.unit


def test_retracted_size_keeps_the_item() -> None:
    t = turn(
        ("customer", "Large pepperoni, actually make it medium."),
        ("agent", "One medium pepperoni pizza. Shall I place the order?"),
        ("customer", "Yes please."),
        calls=[call("place_order", items=["pepperoni pizza"], size="medium")],
    )
    v = judge(t)
    assert v.decision == "allow", v.reasons
    # ... and the retraction is real: the large size would be caught.
    bad = turn(
        *[(m.role, m.text) for m in t.history],
        calls=[call("place_order", items=["pepperoni pizza"], size="large")],
    )
    assert judge(bad).decision == "block"
    assert "retraction" in checks(judge(bad))


def test_card_digits_are_not_a_quantity() -> None:
    t = turn(
        ("customer", "A pepperoni pizza please, my card ends in 42."),
        ("agent", "One pepperoni pizza on the card ending 42. Shall I order it?"),
        ("customer", "Yes."),
        calls=[call("place_order", items=["pepperoni pizza"], quantity=1)],
    )
    v = judge(t)
    assert v.decision == "allow", v.reasons
    # the quantity check is live: the caller's "two pizzas" against quantity 3 trips it
    t2 = turn(
        ("customer", "Two pepperoni pizzas please."),
        ("agent", "Two pepperoni pizzas. Shall I order them?"),
        ("customer", "Yes."),
        calls=[call("place_order", items=["pepperoni pizza"], quantity=3)],
    )
    assert "amount_consistency" in checks(judge(t2))


def test_refund_already_received_trips_no_refund_rule() -> None:
    policies = [
        'REQUIRE "5 to 7 business days" WHEN customer "refund"',
        'FORBID "refund" WHEN customer "refund"',
    ]
    t = turn(("customer", "I already got my refund, thanks."), agent_text="Glad to hear it!")
    assert judge(t, policies=policies).decision == "allow"
    asked = turn(("customer", "I want a refund."), agent_text="Sure, I can help with that.")
    assert "operator_rule" in checks(judge(asked, policies=policies[:1]))


def test_waiter_is_not_a_correction_marker() -> None:
    assert active_retractions(["the waiter was rude, so i want a large pizza"]) == []
    assert active_retractions(["a large pizza, wait, a medium one"])


def test_forbidden_free_does_not_match_freedom() -> None:
    policies = ['FORBID "free"']
    assert (
        judge(turn(("customer", "hi"), agent_text="Enjoy the freedom!"), policies=policies).decision
        == "allow"
    )
    assert (
        judge(turn(("customer", "hi"), agent_text="Delivery is free!"), policies=policies).decision
        == "intervene"
    )


def test_braces_in_policy_neither_crash_nor_break_prompt() -> None:
    policies = ["Never say {customer_text} or {} or {0} or {unknown}", 'FORBID "{free}"']
    config = MirrorConfig(policies=policies)
    compiled = compile_policies(policies)
    assert len(compiled.rules) == 1 and len(compiled.prose) == 1
    t = turn(("customer", "my text"), agent_text="agent says {braces}")
    prompt = build_judging_prompt(config, t)
    assert "Never say {customer_text} or {} or {0} or {unknown}" in prompt.user
    assert "agent says {braces}" in prompt.user
    assert judge(t, policies=policies).decision == "allow"
