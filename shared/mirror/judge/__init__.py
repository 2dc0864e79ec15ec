"""The Mirror Judge. `Judge(config).evaluate(turn)` runs Tier 0; `aevaluate` adds remote tiers."""

from __future__ import annotations

from mirror.judge.base import Finding
from mirror.judge.judge import MAX_REASONS_PER_CHECK, Judge, JudgeCache, RemoteTier

__all__ = ["MAX_REASONS_PER_CHECK", "Finding", "Judge", "JudgeCache", "RemoteTier"]
