"""GenerateCorrection: the line the agent says after an intervention, and its one-shot note
(direct invoke).

Thin on purpose: parse the event, call `mirror.correction`, serialize the result. Bad input comes
back as a structured `{"error": ...}` object and nothing is raised: the bridge is waiting to
speak, so a failing LLM or state store still returns a correction (the template one, with
`note_stored: false` when the note could not be stored).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.config import config_from_env
from mirror.correction import (
    LLM_TIMEOUT_ENV,
    CorrectionEvent,
    CorrectionService,
    GeneratedCorrection,
    build_correction_llm,
    fallback_result,
    llm_timeout_from_env,
)
from mirror.errors import validation_error_response
from mirror.llm.base import LLMClient
from mirror.models import MirrorConfig
from mirror.observability import count, function_metrics, traced
from mirror.redact import redact, redact_event
from mirror.state import DynamoDBStateStore

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import.
tracer = Tracer(auto_patch=False)

TIMEOUT_ENV = LLM_TIMEOUT_ENV
RESERVE_S = 0.75
"""Kept back from the invocation's remaining time for the store writes and the response."""


BASE_CONFIG = config_from_env()
LLM_TIMEOUT_S = llm_timeout_from_env()
_service: CorrectionService | None = None
_loop: asyncio.AbstractEventLoop | None = None


def build_llm(config: MirrorConfig) -> LLMClient | None:
    return build_correction_llm(config, logger)


def _log_llm_error(e: BaseException) -> None:
    # LLMError messages hold no prompts, keys or model output (mirror.llm.base)
    logger.warning("correction LLM failed", extra={"error_type": type(e).__name__})


def service() -> CorrectionService:
    """Built on first use so importing the module creates no AWS or LLM client."""
    global _service
    if _service is None:
        tracer.patch(["botocore"])
        _service = CorrectionService(
            DynamoDBStateStore(os.environ["CALL_TABLE"]),
            build_llm(BASE_CONFIG),
            llm_timeout_s=LLM_TIMEOUT_S,
            on_llm_error=_log_llm_error,
        )
    return _service


def run(coro: Any) -> Any:
    """One event loop for the container's life: async HTTP clients keep their connection pools
    across invocations, which a fresh `asyncio.run` loop per invocation would break."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def config_for(event: CorrectionEvent) -> MirrorConfig:
    if event.tenant_id is None:
        return BASE_CONFIG
    return BASE_CONFIG.model_copy(update={"tenant_id": event.tenant_id})  # validated by the event


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        parsed = CorrectionEvent.model_validate(event)
    except ValidationError as e:
        response = validation_error_response(e)
        logger.warning("invalid GenerateCorrection event", extra={"error": response["error"]})
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        return response

    logger.append_keys(call_id=parsed.call_id, tenant_id=parsed.tenant_id or "default")
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("correction request", extra={"event": redact_event(event)})
    turn_id = parsed.turn_id or context.aws_request_id
    config = config_for(parsed)
    try:
        corrections = service()  # the first call builds the clients: read the clock after it
        budget_s = context.get_remaining_time_in_millis() / 1000 - RESERVE_S
        generated = run(corrections.generate(parsed, config, turn_id, budget_s=budget_s))
    except Exception:  # a bug must not leave the caller in silence: speak the template
        logger.exception("correction failed; returning the template")
        metrics.add_metric(name="CorrectionErrors", unit=MetricUnit.Count, value=1)
        generated = GeneratedCorrection(fallback_result(parsed, config, turn_id))
    result = generated.result

    for error in generated.store_errors:
        logger.error("state store unavailable", extra={"error": error})
        metrics.add_metric(name="StateStoreErrors", unit=MetricUnit.Count, value=1)
    if result.replayed:
        metrics.add_metric(name="CorrectionReplays", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="Corrections", unit=MetricUnit.Count, value=1)
        count("CorrectionSource", part="line", source=result.source)
        count("CorrectionSource", part="note", source=result.note_source)
        for rejection in result.rejected:
            count("CorrectionRejected", part=rejection.part, why=rejection.why)
        if result.llm_failure is not None:
            count("CorrectionLLMFailures", why=result.llm_failure)
    logger.info(
        "correction",
        extra={
            "turn_id": turn_id,
            "reason_code": result.reason_code,
            "check": result.check,
            "source": result.source,
            "note_source": result.note_source,
            "rejected": [r.model_dump() for r in result.rejected],
            "llm_failure": result.llm_failure,
            "note_stored": result.note_stored,
            "replayed": result.replayed,
        },
    )
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("correction text", extra={"correction_text": redact(result.correction_text)})
    return result.model_dump(mode="json")
