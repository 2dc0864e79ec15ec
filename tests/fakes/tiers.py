"""A remote tier (Tier 1 or 2, as `mirror.judge` runs them) with a scripted outcome."""

from __future__ import annotations

import asyncio

from mirror.judge import Finding
from mirror.models import MirrorConfig, Turn


class FakeTier:
    """Not confident (None), a finding, slow, or broken; counts its runs."""

    def __init__(
        self,
        tier: str = "tier2",
        result: list[Finding] | None = None,
        delay: float = 0.0,
        error: Exception | None = None,
    ) -> None:
        self.tier, self.result, self.delay, self.error = tier, result, delay, error
        self.calls = 0

    async def judge(self, turn: Turn, config: MirrorConfig) -> list[Finding] | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.result
