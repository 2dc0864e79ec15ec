"""PostCallReport: the failure report of an ended call (EventBridge CallEnded, or direct invoke).

Thin on purpose: parse the event, call `mirror.reports.service`, serialize the outcome.
- Bad input (not a CallEnded envelope or detail) comes back as `{"error": ...}` and is not
  raised: redelivering it cannot help.
- A store, bucket or Step Functions failure is raised, so EventBridge retries the event (then
  its dead-letter queue); the service is idempotent per call, so a retry writes nothing twice.
- Settings are read at cold start: a malformed variable fails the first invocation, naming it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.config import config_from_env
from mirror.errors import validation_error_response
from mirror.observability import function_metrics
from mirror.reports.models import parse_call_ended
from mirror.reports.service import PostCallReportService, ReportSettings
from mirror.state import DynamoDBStateStore

logger = Logger()
metrics = function_metrics()

BASE_CONFIG = config_from_env()
SETTINGS = ReportSettings.from_env(intervention_threshold=BASE_CONFIG.intervention_threshold)
_service: PostCallReportService | None = None


def _llm() -> Any:
    """The auditor LLM (MIRROR_CONFIG's `llm` or the standard variables); None without one or
    when it cannot be built (the deterministic report still goes out)."""
    if BASE_CONFIG.llm is None:
        return None
    from mirror.llm import build_llm_client

    try:
        return build_llm_client(BASE_CONFIG.llm)
    except Exception:  # noqa: BLE001
        logger.exception("LLM client could not be built; reports are deterministic only")
        return None


def service() -> PostCallReportService:
    """Built on first use so importing the module creates no AWS client."""
    global _service
    if _service is None:
        from mirror.reports.store import (
            DynamoDBReportStore,
            FixWorkflowStarter,
            S3TranscriptStore,
        )

        _service = PostCallReportService(
            state=DynamoDBStateStore(os.environ["CALL_TABLE"], read_timeout_s=5.0),
            reports=DynamoDBReportStore(SETTINGS.reports_table),
            settings=SETTINGS,
            transcripts=S3TranscriptStore(SETTINGS.bucket) if SETTINGS.bucket else None,
            starter=(
                FixWorkflowStarter(SETTINGS.state_machine_arn)
                if SETTINGS.state_machine_arn
                else None
            ),
            llm=_llm(),
        )
    return _service


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    metrics.add_metric(name="ReportRequests", unit=MetricUnit.Count, value=1)
    try:
        detail = parse_call_ended(event)
    except ValidationError as e:
        response = validation_error_response(e)
        logger.warning("invalid CallEnded event", extra={"error": response["error"]})
        metrics.add_metric(name="ReportInvalidEvents", unit=MetricUnit.Count, value=1)
        return response
    logger.append_keys(call_id=detail.call_id, tenant_id=detail.tenant_id)
    outcome = service().handle(detail)
    result = outcome.as_dict()
    if outcome.status == "written":
        metrics.add_metric(name="ReportsWritten", unit=MetricUnit.Count, value=1)
        if outcome.report is not None and outcome.report.auditor.status == "failed":
            metrics.add_metric(name="ReportAuditorFailures", unit=MetricUnit.Count, value=1)
    elif outcome.status == "replayed":
        metrics.add_metric(name="ReportsReplayed", unit=MetricUnit.Count, value=1)
    started = sum(1 for f in outcome.fixes if f.started)
    if started:
        metrics.add_metric(name="FixWorkflowsStarted", unit=MetricUnit.Count, value=started)
    logger.info(
        "post-call report",
        extra={
            "status": outcome.status,
            "patterns": [p["pattern_id"] for p in result.get("patterns", [])],
            "auditor": result.get("auditor"),
            "fixes": result["fixes"],
        },
    )
    return result
