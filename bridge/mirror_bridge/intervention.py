"""Checkpoints, the playout estimate and intervention identities (protocol notes §2.4, §5.3).

Rules this module holds:
- Every checkpoint name is unique per call and intervention (`mirror-<call>-<n>-<purpose>`) and
  never reused, so a late `playedStream` for an old name cannot resolve a new wait.
- A `playedStream` resolves only the wait with exactly its name; unknown, late or duplicate
  names are counted and dropped.
- When a `clearAudio` goes out, every pending wait fails at once with `cleared` (Plivo drops
  checkpoints queued before a clear and never acks them). A stop or hang-up fails them with
  `ended`. Every wait also has a watchdog: the estimated end of the queued audio plus a margin;
  a watchdog firing is a counted anomaly (`timeout`), not a success.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mirror.correction import CorrectionResult
    from mirror.models import Verdict

logger = logging.getLogger(__name__)

WaitOutcome = Literal["played", "timeout", "cleared", "ended"]


class CheckpointCancelled(Exception):
    """A wait that can never be acknowledged: the queue was cleared or the stream ended."""

    def __init__(self, reason: Literal["cleared", "ended"]) -> None:
        super().__init__(reason)
        self.reason: Literal["cleared", "ended"] = reason


class Checkpoints:
    """Pending checkpoint waits of one stream, by exact name."""

    def __init__(self, stream_id: str | None = None) -> None:
        self.stream_id = stream_id
        self._pending: dict[str, asyncio.Future[float]] = {}
        self._used: set[str] = set()
        self.stale = 0
        """playedStream events that matched no pending wait (late, duplicate, foreign)."""

    def expect(self, name: str) -> asyncio.Future[float]:
        """Register a wait before the checkpoint is sent (the ack may come back at once)."""
        if name in self._used:
            raise ValueError(f"checkpoint name reused: {name}")
        self._used.add(name)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        return future

    def resolve(self, name: str, stream_id: str | None = None, at: float = 0.0) -> bool:
        """A playedStream: True if it was ours and pending. `streamId` is checked only when
        both sides know it (the documented ack may omit it)."""
        if stream_id and self.stream_id and stream_id != self.stream_id:
            self.stale += 1
            return False
        future = self._pending.pop(name, None)
        if future is None or future.done():
            self.stale += 1
            return False
        future.set_result(at)
        return True

    def owns(self, name: str) -> bool:
        return name in self._used

    def fail_all(self, reason: Literal["cleared", "ended"]) -> int:
        pending, self._pending = self._pending, {}
        failed = 0
        for future in pending.values():
            if not future.done():
                future.set_exception(CheckpointCancelled(reason))
                future.exception()  # the waiter re-raises it; never "never retrieved"
                failed += 1
        return failed

    def forget(self, name: str) -> None:
        future = self._pending.pop(name, None)
        if future is not None and not future.done():
            future.cancel()

    @property
    def pending(self) -> list[str]:
        return list(self._pending)


@dataclass
class Playout:
    """Estimated end of the audio queued at Plivo: `max(now, end) + duration` per playAudio,
    reset to now by clearAudio. Only a watchdog bound; `playedStream` is the authority."""

    clock: Callable[[], float] = time.monotonic
    end: float = 0.0

    def add(self, seconds: float) -> None:
        self.end = max(self.clock(), self.end) + seconds

    def clear(self) -> None:
        self.end = self.clock()

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock())


async def wait_checkpoint(future: asyncio.Future[float], timeout_s: float) -> WaitOutcome:
    """Wait for one ack; never raises for the expected outcomes."""
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout_s)
        return "played"
    except CheckpointCancelled as e:
        return e.reason
    except TimeoutError:
        return "timeout"


@dataclass
class Intervention:
    """One intervention: its id names its checkpoints; `timeline` records what happened."""

    call_tag: str
    seq: int
    turn_id: str
    verdict: Verdict
    id: str = field(init=False)
    timeline: list[tuple[str, float]] = field(default_factory=list)
    correction: CorrectionResult | None = None
    outcome: str = "running"

    def __post_init__(self) -> None:
        # seq is unique within the session; the random part keeps names unique across a
        # reconnected stream of the same call too
        self.id = f"mirror-{self.call_tag}-{self.seq}-{uuid.uuid4().hex[:6]}"

    def checkpoint(self, purpose: str) -> str:
        return f"{self.id}-{purpose}"

    def mark(self, what: str, clock: Callable[[], float]) -> None:
        self.timeline.append((what, clock()))
