"""The Mirror Judge. `Judge(config).evaluate(turn)` runs Tier 0; `aevaluate` adds remote tiers."""

from __future__ import annotations

from mirror.judge.base import Finding
from mirror.judge.judge import Judge, JudgeCache, RemoteTier

__all__ = ["Finding", "Judge", "JudgeCache", "RemoteTier"]
