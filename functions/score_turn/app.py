"""ScoreTurn: judge one agent turn against the call's stored state (direct invoke).

Thin on purpose: parse the event, call `mirror.service`, serialize the verdict. Bad input and an
unreachable state store come back as a structured `{"error": ...}` object, never a raised
exception, so the caller can apply the failure rules (speech fails open, tools hold).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.config import config_for_event, config_from_env
from mirror.errors import error_response, validation_error_response
from mirror.models import ScoreTurnEvent
from mirror.observability import function_metrics, traced
from mirror.redact import redact_event
from mirror.service import ScoreTurnService
from mirror.state import DynamoDBStateStore, StateStoreError

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import: the patch
# imports botocore (~0.15 s), which the first DynamoDB call needs anyway.
tracer = Tracer(auto_patch=False)

BASE_CONFIG = config_from_env()
_service: ScoreTurnService | None = None


def service() -> ScoreTurnService:
    """Built on first use so importing the module creates no AWS client."""
    global _service
    if _service is None:
        tracer.patch(["botocore"])
        from mirror.llm import build_remote_tiers  # SDKs load when a tier is built

        _service = ScoreTurnService(
            DynamoDBStateStore(os.environ["CALL_TABLE"]), remote_tiers_for=build_remote_tiers
        )
    return _service


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        parsed = ScoreTurnEvent.model_validate(event)
    except ValidationError as e:
        response = validation_error_response(e)
        logger.warning("invalid ScoreTurn event", extra={"error": response["error"]})
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        return response

    logger.append_keys(call_id=parsed.call_id, tenant_id=parsed.tenant_id or "default")
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("turn", extra={"event": redact_event(event)})
    try:
        config = config_for_event(BASE_CONFIG, parsed)
    except ValidationError as e:  # the event's own policies or tools do not compile
        response = validation_error_response(e)
        logger.warning("invalid ScoreTurn event", extra={"error": response["error"]})
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        return response
    turn_id = parsed.turn_id or context.aws_request_id
    try:
        scored = service().score(parsed, config, turn_id)
    except StateStoreError as e:
        logger.error("state store unavailable", extra={"error": str(e)})
        metrics.add_metric(name="StateStoreErrors", unit=MetricUnit.Count, value=1)
        return error_response("state_unavailable", str(e))

    verdict = scored.verdict
    if not scored.replayed:
        # the invocation's own dimensions (one verdict per invocation): one EMF document
        metrics.add_dimension(name="decision", value=verdict.decision)
        metrics.add_dimension(name="tier", value=verdict.decided_by or "none")
        metrics.add_metric(name="Verdicts", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="Tier0Latency", unit=MetricUnit.Microseconds, value=verdict.latency_us["tier0"]
        )
    logger.info(
        "verdict",
        extra={
            "turn_id": turn_id,
            "decision": verdict.decision,
            "score": verdict.score,
            "checks": [r.check for r in verdict.reasons],
            "replayed": scored.replayed,
        },
    )
    return verdict.model_dump(mode="json")
