"""Eval-case loading and scoring, on hand-written cases whose verdicts are known by construction
(tests/support/eval_cases.py, which names the Tier 0 facts they rely on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mirror.evaluation as evaluation
from mirror.evaluation import Case, CaseError, load_cases, percentile, run_eval
from mirror.models import MirrorConfig, Turn
from tests.support.eval_cases import (
    FORBID,
    YES,
    gate_case,
    mixed_cases,
    turn_case,
    write_cases,
)

pytestmark = pytest.mark.unit

# -- percentile -------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 5.0
    assert percentile(values, 99) == 10.0
    assert percentile(values, 90) == 9.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.5], 99) == 7.5


def test_percentile_of_nothing_is_none_and_range_is_checked() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# -- loading ----------------------------------------------------------------------------------


def test_load_cases_reads_every_file_in_order_and_skips_blank_lines(tmp_path: Path) -> None:
    a = write_cases(tmp_path / "a.jsonl", [gate_case("a1", "allow", "clean")])
    b = tmp_path / "b.jsonl"
    b.write_text("\n" + json.dumps(turn_case("b1", "allow", "Hello.")) + "\n\n", encoding="utf-8")
    cases = load_cases([a, str(b)])
    assert [c.id for c in cases] == ["a1", "b1"]
    assert cases[0].domain == "retail"
    assert cases[0].expect.decision == "allow"
    assert cases[0].irreversible_tools == ("cancel_pending_order",)
    assert cases[0].turn.tool_calls[0].name == "cancel_pending_order"
    assert cases[1].policies == (FORBID, "Always apologise for delays.")


def test_turn_holds_only_the_input_fields(tmp_path: Path) -> None:
    case = load_cases([write_cases(tmp_path / "c.jsonl", [gate_case("x", "allow", "clean")])])[0]
    assert isinstance(case.turn, Turn)
    assert set(case.turn.model_dump()) == {"customer_text", "agent_text", "tool_calls", "history"}
    assert not hasattr(case, "meta")
    assert not hasattr(case, "source")


def test_judge_never_sees_label_meta_or_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Junk in `expect`/`meta`/`source`/`split`/`id` that would flip the verdict if read."""
    leak = "LEAK-SENTINEL"
    junk = {
        "customer_text": YES,
        "history": [{"role": "customer", "text": YES}],
        "agent_text": f"guaranteed {leak}",
        "policies": [f'FORBID "{leak}"'],
    }
    raw = gate_case(f"id-{leak}", "block", "no_confirmation_yet", confirmed=False)
    raw.update(meta=junk, source=leak, split=leak)
    raw["expect"]["alt_reason_codes"] = ["clean"]
    seen: list[str] = []
    real_judge = evaluation.Judge

    class SpyJudge(real_judge):  # type: ignore[misc, valid-type]
        def __init__(self, config: MirrorConfig, remote_tiers: Any = ()) -> None:
            seen.append(config.model_dump_json())
            super().__init__(config, remote_tiers)

        def evaluate(self, turn: Turn, **kwargs: Any) -> Any:
            seen.append(turn.model_dump_json())
            return super().evaluate(turn, **kwargs)

    monkeypatch.setattr(evaluation, "Judge", SpyJudge)
    report = run_eval(load_cases([write_cases(tmp_path / "c.jsonl", [raw])]))
    assert len(seen) == 2
    assert all(leak not in s and "alt_reason_codes" not in s for s in seen)
    result = report.results[0]
    assert result.decision == "block"  # the caller's "yes" in meta was not read
    assert result.codes == ("no_confirmation_yet",)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"id": "x", ', "malformed JSON"),
        ("[1, 2]", "JSON object"),
        (
            json.dumps({k: v for k, v in turn_case("x", "allow", "Hi.").items() if k != "expect"}),
            "expect",
        ),
        (json.dumps(turn_case("x", "allow", "Hi.", tool_call=[])), "tool_call"),
        (json.dumps(turn_case("x", "maybe", "Hi.")), "expect.decision"),
        (json.dumps(turn_case("x", "allow", "Hi.", policies=['FORBID "x" WHEN'])), "policies"),
        (
            json.dumps(turn_case("x", "allow", "Hi.", history=[{"role": "robot", "text": "?"}])),
            "history",
        ),
    ],
)
def test_load_cases_names_file_and_line_of_a_bad_case(
    tmp_path: Path, line: str, needle: str
) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(turn_case("ok", "allow", "Hi.")) + "\n" + line + "\n", "utf-8")
    with pytest.raises(CaseError) as err:
        load_cases([path])
    assert str(err.value).startswith(f"{path}:2: ")
    assert needle in str(err.value)


def test_load_cases_rejects_missing_file_duplicates_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="nope.jsonl: no such file"):
        load_cases([tmp_path / "nope.jsonl"])
    dup = write_cases(tmp_path / "dup.jsonl", [turn_case("d", "allow", "Hi.")] * 2)
    with pytest.raises(CaseError, match=r"dup.jsonl:2: duplicate case id 'd'"):
        load_cases([dup])
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "caf\xe9"}\n')
    with pytest.raises(CaseError, match=r"latin.jsonl:1: not valid UTF-8"):
        load_cases([latin])


