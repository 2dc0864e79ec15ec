"""Build the post-call report of an ended call (PostCallReport).

The one use case whose failures are meant to be raised: a store, bucket or Step Functions
failure comes back as a `Failure` with `retryable` set and its cause, and the handler raises
that cause, so EventBridge retries the event (then its dead-letter queue). The service is
idempotent per call, so a retry writes nothing twice."""

from __future__ import annotations

from dataclasses import dataclass

from mirror.events import CallEndedDetail
from mirror.reports.service import ReportOutcome
from mirror.usecases.deps import Deps
from mirror.usecases.failure import Failure


@dataclass(frozen=True, slots=True)
class Retryable:
    """A failure redelivering the event can cure; the handler raises `cause`."""

    failure: Failure
    cause: BaseException


def report_call(deps: Deps, detail: CallEndedDetail) -> ReportOutcome | Retryable:
    try:
        return deps.reports().handle(detail)
    except Exception as e:  # noqa: BLE001 - every failure here is worth a retry
        from mirror.reports.store import ReportStoreError
        from mirror.state import StateStoreError

        if isinstance(e, StateStoreError | ReportStoreError):
            failure = Failure("state_unavailable", str(e), log_detail=str(e))
        else:
            failure = Failure.unexpected(e)
        return Retryable(failure, e)
