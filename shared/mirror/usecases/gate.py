"""Gate planned tool calls: the one path behind GateTool and `POST /v1/tools:gate`.

A planned tool call always gets a decision: anything that breaks while gating holds the
irreversible calls (`mirror.gate.fail_safe`, `tool_gate_failure_mode`) with the failure's kind,
so only an event whose own policies do not compile comes back as a `Failure`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mirror.config import config_for_event
from mirror.gate import FailureKind, GateOutcome, GateToolEvent, fail_safe
from mirror.usecases.deps import Deps
from mirror.usecases.failure import Failure

SIZE_REFUSALS = ("item size has exceeded", "stored item holds at most", "too large")
"""How an item too big to record reads when it is refused: DynamoDB's ValidationException (through
the idempotency records) or the store's own size check. The input's problem (`invalid_event`),
not an outage, whichever layer reported it."""


def gate_tools(
    deps: Deps, event: GateToolEvent, lambda_context: Any = None
) -> GateOutcome | Failure:
    """One decision per planned call; never raises. Synchronous (its remote tiers run their
    own event loop): from async code, call it in a worker thread."""
    try:
        config = config_for_event(deps.base_config, event)
    except ValidationError as e:  # the event's policies do not compile: bad input
        return Failure.invalid(e)
    try:
        service = deps.gate()
        with deps.gate_lock:  # GateService is not thread-safe with idempotency on
            outcome = service.gate(event, config, lambda_context)
    except Exception as e:  # noqa: BLE001 - a planned tool call always gets a decision
        built = deps.built_gate()
        lines = built.spoken_lines if built is not None else None
        kind: FailureKind = "invalid_event" if _is_input_refusal(e) else "internal_error"
        detail = f"{type(e).__name__}: {e}"
        outcome = fail_safe(event, config, kind, detail, lines)
    return _input_refusals(event, config, outcome, deps)


def _is_input_refusal(e: BaseException) -> bool:
    return isinstance(e, ValueError) and not isinstance(e, ValidationError)


def _input_refusals(
    event: GateToolEvent, config: Any, outcome: GateOutcome, deps: Deps
) -> GateOutcome:
    """A failure that is the input's problem (a ValueError from the store's record paths, or an
    item too big to record) is `invalid_event`, as ScoreTurn and the Api report the same turn;
    the irreversible calls stay held."""
    refused = [f for f in outcome.failures if _refuses_input(f.kind, f.detail)]
    if not refused:
        return outcome
    built = deps.built_gate()
    lines = built.spoken_lines if built is not None else None
    return fail_safe(event, config, "invalid_event", refused[0].detail, lines)


def _refuses_input(kind: str, detail: str) -> bool:
    if kind == "internal_error" and detail.startswith("ValueError:"):
        return True  # GateService's name for a ValueError (a record path's refusal)
    if kind in ("store_unavailable", "internal_error"):
        lowered = detail.lower()
        return any(words in lowered for words in SIZE_REFUSALS)
    return False
