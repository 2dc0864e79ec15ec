"""PostCallReport: the failure report of an ended call (EventBridge CallEnded, or direct invoke).

Thin on purpose: parse the event (`mirror.events.parse_call_ended`), run
`mirror.usecases.report_call`, serialize the outcome.
- Bad input (not a CallEnded envelope or detail) comes back as `{"error": ...}` and is not
  raised: redelivering it cannot help.
- A store, bucket or Step Functions failure comes back from the use case as `Retryable` and is
  RAISED here on purpose, so EventBridge retries the event (then its dead-letter queue); the
  service is idempotent per call, so a retry writes nothing twice.
- Settings are read at cold start: a malformed variable fails the first invocation, naming it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.config import config_from_env
from mirror.events import parse_call_ended
from mirror.observability import function_metrics
from mirror.reports.service import ReportSettings
from mirror.usecases.deps import Deps
from mirror.usecases.emit import emit_report, emit_report_failure
from mirror.usecases.failure import Failure
from mirror.usecases.reports import Retryable, report_call

logger = Logger()
metrics = function_metrics()

BASE_CONFIG = config_from_env()
SETTINGS = ReportSettings.from_env(intervention_threshold=BASE_CONFIG.intervention_threshold)
deps = Deps(BASE_CONFIG, logger=logger, report_settings=SETTINGS)
"""This container's services, built on first use; swap them with `deps.using(...)`."""


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    metrics.add_metric(name="ReportRequests", unit=MetricUnit.Count, value=1)
    try:
        detail = parse_call_ended(event)
    except ValidationError as e:
        failure = Failure.invalid(e)
        emit_report_failure(metrics, logger, failure)
        return failure.response()
    logger.append_keys(call_id=detail.call_id, tenant_id=detail.tenant_id)
    outcome = report_call(deps, detail)
    if isinstance(outcome, Retryable):
        emit_report_failure(metrics, logger, outcome.failure)
        raise outcome.cause  # on purpose: EventBridge retries the event
    emit_report(metrics, logger, outcome)
    return outcome.as_dict()
