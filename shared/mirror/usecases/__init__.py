"""The application layer: every operation once, behind every entry point.

Each use case takes a validated request and a `Deps` container and returns a typed outcome or a
`Failure`; none raises for any input (an input problem is `invalid_event`, including the
store's size refusals; an outage `state_unavailable`; anything else `internal_error`). The
entry points (`functions/*/app.py`, the Api's routes) are parse -> use case -> serialize, and
count and log each outcome with the one `emit_*` function of its type (`mirror.usecases.emit`).

Kept special rules: the gate holds irreversible calls on any failure and answers decisions;
corrections always return a correction; PostCallReport's retryable failures are raised by its
handler on purpose (EventBridge retries); FixPr tasks let `TransientError` propagate for the
state machine's retry.

`emit` imports Powertools: import it from the functions only (the bridge's image does not
carry Powertools), as `mirror.usecases.emit`.
"""

from __future__ import annotations

from mirror.usecases.corrections import CorrectionOutcome, generate_correction
from mirror.usecases.deps import Deps, FixesNotConfigured
from mirror.usecases.failure import HTTP_STATUS, Failure
from mirror.usecases.gate import gate_tools
from mirror.usecases.score import ascore_turn, score_turn

__all__ = [
    "HTTP_STATUS",
    "CorrectionOutcome",
    "Deps",
    "Failure",
    "FixesNotConfigured",
    "ascore_turn",
    "gate_tools",
    "generate_correction",
    "score_turn",
]
