"""GenerateCorrection: the line the agent says after an intervention, and its one-shot note
(direct invoke).

Thin on purpose: parse the event, run `mirror.usecases.generate_correction`, serialize the
result. Bad input comes back as a structured `{"error": ...}` object and nothing is raised: the
bridge is waiting to speak, so a failing LLM or state store still returns a correction (the
template one, with `note_stored: false` when the note could not be stored).
"""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from pydantic import ValidationError

from mirror.correction import CorrectionEvent, llm_timeout_from_env
from mirror.observability import function_metrics, traced
from mirror.redact import redact_event
from mirror.usecases.corrections import generate_correction
from mirror.usecases.deps import Deps
from mirror.usecases.emit import emit_correction, emit_failure
from mirror.usecases.failure import Failure

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import.
tracer = Tracer(auto_patch=False)

RESERVE_S = 0.75
"""Kept back from the invocation's remaining time for the store writes and the response."""

deps = Deps(
    logger=logger,
    on_first_client=lambda: tracer.patch(["botocore"]),
    llm_timeout_s=llm_timeout_from_env(),  # a bad CORRECTION_LLM_TIMEOUT_S fails cold start
)
"""This container's services and its one event loop, built on first use; swap them with
`deps.using(...)`."""


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        parsed = CorrectionEvent.model_validate(event)
    except ValidationError as e:
        failure = Failure.invalid(e)
        emit_failure(metrics, logger, failure, "GenerateCorrection")
        return failure.response()

    logger.append_keys(call_id=parsed.call_id, tenant_id=parsed.tenant_id or "default")
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("correction request", extra={"event": redact_event(event)})
    outcome = deps.run(
        generate_correction(
            deps,
            parsed,
            context.aws_request_id,
            remaining_s=lambda: context.get_remaining_time_in_millis() / 1000,
            reserve_s=RESERVE_S,
        )
    )
    emit_correction(metrics, logger, outcome)
    return outcome.generated.result.model_dump(mode="json")
