"""The `mirror` command: eval output contracts, replay rows and plot, and exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mirror.cli import agent_turns, load_call, main
from tests.support.eval_cases import (
    HISTORY,
    ORDER,
    YES,
    cancel,
    gate_case,
    mixed_cases,
    turn_case,
    write_cases,
)

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REQUIRED_KEYS = {
    "block_recall",
    "false_block_rate",
    "intervene_precision",
    "intervene_recall",
    "by_reason",
    "latency_us",
    "decisions",
    "block_recall_by_code",
    "block_recall_excluding_policy",
    "false_intervention_rate",
    "tiers",
    "cases",
}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich wraps at 80 columns when not on a terminal; wide rows are easier to assert on."""
    monkeypatch.setenv("COLUMNS", "240")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert err.startswith("mirror: error: ")
    assert err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


# -- eval -------------------------------------------------------------------------------------


def test_eval_json_prints_one_line_with_every_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_cases(tmp_path / "mixed.jsonl", mixed_cases())
    code, out, err = run(["eval", str(path), "--json"], capsys)
    assert code == 0 and err == ""
    assert out.endswith("\n") and out.count("\n") == 1
    data = json.loads(out)
    assert REQUIRED_KEYS <= set(data)
    assert set(data["latency_us"]) == {"p50", "p99"}
    assert data["cases"] == 8
    assert data["tiers"] == ["tier0"]
    assert data["block_recall"] == pytest.approx(2 / 3)
    assert data["false_block_rate"] == 0.0
    assert all(set(d) == {"id", "decision", "expected"} for d in data["decisions"])
    assert data["decisions"][0] == {"id": "g-timing", "decision": "block", "expected": "block"}


def test_eval_json_uses_null_for_empty_denominators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_cases(tmp_path / "turns.jsonl", [turn_case("t", "allow", "Hello.")])
    code, out, _ = run(["eval", str(path), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["block_recall"] is None
    assert data["false_block_rate"] is None
    assert data["intervene_precision"] is None
    assert data["false_intervention_rate"] == 0.0


def test_eval_table_shows_cases_metrics_and_tiers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_cases(tmp_path / "mixed.jsonl", mixed_cases())
    code, out, _ = run(["eval", str(path)], capsys)
    assert code == 0
    for case_id in ("g-timing", "g-policy", "t-prose"):
        assert case_id in out
    assert "no_confirmation_yet" in out
    assert "block recall" in out and "(2/3)" in out
    assert "intervene precision" in out
    assert "tiers: tier0 (offline)" in out


def test_eval_threshold_flag_changes_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_cases(
        tmp_path / "c.jsonl", [gate_case("timing", "block", "no_confirmation_yet", confirmed=False)]
    )
    _, out, _ = run(["eval", str(path), "--json", "--threshold", "0.95"], capsys)
    assert json.loads(out)["decisions"][0]["decision"] == "allow"  # the 0.9 finding is advisory
    _, out, _ = run(["eval", str(path), "--json", "--threshold", "0.9"], capsys)
    assert json.loads(out)["decisions"][0]["decision"] == "block"


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ("missing.jsonl", "no such file")),
        ('{"id": \n', ("bad.jsonl:1", "malformed JSON")),
        ('{"id": "x"}\n', ("bad.jsonl:1", "invalid case")),
    ],
)
def test_eval_bad_case_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, needles: tuple[str]
) -> None:
    if content is None:
        path = tmp_path / "missing.jsonl"
    else:
        path = tmp_path / "bad.jsonl"
        path.write_text(content, encoding="utf-8")
    assert_usage_error(["eval", str(path), "--json"], capsys, *needles)


@pytest.mark.parametrize(
    ("value", "needle"), [("abc", "not a number"), ("1.5", "outside 0..1"), ("nan", "outside")]
)
def test_eval_bad_threshold_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, needle: str
) -> None:
    path = write_cases(tmp_path / "c.jsonl", [turn_case("t", "allow", "Hello.")])
    assert_usage_error(["eval", str(path), "--threshold", value], capsys, "threshold", needle)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [([], "required"), (["frobnicate"], "invalid choice"), (["eval"], "required")],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert_usage_error(argv, capsys, needle)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "eval" in out and "replay" in out


# -- replay -----------------------------------------------------------------------------------


def call_messages() -> list[dict[str, Any]]:
    """A short call: a lookup (tool only), a question, an empty agent message (skipped), a
    confirmed cancellation, and a FORBID-breaking promise: 4 agent turns."""
    return [
        *HISTORY,  # agent turns at 1 (lookup) and 3 (question)
        {"role": "agent", "text": ""},  # 4: nothing said or called
        {"role": "customer", "text": YES},
        {"role": "agent", "text": "", "tool_calls": [cancel()]},  # 6
        {"role": "tool", "name": "cancel_pending_order", "text": '{"status": "cancelled"}'},
        {"role": "agent", "text": "Done! Your refund is guaranteed within a day."},  # 8
    ]


def write_call(tmp_path: Path, messages: list[dict[str, Any]] | None = None) -> Path:
    path = tmp_path / "call.json"
    path.write_text(json.dumps(call_messages() if messages is None else messages), "utf-8")
    return path


def write_policies(tmp_path: Path) -> Path:
    path = tmp_path / "policies.txt"
    path.write_text('# operator rules\n\nFORBID "guaranteed"\nBe polite.\n', encoding="utf-8")
    return path


