"""Tier 0: every check, every turn, in microseconds."""

from __future__ import annotations

from mirror.judge.base import CheckInput, Finding
from mirror.judge.checks import TIER0_CHECKS
from mirror.judge.dialogue import Dialogue
from mirror.models import MirrorConfig, Turn
from mirror.policy import CompiledPolicies


def run_tier0(turn: Turn, config: MirrorConfig, policies: CompiledPolicies) -> list[Finding]:
    irreversible = [c for c in turn.tool_calls if config.is_irreversible(c)]
    inp = CheckInput(turn, Dialogue(turn), config, policies, irreversible)
    findings: list[Finding] = []
    for check in TIER0_CHECKS:
        findings.extend(check.run(inp))
    return findings
