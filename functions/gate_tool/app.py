"""GateTool: decide the agent's planned tool calls before they run (direct invoke).

Thin on purpose: parse the event, call `mirror.gate`, serialize the decisions. Nothing is raised:
bad input comes back as a structured `{"error": ...}` object, and anything that breaks while
gating holds the irreversible calls (fail closed; `tool_gate_failure_mode`) and is counted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from mirror.config import config_from_env
from mirror.errors import validation_error_response
from mirror.gate import GateOutcome, GateService, GateToolEvent, fail_safe, idempotency_layer
from mirror.judge import RemoteTier
from mirror.models import MirrorConfig
from mirror.observability import count, function_metrics, traced
from mirror.redact import redact, redact_event
from mirror.state import DynamoDBStateStore

logger = Logger()
metrics = function_metrics()
# botocore is patched for X-Ray when the store's client is built, not at import.
tracer = Tracer(auto_patch=False)

BASE_CONFIG = config_from_env()
_service: GateService | None = None


def _remote_tiers(config: MirrorConfig) -> list[RemoteTier]:
    """Tier 1 / Tier 2 as the config asks (none: Tier 0 only), built once per container.
    Imported here, not at module level: the factory loads an SDK only for a configured tier."""
    from mirror.llm import build_remote_tiers

    return list(build_remote_tiers(config))


def service() -> GateService:
    """Built on first use so importing the module creates no AWS client."""
    global _service
    if _service is None:
        tracer.patch(["botocore"])
        store = DynamoDBStateStore(os.environ["CALL_TABLE"])
        _service = GateService(
            store,
            _remote_tiers(BASE_CONFIG),
            persistence=idempotency_layer(store.table_name, store.client),
        )
    return _service


@logger.inject_lambda_context(clear_state=True)
@traced(tracer)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    metrics.add_metric(name="GateRequests", unit=MetricUnit.Count, value=1)
    try:
        parsed = GateToolEvent.model_validate(event)
        # the event's policies compile here: a bad directive is bad input too
        config = GateService.config_for(BASE_CONFIG, parsed)
    except ValidationError as e:
        response = validation_error_response(e)
        logger.warning("invalid GateTool event", extra={"error": response["error"]})
        count("GateFailures", kind="invalid_event")
        return response

    logger.append_keys(call_id=parsed.call_id, tenant_id=parsed.tenant_id or "default")
    if logger.isEnabledFor(logging.DEBUG):  # no redaction for a line that is off
        logger.debug("gate", extra={"event": redact_event(event)})
    try:
        outcome = service().gate(parsed, config, context)
    except Exception as e:  # noqa: BLE001 - a planned tool call always gets a decision
        logger.error(
            "gate failed; failure mode applied",
            extra={"error": f"{type(e).__name__}: {redact(str(e))}"},
        )
        lines = _service.spoken_lines if _service is not None else None
        outcome = fail_safe(parsed, config, "internal_error", type(e).__name__, lines)

    _record(outcome)
    return outcome.result.model_dump(mode="json")


def _record(outcome: GateOutcome) -> None:
    """Metrics and one log line; decisions replayed for a retry are not counted again."""
    fresh = set(outcome.fresh)
    for decision in outcome.result.decisions:
        if decision.tool_call_id in fresh:
            count("GateDecisions", decision=decision.decision, decided_by=decision.decided_by)
    replays = len(outcome.result.decisions) - len(fresh)
    if replays:
        metrics.add_metric(name="GateReplays", unit=MetricUnit.Count, value=replays)
    for failure in outcome.failures:
        count("GateFailures", kind=failure.kind)
        logger.warning(
            "gate failure",
            extra={
                "kind": failure.kind,
                "tool_call_id": failure.tool_call_id,
                "detail": redact(failure.detail),
            },
        )
    logger.info(
        "gate decisions",
        extra={
            "decision": outcome.result.decision,
            "calls": [
                {
                    "tool_call_id": d.tool_call_id,
                    "name": d.name,
                    "decision": d.decision,
                    "decided_by": d.decided_by,
                    "codes": [r.code for r in d.reasons],
                    "failure": d.failure,
                    "replayed": d.tool_call_id not in fresh,
                }
                for d in outcome.result.decisions
            ],
            "failures": [f"{f.kind}: {redact(f.detail)}" for f in outcome.failures],
        },
    )
