"""CallEndedSweeper: re-publish the CallEnded events left pending (an EventBridge schedule).

Thin on purpose: parse the scheduled event (`mirror.usecases.sweep.SweepEvent`; a direct
invoke may pass `{"min_age_s": ..., "limit": ...}`), run `sweep_call_ended` (`mirror.sweeper`
holds the rules), count and log, serialize the outcome.
- Bad input comes back as `{"error": ...}` and is not raised.
- The index not readable comes back as the `state_unavailable` error and is counted
  (`CallEndedSweepErrors`); the marks stay, the next run tries again.
- Each call re-sent is counted (`CallEndedSwept`) and logged with its call id; each that could
  not be (`CallEndedSweepFailures`) stays pending for the next run.
- Settings are read at cold start: a malformed variable fails the first invocation, naming it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.events import EVENT_SOURCES, EventBridgePublisher
from mirror.observability import function_metrics
from mirror.sweeper import DynamoDBPendingIndex, Publisher
from mirror.usecases.failure import Failure
from mirror.usecases.sweep import SweepEvent, SweepOutcome, SweepSettings, sweep_call_ended

logger = Logger()
metrics = function_metrics()

SETTINGS = SweepSettings.from_env()
index = DynamoDBPendingIndex(os.environ.get("CALL_TABLE", ""))
"""Its client is built on first use; tests swap `index` and `publishers`."""
publishers: dict[str, Publisher] = {
    source: EventBridgePublisher(os.environ.get("EVENT_BUS_NAME", ""), source)
    for source in EVENT_SOURCES
}


def _emit(outcome: SweepOutcome | Failure) -> None:
    if isinstance(outcome, Failure):
        metrics.add_metric(name="CallEndedSweepErrors", unit=MetricUnit.Count, value=1)
        logger.error(
            "pending CallEnded events not swept",
            extra={"kind": outcome.kind, "error": outcome.log_detail or outcome.message},
        )
        return
    metrics.add_metric(name="CallEndedSwept", unit=MetricUnit.Count, value=len(outcome.swept))
    metrics.add_metric(
        name="CallEndedSweepFailures", unit=MetricUnit.Count, value=len(outcome.failed)
    )
    if outcome.retries:
        metrics.add_metric(name="CallEndedRetries", unit=MetricUnit.Count, value=outcome.retries)
    for call_id in outcome.swept:
        logger.warning("pending CallEnded re-published", extra={"call_id": call_id})
    for call_id, error in outcome.failed.items():
        logger.error(
            "pending CallEnded not re-published", extra={"call_id": call_id, "error": error}
        )
    logger.info("sweep", extra=outcome.as_dict())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        request = SweepEvent.parse(event)
    except ValidationError as e:
        failure = Failure.invalid(e)
        logger.warning("invalid sweep event", extra={"error": failure.response()["error"]})
        return failure.response()
    outcome = sweep_call_ended(index, publishers, SETTINGS, request)
    _emit(outcome)
    if isinstance(outcome, Failure):
        return outcome.response()
    return outcome.as_dict()
