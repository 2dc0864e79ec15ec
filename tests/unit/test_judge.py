"""The judge's decision rules: thresholds, per-check scores, cooldown, remote tier failures."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from mirror import config as config_module
from mirror.config import config_for_event
from mirror.judge import Finding, Judge, JudgeCache
from mirror.models import MirrorConfig, ScoreTurnEvent, TierTimeouts, ToolCall, Turn
from tests.fakes.tiers import FakeTier
from tests.support.judge import call, judge, turn

pytestmark = pytest.mark.unit

UNCONFIRMED = turn(("customer", "Cancel order #W1."), calls=[call("cancel_order", order_id="#W1")])
RUDE = turn(("customer", "hi"), agent_text="Delivery is free!")


def test_threshold_and_check_scores_decide() -> None:
    assert judge(UNCONFIRMED).decision == "block"
    assert judge(UNCONFIRMED, intervention_threshold=0.95).decision == "allow"
    v = judge(UNCONFIRMED, check_scores={"confirmation": 0.5})
    assert v.decision == "allow" and v.should_report  # advisory, still reported
    assert v.reasons[0].check == "confirmation" and v.reasons[0].score == 0.5


def test_verdict_names_check_tier_and_blocked_call() -> None:
    v = judge(UNCONFIRMED)
    assert v.blocked_tool_call_ids == ["c1"]
    assert v.decided_by == "tier0" and v.tiers_run == ["tier0"]
    assert v.reasons[0].tier == "tier0" and v.reasons[0].tool_call_id == "c1"
    assert v.latency_us["tier0"] > 0


def test_irreversible_names_are_configurable() -> None:
    assert judge(UNCONFIRMED, irreversible_tools=["place_order"]).decision == "allow"
    t = turn(
        ("customer", "hi"), calls=[{"id": "x", "name": "lookup", "args": {}, "irreversible": True}]
    )
    assert judge(t).decision == "block"


def test_a_config_copy_derives_its_own_pattern_and_fingerprint() -> None:
    base = MirrorConfig()
    order = ToolCall(id="c1", name="place_order", args={})
    assert base.is_irreversible(order) and base.fingerprint  # cached and memoized now
    copy = base.model_copy(update={"irreversible_tools": ["zap_*"]})
    assert copy.irreversible_pattern.match("zap_it") and not copy.irreversible_pattern.match(
        "place_order"
    )
    assert not copy.is_irreversible(order) and base.is_irreversible(order)
    assert copy.fingerprint != base.fingerprint
    assert copy.fingerprint == MirrorConfig(irreversible_tools=["zap_*"]).model_dump_json()


def _event(**overlay: object) -> ScoreTurnEvent:
    return ScoreTurnEvent.model_validate({"call_id": "c1", "agent_text": "Hi.", **overlay})


def test_an_event_overlay_is_built_once_per_base_config() -> None:
    base = MirrorConfig(policies=['FORBID "free"'])
    assert config_for_event(base, _event()) is base  # nothing overlaid
    first = config_for_event(base, _event(tenant_id="acme", policies=['FORBID "cheap"']))
    again = config_for_event(base, _event(tenant_id="acme", policies=['FORBID "cheap"']))
    assert again is first and first.policies == ['FORBID "cheap"'] and first.tenant_id == "acme"
    assert first.fingerprint is again.fingerprint  # computed once
    other = config_for_event(base, _event(tenant_id="acme", irreversible_tools=["zap_*"]))
    assert other is not first and other.policies == base.policies
    assert other.irreversible_tools == [*base.irreversible_tools, "zap_*"]  # added, not replaced
    # another base (a copy with other settings) keeps its own overlays
    copy = base.model_copy(update={"cooldown_s": 1.0})
    assert "event_overlays" not in copy.__dict__
    from_copy = config_for_event(copy, _event(tenant_id="acme", policies=['FORBID "cheap"']))
    assert from_copy is not first and from_copy.cooldown_s == 1.0


def test_an_overlay_that_does_not_validate_raises_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = MirrorConfig()
    bad = _event(policies=["REQUIRE"])  # a directive with nothing to require
    for _ in range(2):
        with pytest.raises(ValidationError):
            config_for_event(base, bad)
    assert base.event_overlays == {}
    monkeypatch.setattr(config_module, "OVERLAY_MEMO_SIZE", 2)
    built = [config_for_event(base, _event(tenant_id=f"t{i}")) for i in range(4)]
    assert len(base.event_overlays) == 2  # bounded: the rest are built on every call
    assert config_for_event(base, _event(tenant_id="t3")) is not built[3]
    assert config_for_event(base, _event(tenant_id="t3")).tenant_id == "t3"


def test_cooldown_suppresses_speech_only() -> None:
    j = Judge(MirrorConfig(policies=['FORBID "free"']))
    v = j.evaluate(RUDE, cooldown_active=True)
    assert v.decision == "allow" and v.cooldown_suppressed and v.buffer_text is None
    assert j.evaluate(RUDE).buffer_text == MirrorConfig().buffer_text
    both = Turn.model_validate({**UNCONFIRMED.model_dump(), "agent_text": "It is free!"})
    assert j.evaluate(both, cooldown_active=True).decision == "block"


CONFIRMED = turn(
    ("customer", "Cancel order #W1."),
    ("agent", "Cancel #W1, correct?"),
    ("customer", "Yes."),
    calls=[call("cancel_order", order_id="#W1")],
)
FAST = TierTimeouts(tier1_s=0.05, tier2_s=0.05)


def test_remote_tiers_run_only_when_tier0_is_silent() -> None:
    t1 = FakeTier("tier1", result=None)
    t2 = FakeTier(
        "tier2", result=[Finding("llm", "not_allowed_by_policy", 0.9, "x", None, "tier2")]
    )
    v = asyncio.run(
        Judge(MirrorConfig(), [t1, t2]).aevaluate(turn(("customer", "hi"), agent_text="hello"))
    )
    assert (v.decision, v.decided_by, v.tiers_run) == (
        "intervene",
        "tier2",
        ["tier0", "tier1", "tier2"],
    )
    skipped = FakeTier("tier1")
    asyncio.run(Judge(MirrorConfig(), [skipped]).aevaluate(UNCONFIRMED))
    assert skipped.calls == 0


@pytest.mark.parametrize("failure", [dict(delay=1.0), dict(error=RuntimeError("500"))])
def test_failed_tier_holds_irreversible_calls_and_fails_open_for_speech(failure: dict) -> None:
    cfg = MirrorConfig(timeouts=FAST)
    v = asyncio.run(Judge(cfg, [FakeTier("tier2", **failure)]).aevaluate(CONFIRMED))
    assert v.decision == "block" and v.held_tool_call_ids == ["c1"]
    assert v.failed_tiers == ["tier2"] and v.reasons[0].code == "tier_unavailable"
    speech = asyncio.run(
        Judge(cfg, [FakeTier("tier2", **failure)]).aevaluate(
            turn(("customer", "hi"), agent_text="hello")
        )
    )
    assert speech.decision == "allow" and speech.failed_tiers == ["tier2"]
    opened = asyncio.run(
        Judge(
            cfg.model_copy(update={"tool_gate_failure_mode": "allow"}),
            [FakeTier("tier2", **failure)],
        ).aevaluate(CONFIRMED)
    )
    assert opened.decision == "allow" and opened.should_report


GREETING = "Hi and welcome to Celestar Air. I'm Nova, how can I help?"
SCRIPTED = MirrorConfig(policies=[f"Step 1: greet the caller. Use: '{GREETING}'"])


def _reaches_remote(cfg: MirrorConfig, t: Turn) -> bool:
    tier = FakeTier("tier2")
    asyncio.run(Judge(cfg, [tier]).aevaluate(t))
    return tier.calls == 1


def test_routing_sends_every_turn_tier0_cannot_prove_clean() -> None:
    # Ordinary speech, silence and irreversible calls all reach the LLM tier.
    assert _reaches_remote(SCRIPTED, turn(("customer", "hi"), agent_text="Sure, one moment."))
    assert _reaches_remote(SCRIPTED, turn(("customer", "Can you help?"), agent_text=""))
    assert _reaches_remote(MirrorConfig(), CONFIRMED)
    # Words close to the script are not the script.
    assert _reaches_remote(SCRIPTED, turn(agent_text=GREETING + " Your code, please?"))


def test_routing_keeps_back_only_what_tier0_proves() -> None:
    # The operator's scripted line, said word for word (punctuation and case aside).
    assert not _reaches_remote(SCRIPTED, turn(agent_text=GREETING.upper().replace(",", "")))
    # Tier 0 already decided.
    assert not _reaches_remote(MirrorConfig(), UNCONFIRMED)
    # Reversible calls without words fail open: nothing to hold.
    reversible = turn(("customer", "Find my order."), calls=[call("get_order", order_id="#W1")])
    assert not _reaches_remote(MirrorConfig(), reversible)


def test_scripted_lines_need_a_quoted_sentence() -> None:
    from mirror.policy import compile_policies

    compiled = compile_policies(
        ["Offer the 'basic' fare first.", 'Say "Thanks for calling Acme, goodbye now" at the end.']
    )
    assert compiled.scripted == {"thanks for calling acme goodbye now"}
    assert not compiled.is_scripted("basic")
    assert compiled.is_scripted("Thanks for calling Acme — goodbye now!")


def test_judge_cache_builds_one_judge_per_config_and_stays_bounded() -> None:
    built: list[MirrorConfig] = []
    cache = JudgeCache(lambda cfg: built.append(cfg) or (), size=2)
    a, b, c = (MirrorConfig(tenant_id=t) for t in ("a", "b", "c"))
    assert cache.get(a) is cache.get(MirrorConfig(tenant_id="a"))  # same fingerprint
    assert cache.get(b).config is b and built == [a, b] and len(cache) == 2
    cache.get(c)  # full: starts over with c
    assert len(cache) == 1 and cache.get(a).config is a and built == [a, b, c, a]