# -- scoring ----------------------------------------------------------------------------------


def test_metrics_on_a_set_with_known_answers(tmp_path: Path) -> None:
    cases = load_cases([write_cases(tmp_path / "mixed.jsonl", mixed_cases())])
    report = run_eval(cases, MirrorConfig())
    got = {r.case.id: (r.decision, r.codes) for r in report.results}
    assert got == {
        "g-timing": ("block", ("no_confirmation_yet",)),
        "g-allow": ("allow", ()),
        "g-unseen": ("block", ("ungrounded_value",)),
        "g-policy": ("allow", ()),
        "t-forbid": ("intervene", ("not_allowed_by_policy",)),
        "t-clean": ("allow", ()),
        "t-false": ("intervene", ("not_allowed_by_policy",)),
        "t-prose": ("allow", ()),
    }
    d = report.to_dict()
    assert d["cases"] == 8
    assert d["tiers"] == ["tier0"]
    assert d["block_recall"] == pytest.approx(2 / 3)
    assert d["block_recall_by_code"] == {
        "no_confirmation_yet": 1.0,
        "not_allowed_by_policy": 0.0,
        "ungrounded_value": 1.0,
    }
    assert d["block_recall_excluding_policy"] == 1.0
    assert d["false_block_rate"] == 0.0
    assert d["intervene_precision"] == 0.5
    assert d["intervene_recall"] == 0.5
    assert d["false_intervention_rate"] == 0.5
    assert d["by_reason"] == {
        "not_allowed_by_policy": 2,
        "no_confirmation_yet": 1,
        "ungrounded_value": 1,
    }
    p50, p99 = d["latency_us"]["p50"], d["latency_us"]["p99"]
    assert p50 is not None and p99 is not None and 0 < p50 <= p99
    assert d["decisions"][0] == {"id": "g-timing", "decision": "block", "expected": "block"}
    expected = "block allow block block intervene allow allow intervene".split()
    assert [x["expected"] for x in d["decisions"]] == expected
    assert report.block_recall.hits == 2 and report.block_recall.total == 3
    json.dumps(d)  # JSON-ready


def test_a_gate_that_only_intervenes_counts_as_block(tmp_path: Path) -> None:
    """A confirmed, grounded call whose words break a FORBID rule: the judge intervenes, and
    on a gate case any non-allow is a block (here a false block)."""
    raw = gate_case("g", "allow", "clean", agent_text="Cancelled, guaranteed.", policies=[FORBID])
    report = run_eval(load_cases([write_cases(tmp_path / "g.jsonl", [raw])]))
    result = report.results[0]
    assert result.verdict.decision == "intervene"
    assert result.decision == "block"
    assert report.false_block_rate.value == 1.0
    assert report.intervene_precision.value is None  # no turn case was flagged


def test_empty_denominators_are_null_not_zero(tmp_path: Path) -> None:
    turns_only = load_cases([write_cases(tmp_path / "t.jsonl", mixed_cases()[4:])])
    d = run_eval(turns_only).to_dict()
    assert d["block_recall"] is None
    assert d["block_recall_by_code"] == {}
    assert d["block_recall_excluding_policy"] is None
    assert d["false_block_rate"] is None
    assert d["intervene_precision"] == 0.5

    nothing = run_eval([]).to_dict()
    for key in (
        "block_recall",
        "block_recall_excluding_policy",
        "false_block_rate",
        "intervene_precision",
        "intervene_recall",
        "false_intervention_rate",
    ):
        assert nothing[key] is None, key
    assert nothing["latency_us"] == {"p50": None, "p99": None}
    assert nothing["cases"] == 0 and nothing["decisions"] == [] and nothing["tiers"] == []
    assert '"block_recall": null' in json.dumps(nothing)


def test_policy_only_blocks_give_null_recall_excluding_policy(tmp_path: Path) -> None:
    cases = load_cases(
        [write_cases(tmp_path / "p.jsonl", [gate_case("p", "block", "not_allowed_by_policy")])]
    )
    d = run_eval(cases).to_dict()
    assert d["block_recall"] == 0.0
    assert d["block_recall_excluding_policy"] is None
    assert d["intervene_recall"] is None


def test_base_config_threshold_applies_and_case_fields_override(tmp_path: Path) -> None:
    raws = [
        gate_case("timing", "block", "no_confirmation_yet", confirmed=False),  # score 0.9
        gate_case("unseen", "block", "ungrounded_value", order_id="#W7654321"),  # score 0.95
    ]
    cases = load_cases([write_cases(tmp_path / "c.jsonl", raws)])
    base = MirrorConfig(intervention_threshold=0.93, policies=["ignored"], cooldown_s=3)
    config = cases[0].config(base)
    assert isinstance(cases[0], Case)
    assert config.intervention_threshold == 0.93 and config.cooldown_s == 3
    assert config.policies == [] and config.irreversible_tools == ["cancel_pending_order"]
    decisions = [r.decision for r in run_eval(cases, base).results]
    assert decisions == ["allow", "block"]
