"""Score a turn: the one path behind ScoreTurn and `POST /v1/turns:score`."""

from __future__ import annotations

from pydantic import ValidationError

from mirror.config import config_for_event
from mirror.models import ScoreTurnEvent
from mirror.service import ScoredTurn
from mirror.state import StateStoreError
from mirror.usecases.deps import Deps
from mirror.usecases.failure import Failure


def _score_failure(e: Exception) -> Failure:
    if isinstance(e, StateStoreError):
        return Failure("state_unavailable", str(e), log_detail=str(e))
    if isinstance(e, ValidationError):  # a model built inside the service failed: a bug
        return Failure.unexpected(e)
    if isinstance(e, ValueError):  # the store refuses what cannot fit an item (sizes only)
        return Failure("invalid_event", f"the turn cannot be recorded: {e}", log_detail=str(e))
    return Failure.unexpected(e)


def score_turn(deps: Deps, event: ScoreTurnEvent, turn_id: str) -> ScoredTurn | Failure:
    """The verdict for the turn, recorded under `event.turn_id or turn_id`; never raises."""
    try:
        config = config_for_event(deps.base_config, event)  # event policies compile here
    except ValidationError as e:
        return Failure.invalid(e)
    try:
        return deps.scorer().score(event, config, event.turn_id or turn_id)
    except Exception as e:  # noqa: BLE001 - a failure is an outcome, never a raise
        return _score_failure(e)


async def ascore_turn(deps: Deps, event: ScoreTurnEvent, turn_id: str) -> ScoredTurn | Failure:
    """`score_turn` for an event loop (the Api): remote tiers run on the caller's loop."""
    try:
        config = config_for_event(deps.base_config, event)
    except ValidationError as e:
        return Failure.invalid(e)
    try:
        return await deps.scorer().ascore(event, config, event.turn_id or turn_id)
    except Exception as e:  # noqa: BLE001
        return _score_failure(e)
