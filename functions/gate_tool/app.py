"""GateTool: decide the agent's planned tool calls before they run (direct invoke).

Thin on purpose: parse the event, run `mirror.usecases.gate_tools`, serialize the decisions.
Nothing is raised: bad input comes back as a structured `{"error": ...}` object, and anything
that breaks while gating holds the irreversible calls (fail closed; `tool_gate_failure_mode`)
and is counted.
"""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.gate import GateToolEvent
from mirror.observability import function_metrics, traced
from mirror.redact import redact_event
from mirror.usecases.deps import Deps
from mirror.usecases.emit import emit_failure, emit_gate
from mirror.usecases.failure import Failure
from mirror.usecases.gate import gate_tools

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import.
tracer = Tracer(auto_patch=False)

deps = Deps(logger=logger, on_first_client=lambda: tracer.patch(["botocore"]))
"""This container's services, built on first use; swap them with `deps.using(...)`."""


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    metrics.add_metric(name="GateRequests", unit=MetricUnit.Count, value=1)
    try:
        parsed = GateToolEvent.model_validate(event)
    except ValidationError as e:
        failure = Failure.invalid(e)
        emit_failure(metrics, logger, failure, "GateTool")
        return failure.response()

    logger.append_keys(call_id=parsed.call_id, tenant_id=parsed.tenant_id or "default")
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("gate", extra={"event": redact_event(event)})
    outcome = gate_tools(deps, parsed, context)
    if isinstance(outcome, Failure):  # the event's own policies do not compile
        emit_failure(metrics, logger, outcome, "GateTool")
        return outcome.response()
    emit_gate(metrics, logger, outcome)
    return outcome.result.model_dump(mode="json")
