"""Audio for the TTS and μ-law tests: 16-bit little-endian PCM from sample values."""

from __future__ import annotations

import struct


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)
