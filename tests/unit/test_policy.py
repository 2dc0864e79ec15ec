from __future__ import annotations

import pytest

from mirror.models import MirrorConfig
from mirror.policy import PolicyError, compile_policies, parse_directive
from tests.support.judge import judge, turn

pytestmark = pytest.mark.unit


def test_directive_grammar() -> None:
    r = parse_directive(
        'REQUIRE: "5 to 7 business days" or "a week" WHEN caller "refund" SCORE 0.6'
    )
    assert (r.kind, r.phrases, r.trigger_speaker, r.triggers, r.score) == (
        "require",
        ("5 to 7 business days", "a week"),
        "customer",
        ("refund",),
        0.6,
    )
    f = parse_directive('forbid "free", "guaranteed"')
    assert (f.kind, f.phrases, f.trigger_speaker) == ("forbid", ("free", "guaranteed"), None)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("FORBID free", "quoted"),
        ('REQUIRE "x"', "WHEN"),
        ('FORBID "x" WHEN customer', "trigger"),
        ('FORBID "x" trailing junk', "cannot read"),
        ('FORBID "  "', "empty"),
    ],
)
def test_bad_directives_name_the_problem(bad: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        compile_policies(["prose is fine", bad])
    with pytest.raises(ValueError, match=r"policies\[1\]"):
        compile_policies(["prose is fine", bad])


def test_config_rejects_bad_directives_at_load() -> None:
    with pytest.raises(ValueError, match="REQUIRE needs"):
        MirrorConfig(policies=['REQUIRE "x"'])


def test_negated_forbidden_phrase_is_not_a_violation() -> None:
    v = judge(
        turn(("customer", "Is delivery free?"), agent_text="Delivery is not free, sorry."),
        policies=['FORBID "free"'],
    )
    assert v.decision == "allow"


def test_required_phrase_scoped_to_agent_trigger() -> None:
    policies = ['REQUIRE "recorded line" WHEN agent "this call"']
    assert (
        judge(
            turn(("customer", "hi"), agent_text="Thanks for calling."), policies=policies
        ).decision
        == "allow"
    )
    assert (
        judge(
            turn(("customer", "hi"), agent_text="This call may be monitored."), policies=policies
        ).decision
        == "intervene"
    )
    assert (
        judge(
            turn(("customer", "hi"), agent_text="This call is on a recorded line."),
            policies=policies,
        ).decision
        == "allow"
    )
