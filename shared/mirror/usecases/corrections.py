"""Generate a correction: the one path behind GenerateCorrection and `POST /v1/corrections`.

The bridge is waiting to speak, so there is always a correction: a failing LLM or store gives
the template one (`note_stored: false` when the note could not be stored), and a bug gives the
template with `error` set on the outcome (counted as `CorrectionErrors`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mirror.config import config_overlay
from mirror.correction import CorrectionEvent, GeneratedCorrection, fallback_result
from mirror.usecases.deps import Deps
from mirror.usecases.failure import Failure


@dataclass(frozen=True, slots=True)
class CorrectionOutcome:
    generated: GeneratedCorrection
    turn_id: str
    error: Failure | None = None
    """Set when something unexpected broke and the template was returned instead."""


async def generate_correction(
    deps: Deps,
    event: CorrectionEvent,
    turn_id: str,
    remaining_s: Callable[[], float] | None = None,
    reserve_s: float = 0.75,
) -> CorrectionOutcome:
    """The correction for the turn `event.turn_id or turn_id`; never raises. `remaining_s`:
    reads the invocation's time left, after the first call built the clients (the LLM gets it
    less `reserve_s`, kept for the store writes and the response)."""
    turn_id = event.turn_id or turn_id
    config = config_overlay(deps.base_config, event.tenant_id)  # validated by the event
    try:
        corrections = deps.corrections()  # the first call builds the clients: clock after it
        budget_s = None if remaining_s is None else remaining_s() - reserve_s
        generated = await corrections.generate(event, config, turn_id, budget_s=budget_s)
    except Exception as e:  # noqa: BLE001 - a bug must not leave the caller in silence
        return CorrectionOutcome(
            GeneratedCorrection(fallback_result(event, config, turn_id)),
            turn_id,
            Failure.unexpected(e),
        )
    return CorrectionOutcome(generated, turn_id)
