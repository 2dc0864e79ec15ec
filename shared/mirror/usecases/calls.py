"""Read a call, end it, take its override note: the Api's `/v1/calls` routes (`mirror.calls`
holds the rules). Each returns its model or a `Failure`; none raises."""

from __future__ import annotations

from mirror.calls import CallEnded, CallEventError, CallState, OverrideNote
from mirror.models import CallContext
from mirror.state import StateStoreError
from mirror.usecases.deps import Deps
from mirror.usecases.failure import Failure


def call_not_found(ctx: CallContext) -> Failure:
    return Failure(
        "call_not_found",
        # the ids are the request's: not quoted (errors never echo input, and this is logged)
        "no such call for this tenant (never scored, or expired)",
    )


def _failure(e: Exception) -> Failure:
    if isinstance(e, StateStoreError):  # an outage, not the caller's fault: retry later
        return Failure("state_unavailable", str(e), log_detail=str(e))
    if isinstance(e, CallEventError):  # the end is stored; a retry of the same end publishes
        return Failure(
            "event_unavailable",
            f"{e}; the end is recorded, retry to publish it",
            log_detail=str(e),
        )
    return Failure.unexpected(e)


def read_call(deps: Deps, ctx: CallContext) -> CallState | Failure:
    try:
        state = deps.calls().get_call(ctx, deps.base_config.history_limit)
    except Exception as e:  # noqa: BLE001 - a failure is an outcome
        return _failure(e)
    return call_not_found(ctx) if state is None else state


def end_call(deps: Deps, ctx: CallContext) -> CallEnded | Failure:
    """Records `ended_at` once (and publishes CallEnded where the container has a bus)."""
    try:
        ended = deps.calls().end_call(ctx, deps.base_config.state_ttl_s)
    except Exception as e:  # noqa: BLE001
        return _failure(e)
    return call_not_found(ctx) if ended is None else ended


def take_override(deps: Deps, ctx: CallContext) -> OverrideNote | Failure:
    try:
        taken = deps.calls().take_override(ctx)
    except Exception as e:  # noqa: BLE001
        return _failure(e)
    return call_not_found(ctx) if taken is None else taken
