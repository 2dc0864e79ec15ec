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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mirror.usecases.calls import end_call, read_call, take_override
    from mirror.usecases.corrections import CorrectionOutcome, generate_correction
    from mirror.usecases.deps import Deps, FixesNotConfigured
    from mirror.usecases.failure import HTTP_STATUS, Failure
    from mirror.usecases.fixes import decide_fix
    from mirror.usecases.gate import gate_tools
    from mirror.usecases.reports import Retryable, report_call
    from mirror.usecases.score import ascore_turn, score_turn
    from mirror.usecases.sweep import sweep_call_ended

_WHERE = {
    "HTTP_STATUS": "failure",
    "CorrectionOutcome": "corrections",
    "Deps": "deps",
    "Failure": "failure",
    "FixesNotConfigured": "deps",
    "Retryable": "reports",
    "ascore_turn": "score",
    "decide_fix": "fixes",
    "end_call": "calls",
    "gate_tools": "gate",
    "generate_correction": "corrections",
    "read_call": "calls",
    "report_call": "reports",
    "score_turn": "score",
    "sweep_call_ended": "sweep",
    "take_override": "calls",
}
"""Each name's module, imported on first use: a handler's cold start pays only for its own
operation (ScoreTurn never loads the gate or the corrections)."""

__all__ = [
    "HTTP_STATUS",
    "CorrectionOutcome",
    "Deps",
    "Failure",
    "FixesNotConfigured",
    "Retryable",
    "ascore_turn",
    "decide_fix",
    "end_call",
    "gate_tools",
    "generate_correction",
    "read_call",
    "report_call",
    "score_turn",
    "sweep_call_ended",
    "take_override",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mirror.usecases' has no attribute {name!r}")
    value = getattr(import_module(f"mirror.usecases.{module}"), name)
    globals()[name] = value
    return value
