"""Decide a fix waiting in the FixPr workflow (`POST /v1/fixes/{fix_id}/approve|reject`).

The FixPr task functions themselves stay `mirror.fixes.tasks.run`: they let failures propagate
on purpose (the state machine retries `TransientError` and catches the rest by class name)."""

from __future__ import annotations

from mirror.fixes.approval import FixDecision
from mirror.fixes.errors import FixConflict, FixNotFound, TransientError
from mirror.usecases.deps import Deps, FixesNotConfigured
from mirror.usecases.failure import Failure


def decide_fix(
    deps: Deps, fix_id: str, approved: bool, reviewer: str | None, reason: str
) -> FixDecision | Failure:
    """Blocking (Step Functions and DynamoDB calls): from async code, run it in a thread."""
    if not reviewer:
        return Failure(
            "invalid_event",
            "reviewer is required when the request is not IAM-signed",
            [{"field": "reviewer", "message": "required"}],
        )
    if not approved and not reason.strip():
        return Failure(
            "invalid_event",
            "a rejection needs a reason",
            [{"field": "reason", "message": "required to reject"}],
        )
    try:
        return deps.fixes().decide(fix_id, approved, reviewer, reason)
    except (FixNotFound, FixesNotConfigured) as e:
        return Failure("fix_not_found", str(e))
    except FixConflict as e:
        return Failure("fix_conflict", str(e))
    except TransientError as e:
        return Failure("fix_unavailable", str(e), log_detail=str(e))
    except Exception as e:  # noqa: BLE001
        return Failure.unexpected(e)
