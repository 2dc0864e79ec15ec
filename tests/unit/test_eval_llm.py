"""`mirror eval` with a judge configured: the LLM tier gets every `not_allowed_by_policy` gate
case Tier 0 leaves alone, and the judge's answer decides it. The judge is OpenAI faked at the
HTTP layer (strict respx); the cases are the dev set's policy gate cases (tests/data/README.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from mirror.cli import main
from mirror.evaluation import load_cases
from tests.fakes.openai_http import OPENAI_URL, chat_completion, strict_http

pytestmark = pytest.mark.unit

CASES = Path(__file__).resolve().parents[1] / "data" / "policy_gate_cases.jsonl"


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    monkeypatch.setenv("MIRROR_LLM_MODEL", "gpt-4o-mini")


class FakeJudge:
    """Answers every judging request the same way; blocks the planned calls it was shown."""

    def __init__(self, violation: bool) -> None:
        self.violation = violation
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        ids = re.findall(r'\\?"id\\?": \\?"([^"\\]+)', user)
        answer = (
            {
                "violation": True,
                "score": 0.93,
                "reason_code": "not_allowed_by_policy",
                "evidence": "the policy forbids this action for this reservation",
                "blocked_tool_call_ids": ids[:1],
            }
            if self.violation
            else {
                "violation": False,
                "score": 0.05,
                "reason_code": "clean",
                "evidence": "within policy",
                "blocked_tool_call_ids": [],
            }
        )
        return httpx.Response(200, json=chat_completion(json.dumps(answer)))


def _eval(capsys: pytest.CaptureFixture[str], fake: FakeJudge, *extra: str) -> dict[str, Any]:
    with strict_http() as http:
        http.post(OPENAI_URL).mock(side_effect=fake)
        assert main(["eval", str(CASES), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_policy_case_reaches_the_llm_and_its_answer_decides(
    llm_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = load_cases([CASES])
    assert len(cases) == 38
    assert {c.expect.reason_code for c in cases} == {"not_allowed_by_policy"}

    offline = _eval(capsys, FakeJudge(violation=True), "--tier0-only")
    caught_by_tier0 = {d["id"] for d in offline["decisions"] if d["decision"] == "block"}
    assert offline["tiers"] == ["tier0"] and len(caught_by_tier0) < len(cases)

    blocking = FakeJudge(violation=True)
    report = _eval(capsys, blocking)
    assert report["tiers"] == ["tier0", "tier2"]
    # Every case Tier 0 left alone went to the judge, once, with its policies in the prompt.
    assert len(blocking.requests) == len(cases) - len(caught_by_tier0)
    policies = {c.policies[-1] for c in cases}
    for body in blocking.requests:
        system, user = (m["content"] for m in body["messages"])
        assert any(p in user for p in policies) and not any(p in system for p in policies)
    assert report["block_recall"] == 1.0
    assert all(d["decision"] == "block" for d in report["decisions"])

    # The same cases with a judge that sees nothing wrong: its answer decides them all.
    clean = FakeJudge(violation=False)
    report = _eval(capsys, clean)
    assert len(clean.requests) == len(cases) - len(caught_by_tier0)
    allowed = {d["id"] for d in report["decisions"] if d["decision"] == "allow"}
    assert allowed == {c.id for c in cases} - caught_by_tier0


def test_eval_without_an_llm_stays_offline(capsys: pytest.CaptureFixture[str]) -> None:
    with strict_http():  # any request would fail the test
        assert main(["eval", str(CASES), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tiers"] == ["tier0"]
