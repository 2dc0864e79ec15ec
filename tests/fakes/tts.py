"""A text-to-speech engine for the bridge, deterministic and instant unless told."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class FakeTTS:
    """Deterministic "speech": one byte value per text, 8 bytes per character (1 ms each)."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0

    async def synthesize(self, text: str, voice: str) -> bytes:
        self.calls.append((text, voice))
        await asyncio.sleep(self.delay_s)
        return bytes([len(text) % 200 + 1]) * (8 * len(text))
