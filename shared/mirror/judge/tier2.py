"""Tier 2: an LLM judge over the judging prompt (`mirror.prompt`), through any `LLMClient`.

The answer is mapped to findings conservatively. A clean answer decides "allow"; a violation
becomes a finding per named tool call (ids not in the turn are never trusted) and a speech
finding when no irreversible call is named. An answer that contradicts itself, or names only
calls that do not exist, raises `LLMBadOutput`: the Judge's failure rule then holds the turn's
irreversible calls instead of letting a garbled answer allow them.
"""

from __future__ import annotations

from mirror.judge.base import Finding
from mirror.llm.base import LLMBadOutput, LLMClient
from mirror.models import MirrorConfig, Tier, Turn
from mirror.prompt import JudgeAnswer, build_judging_prompt

CHECK = "tier2_llm"


class LLMJudgeTier:
    tier: Tier = "tier2"

    def __init__(self, client: LLMClient) -> None:
        self.client = client

    async def judge(self, turn: Turn, config: MirrorConfig) -> list[Finding] | None:
        prompt = build_judging_prompt(config, turn)
        answer = await self.client.complete_json(
            system=prompt.system,
            user=prompt.user,
            schema=JudgeAnswer,
            timeout_s=config.timeouts.tier2_s,
        )
        return findings_from_answer(answer, turn, config, self.client.name)


def findings_from_answer(
    answer: JudgeAnswer, turn: Turn, config: MirrorConfig, source: str = "llm"
) -> list[Finding]:
    if not answer.violation:
        if answer.blocked_tool_call_ids:
            raise LLMBadOutput(f"{source}: no violation, yet it blocks tool calls")
        return []
    if answer.reason_code == "clean":
        raise LLMBadOutput(f"{source}: a violation with reason_code clean")
    calls = {c.id: c for c in turn.tool_calls}
    named = list(dict.fromkeys(answer.blocked_tool_call_ids))
    known = [i for i in named if i in calls]
    if named and not known:
        raise LLMBadOutput(f"{source}: blocks only tool call ids that are not in the turn")
    evidence = answer.evidence or f"{source}: {answer.reason_code}"
    findings = [
        Finding(
            CHECK,
            answer.reason_code,
            answer.score,
            f"{calls[i].name}: {evidence}",
            i,
            "tier2",
        )
        for i in known
    ]
    if not any(config.is_irreversible(calls[i]) for i in known):
        # Only the speech (or a call that cannot be blocked) is wrong: correct the agent.
        findings.append(Finding(CHECK, answer.reason_code, answer.score, evidence, None, "tier2"))
    return findings
