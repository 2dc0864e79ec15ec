"""ScoreTurn: judge one agent turn against the call's stored state (direct invoke).

Thin on purpose: parse the event, run `mirror.usecases.score_turn`, serialize the verdict. Bad
input (including a turn too big to record) and an unreachable state store come back as a
structured `{"error": ...}` object, never a raised exception, so the caller can apply the
failure rules (speech fails open, tools hold).
"""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from pydantic import ValidationError

from mirror.models import ScoreTurnEvent
from mirror.observability import function_metrics, traced
from mirror.redact import redact_event
from mirror.usecases.deps import Deps
from mirror.usecases.emit import emit_failure, emit_verdict
from mirror.usecases.failure import Failure
from mirror.usecases.score import score_turn

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import: the patch
# imports botocore (~0.15 s), which the first DynamoDB call needs anyway.
tracer = Tracer(auto_patch=False)

deps = Deps(logger=logger, on_first_client=lambda: tracer.patch(["botocore"]))
"""This container's services, built on first use; swap them with `deps.using(...)`."""


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        parsed = ScoreTurnEvent.model_validate(event)
    except ValidationError as e:
        failure = Failure.invalid(e)
        emit_failure(metrics, logger, failure, "ScoreTurn")
        return failure.response()

    logger.append_keys(call_id=parsed.call_id, tenant_id=parsed.tenant_id or "default")
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("turn", extra={"event": redact_event(event)})
    scored = score_turn(deps, parsed, context.aws_request_id)
    if isinstance(scored, Failure):
        emit_failure(metrics, logger, scored, "ScoreTurn")
        return scored.response()
    emit_verdict(metrics, logger, scored)
    return scored.verdict.model_dump(mode="json")
