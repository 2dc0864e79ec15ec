"""What the campaign's tests share: the documented error shape, and a tally of the cases each
target was given (cases, crashes, 5xx, lost events), which `scripts/campaign.py` reads back.

The tally is written only when MIRROR_CAMPAIGN_TALLY names a file (the campaign script sets it):
one JSON line per test, appended, so `make test` writes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Tally:
    target: str
    cases: int = 0
    crashes: int = 0
    server_errors: int = 0
    lost_events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def saw(self, outcome: str) -> None:
        self.cases += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def write(self) -> None:
        path = os.environ.get("MIRROR_CAMPAIGN_TALLY")
        if path and self.cases:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(self)) + "\n")


def assert_error_shape(body: Any) -> str:
    """The documented `{"error": {"type", "message", "fields"?}}`; returns the type."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"type", "message", "fields"}, error
    assert isinstance(error["type"], str) and error["type"], error
    assert isinstance(error["message"], str) and error["message"], error
    for f in error.get("fields") or []:
        assert set(f) == {"field", "message"} and isinstance(f["field"], str), f
    return str(error["type"])


def outcome_of(body: Any) -> str:
    """`error:<type>` for an error body (shape checked), else `ok`."""
    if isinstance(body, dict) and "error" in body:
        return f"error:{assert_error_shape(body)}"
    return "ok"