def table_rows(out: str) -> list[list[str]]:
    """Body rows of a rich table (lines starting with the vertical border)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in out.splitlines()
        if line.startswith("│")
    ]


def test_agent_turns_are_judged_against_what_came_before(tmp_path: Path) -> None:
    turns = agent_turns(load_call(write_call(tmp_path)))
    assert [i for i, _ in turns] == [1, 3, 6, 8]
    by_index = dict(turns)
    assert by_index[1].customer_text.startswith("Hi, please cancel")
    assert len(by_index[1].history) == 1 and by_index[1].tool_calls[0].name == "get_order_details"
    assert by_index[6].customer_text == YES and len(by_index[6].history) == 6
    assert by_index[8].agent_text.startswith("Done!") and len(by_index[8].history) == 8


def test_replay_prints_one_row_per_agent_turn_and_a_cell_per_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "replay",
        str(write_call(tmp_path)),
        "--policies",
        str(write_policies(tmp_path)),
        "--threshold-sweep",
        "0.5,0.95",
        "--irreversible",
        "cancel_pending_order",
    ]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "t=0.5" in out and "t=0.95" in out
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["1", "3", "6", "8"]
    assert all(len(r) == 2 + 2 for r in rows)
    assert "cancel_pending_order(" in rows[2][1]
    assert rows[2][2] == rows[2][3] == "allow"  # confirmed and grounded
    assert rows[3][2] == "intervene not_allowed_by_policy"  # FORBID scores 0.9
    assert rows[3][3] == "allow"  # ... below a 0.95 threshold
    assert "t=0.5 25%" in out and "t=0.95 0%" in out
    assert "tiers: tier0 (offline)" in out


def test_replay_defaults_to_the_config_threshold_and_reads_json_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies.json"
    policies.write_text(json.dumps(['FORBID "guaranteed"']), encoding="utf-8")
    messages = [*call_messages()[:5], {"role": "agent", "tool_calls": [cancel()]}]  # no yes
    code, out, _ = run(
        ["replay", str(write_call(tmp_path, messages)), "--policies", str(policies)], capsys
    )
    assert code == 0
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["1", "3", "5"]
    assert all(len(r) == 3 for r in rows)
    assert "t=0.7" in out
    assert rows[2][2] == "block no_confirmation_yet"  # default irreversible list has cancel_*


def test_replay_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "sweep.png"
    argv = [
        "replay",
        str(write_call(tmp_path)),
        "--policies",
        str(write_policies(tmp_path)),
        "--threshold-sweep",
        "0.5,0.6,0.7,0.8,0.95",
        "--plot",
        str(plot),
    ]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert plot.stat().st_size > 1000
    assert str(plot) in out


def test_replay_of_a_call_without_agent_turns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call = write_call(tmp_path, [{"role": "customer", "text": "Hello?"}])
    code, out, _ = run(["replay", str(call), "--policies", str(write_policies(tmp_path))], capsys)
    assert code == 0
    assert table_rows(out) == []
    assert "agent turns: 0 of 1 messages" in out


@pytest.mark.parametrize(
    ("call", "policies", "extra", "needles"),
    [
        ("missing", "ok", [], ("call", "no such file")),
        ("{not json", "ok", [], ("call", "malformed JSON")),
        ('{"role": "agent"}', "ok", [], ("call", "JSON list of messages")),
        ('[{"role": "robot", "text": "hi"}]', "ok", [], ("call", "invalid message 0", "robot")),
        ('[{"role": "customer"}]', "ok", [], ("invalid message", "text")),
        (
            json.dumps([{"role": "agent", "tool_calls": [cancel(), cancel()]}]),
            "ok",
            [],
            ("message 0", "unique"),
        ),
        ("ok", "missing", [], ("policies", "no such file")),
        ("ok", '{"a": 1}', [], ("policies", "list of strings")),
        ("ok", "[1, 2", [], ("policies", "malformed JSON")),
        ("ok", 'FORBID "x" WHEN', [], ("policies", "cannot read 'WHEN'")),
        ("ok", "ok", ["--threshold-sweep", "0.5,,0.7"], ("--threshold-sweep",)),
        ("ok", "ok", ["--threshold-sweep", ""], ("--threshold-sweep",)),
        ("ok", "ok", ["--threshold-sweep", "0.5,abc"], ("'abc'", "not a number")),
        ("ok", "ok", ["--threshold-sweep", "0.5,1.2"], ("'1.2'", "outside 0..1")),
        ("ok", "ok", ["--threshold-sweep", "-0.1"], ("outside 0..1",)),
        ("ok", "ok", ["--irreversible", "cancel_*,"], ("--irreversible", "empty")),
        ("ok", "ok", ["--plot", "{tmp}/no/such/dir/p.png"], ("--plot", "no such directory")),
        ("ok", "ok", ["--plot", "{tmp}"], ("--plot", "cannot write")),
    ],
)
def test_replay_bad_input_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    call: str,
    policies: str,
    extra: list[str],
    needles: tuple[str, ...],
) -> None:
    call_path = tmp_path / "call.json"
    if call == "ok":
        write_call(tmp_path)
    elif call != "missing":
        call_path.write_text(call, encoding="utf-8")
    if policies == "ok":
        policies_path = write_policies(tmp_path)
    else:
        suffix = ".txt" if policies.startswith("FORBID") else ".json"
        policies_path = tmp_path / f"rules{suffix}"
        if policies != "missing":
            policies_path.write_text(policies, encoding="utf-8")
    argv = ["replay", str(call_path), "--policies", str(policies_path)]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert_usage_error(argv, capsys, *needles)


def test_replay_requires_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(["replay", str(write_call(tmp_path))], capsys, "--policies")


def test_order_fixture_is_grounded() -> None:
    """The replay expectations above rely on the order id appearing in the caller's words."""
    assert ORDER in HISTORY[0]["text"]
