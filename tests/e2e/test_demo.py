"""`make demo`: the offline replay of events/sample_call.json through the real handler."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mirror_dev import demo
from tests.conftest import REPO_ROOT
from tests.support.process import clean_python

pytestmark = pytest.mark.e2e


def test_sample_call_replays_with_one_intervention(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([]) == 0
    out = capsys.readouterr().out

    assert "events/sample_call.json" in out
    assert out.count("INTERVENE") == 1
    assert out.count("ALLOW") - out.count("GATE  ALLOW") == 5
    # GateTool judged both planned calls; GenerateCorrection answered the intervention.
    assert "GATE  ALLOW  check_delivery_area (not_gated)" in out
    assert "GATE  ALLOW  place_order (tier0)" in out
    assert out.count("CORRECTION (template)") == 1
    correction = out.index("CORRECTION (template)")
    assert out.index("INTERVENE") < correction < out.index("I said medium")
    assert "note for the agent's next turn" in out[correction:]
    assert "OVERRIDE 1" in out
    assert "BLOCK" not in out and "ERROR" not in out
    # the intervention is on the agent's read-back, before the caller's correction
    first_agent = out.index("One large pepperoni pizza")
    intervene = out.index("INTERVENE")
    assert first_agent < intervene < out.index("I said medium")
    assert "retraction" in out[intervene:] and "'large'" in out[intervene:]
    assert "µs" in out[intervene:]
    # the place_order call, its tool result and every caller line are on the timeline
    assert "place_order(" in out and "PZ-4471" in out and "No, that's all" in out
    # what DynamoDB holds: 4 caller lines + 6 agent turns (tool results are not sent)
    assert "agent 6, customer 4" in out
    assert "allow 5, intervene 1" in out
    # Powertools' JSON logs and EMF lines were kept off the timeline
    assert '"_aws"' not in out and '"level"' not in out


def test_the_sample_call_file_is_a_valid_recording() -> None:
    messages = demo.load_call(REPO_ROOT / demo.DEFAULT_CALL)
    assert 8 <= len(messages) <= 14
    assert {m.role for m in messages} == {"customer", "agent", "tool"}
    assert any(c.name == "place_order" for m in messages if m.role == "agent" for c in m.tool_calls)


def test_environment_is_restored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a profile that does not exist would break any boto3 client the demo built with it
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile-mirror-demo")
    monkeypatch.setenv("CALL_TABLE", "callers-table")
    monkeypatch.delenv("POWERTOOLS_LOG_LEVEL", raising=False)
    before = dict(os.environ)

    assert demo.main([]) == 0
    assert "INTERVENE" in capsys.readouterr().out
    assert dict(os.environ) == before


def test_custom_call_unconfirmed_order_is_blocked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call = [
        {"role": "customer", "text": "Two large pizzas, please."},
        {"role": "agent", "text": "Two large pizzas. Anything else?"},
        {"role": "customer", "text": "Let me think about it."},
        {
            "role": "agent",
            "text": "",
            "tool_calls": [
                {
                    "id": "c9",
                    "name": "place_order",
                    "args": {"items": ["pizza"], "quantity": 2},
                }
            ],
        },
    ]
    path = tmp_path / "call.json"
    path.write_text(json.dumps(call), encoding="utf-8")

    assert demo.main(["--call", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("BLOCK") - out.count("GATE  BLOCK") == 1 and "INTERVENE" not in out
    assert out.count("GATE  BLOCK") == 1 and "agent says:" in out
    assert "confirmation" in out and "blocked: c9" in out
    assert "allow 1, block 1" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"role": "customer", "text": "hi"}', "not a recorded call"),
        ('[{"role": "operator", "text": "hi"}]', "not a recorded call"),
        ('[{"role": "customer", "text": "hi"}]', "no agent turn"),
    ],
    ids=["missing", "not-json", "not-a-list", "bad-role", "no-agent"],
)
def test_bad_call_file_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "call.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert demo.main(["--call", str(path)]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and str(path.name) in captured.err
    assert captured.out == ""


def test_outside_a_checkout_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoError, match="needs a Mirror checkout.*functions/score_turn"):
        demo.find_checkout(tmp_path)


def test_table_comes_from_the_template() -> None:
    props = demo.table_properties(REPO_ROOT)
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["pk", "sk"]
    assert props["TimeToLiveSpecification"]["AttributeName"] == "expires_at"


def test_make_demo_entry_point_runs_offline_and_fast() -> None:
    """What `make demo` runs, in a clean process with no AWS settings of the caller."""
    start = time.perf_counter()
    result = clean_python(
        ["-m", "mirror_dev.demo"],
        strip=("AWS_", "POWERTOOLS_"),
        AWS_PROFILE="no-such-profile-mirror-demo",
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "INTERVENE" in result.stdout and "allow 5, intervene 1" in result.stdout
    assert result.stderr == ""
    assert elapsed < 10, f"make demo took {elapsed:.1f} s"
