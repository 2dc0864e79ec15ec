"""Deterministic names: the counting window of a call and the fix workflow's execution name.

Both derive only from stored facts (the call's `ended_at`, the agent, the pattern), never from
the time a report is written, so a redelivered or replayed event lands on the same counter and
asks for the same execution.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from mirror.events import MAX_ENDED_AT

DAY_S = 86_400
MAX_EXECUTION_NAME = 80
"""Step Functions execution names: 1..80 characters."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
"""Step Functions forbids whitespace, brackets, wildcards and most punctuation in names, and
CloudWatch logging wants ASCII letters, digits, '-' and '_' only: keep just those."""
_HASH_CHARS = 12


def window_of(ended_at: float, window_days: int) -> str:
    """`YYYYMMDD` (UTC) of the first day of the `window_days`-long window holding `ended_at`.
    Windows are aligned to the Unix epoch, so every function computes the same boundaries."""
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1: {window_days}")
    if not 0 <= ended_at <= MAX_ENDED_AT:  # NaN fails too
        raise ValueError(f"ended_at must be epoch seconds in 0..{MAX_ENDED_AT:.0f}")
    span = window_days * DAY_S
    start = int(ended_at // span) * span
    return datetime.fromtimestamp(start, tz=UTC).strftime("%Y%m%d")


def execution_name(agent_id: str, pattern_id: str, window: str) -> str:
    """`fix-{agent}-{pattern}-{window}` made safe and cut to fit, then `-{hash}` of the exact
    triple: two different triples cannot share a name even when sanitising or cutting makes
    their readable parts equal, and the same triple always gives the same name."""
    digest = hashlib.sha256(f"{agent_id}\x00{pattern_id}\x00{window}".encode()).hexdigest()
    readable = _UNSAFE.sub("_", f"fix-{agent_id}-{pattern_id}-{window}").strip("_")
    room = MAX_EXECUTION_NAME - _HASH_CHARS - 1
    return f"{readable[:room]}-{digest[:_HASH_CHARS]}"
