"""The metrics and the log lines of each outcome type: ONE function per outcome, used by the
direct handler and the Api route alike, so the same outcome is counted and logged the same way
whichever entry point produced it.

`metrics` is the function's Powertools `Metrics` (`mirror.observability.function_metrics`: a
metric that cannot be emitted never fails the call); dimensionless counts and the verdict's
dimensions go there (one EMF document at the flush), counts with dimensions of their own go out
as their own documents (`mirror.observability.count`). `logger` is the function's Powertools
Logger. Caller text never reaches a log line unredacted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mirror.observability import count, function_metrics
from mirror.redact import redact
from mirror.usecases.failure import Failure

if TYPE_CHECKING:  # the outcome types only: a handler imports only its own operation
    from mirror.calls import CallEnded
    from mirror.fixes.approval import FixDecision
    from mirror.gate import GateOutcome
    from mirror.reports.service import ReportOutcome
    from mirror.service import ScoredTurn
    from mirror.usecases.corrections import CorrectionOutcome

_log = logging.getLogger(__name__)


def _add(metrics: Metrics, name: str, value: float = 1, unit: Any = MetricUnit.Count) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


def emit_failure(metrics: Metrics, logger: Any, failure: Failure, operation: str) -> None:
    """A use case's `Failure` (or an event that did not parse): one count, one log line."""
    if failure.error_type == "forbidden":  # `mirror.usecases.authz`: 403, or 404 on a call
        _add(metrics, "AuthorizationRefusals")
        logger.warning(f"{operation} refused", extra={"error": _redacted(failure.log_detail)})
        return
    if operation == "GateTool":
        count("GateFailures", kind=failure.kind)
    if failure.kind == "invalid_event":
        if operation != "GateTool":
            _add(metrics, "InvalidEvents")
        logger.warning(
            f"invalid {operation} event",
            extra={"error": failure.response()["error"], "detail": _redacted(failure.log_detail)},
        )
    elif failure.kind == "state_unavailable":
        _add(metrics, "StateStoreErrors")
        logger.error("state store unavailable", extra={"error": _redacted(failure.log_detail)})
    elif failure.kind == "event_unavailable":
        _add(metrics, "CallEventErrors")
        logger.error("CallEnded not published", extra={"error": _redacted(failure.log_detail)})
    elif failure.kind == "fix_unavailable":
        _add(metrics, "FixDecisionErrors")
        logger.error("fix decision not delivered", extra={"error": _redacted(failure.log_detail)})
    elif failure.kind in ("call_not_found", "fix_not_found", "fix_conflict"):
        logger.info(failure.kind.replace("_", " "), extra={"error": failure.message})
    else:
        _add(metrics, "InternalErrors")
        logger.error(
            f"{operation} failed",
            extra={"error_type": failure.error_type, "error": _redacted(failure.log_detail)},
        )


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact(text)


def emit_verdict(metrics: Metrics, logger: Any, scored: ScoredTurn) -> None:
    """A scored turn: a replayed verdict is logged, not counted again."""
    verdict = scored.verdict
    if not scored.replayed:
        # the invocation's own dimensions (one verdict per invocation): one EMF document
        metrics.add_dimension(name="decision", value=verdict.decision)
        metrics.add_dimension(name="tier", value=verdict.decided_by or "none")
        _add(metrics, "Verdicts")
        _add(metrics, "Tier0Latency", verdict.latency_us["tier0"], MetricUnit.Microseconds)
    logger.info(
        "verdict",
        extra={
            "turn_id": scored.turn_id,
            "decision": verdict.decision,
            "score": verdict.score,
            "checks": [r.check for r in verdict.reasons],
            "replayed": scored.replayed,
        },
    )


def emit_gate(metrics: Metrics, logger: Any, outcome: GateOutcome) -> None:
    """Gate decisions; decisions replayed for a retry are not counted again."""
    fresh = set(outcome.fresh)
    for decision in outcome.result.decisions:
        if decision.tool_call_id in fresh:
            count("GateDecisions", decision=decision.decision, decided_by=decision.decided_by)
    replays = len(outcome.result.decisions) - len(fresh)
    if replays:
        _add(metrics, "GateReplays", replays)
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


def emit_correction(metrics: Metrics, logger: Any, outcome: CorrectionOutcome) -> None:
    """A correction: its sources, rejections, LLM failure, store errors (redacted)."""
    if outcome.error is not None:
        logger.error(
            "correction failed; returning the template",
            extra={
                "error_type": outcome.error.error_type,
                "error": _redacted(outcome.error.log_detail),
            },
        )
        _add(metrics, "CorrectionErrors")
    generated = outcome.generated
    result = generated.result
    for error in generated.store_errors:
        logger.error("state store unavailable", extra={"error": redact(error)})
        _add(metrics, "StateStoreErrors")
    if result.replayed:
        _add(metrics, "CorrectionReplays")
    else:
        _add(metrics, "Corrections")
        count("CorrectionSource", part="line", source=result.source)
        count("CorrectionSource", part="note", source=result.note_source)
        for rejection in result.rejected:
            count("CorrectionRejected", part=rejection.part, why=rejection.why)
        if result.llm_failure is not None:
            count("CorrectionLLMFailures", why=result.llm_failure)
    logger.info(
        "correction",
        extra={
            "turn_id": outcome.turn_id,
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


@contextmanager
def flushed_metrics() -> Iterator[Metrics]:
    """A `Metrics` of its own, flushed at the end of the block: for an entry point that serves
    several operations in one invocation (the Api), so an outcome's dimensions land on its own
    metrics only, exactly as in the operation's own function."""
    metrics = function_metrics()
    try:
        yield metrics
    finally:
        metrics.flush_metrics()  # SafeEMFProvider: logs, never raises


def emit_report_failure(metrics: Metrics, logger: Any, failure: Failure) -> None:
    """PostCallReport's bad event (not retried) or retryable failure (raised after this)."""
    if failure.kind == "invalid_event":
        _add(metrics, "ReportInvalidEvents")
        logger.warning("invalid CallEnded event", extra={"error": failure.response()["error"]})
    else:
        _add(metrics, "ReportErrors")
        logger.error(
            "post-call report failed; the event will be retried",
            extra={"kind": failure.kind, "error": _redacted(failure.log_detail)},
        )


def emit_report(metrics: Metrics, logger: Any, outcome: ReportOutcome) -> None:
    result = outcome.as_dict()
    if outcome.status == "written":
        _add(metrics, "ReportsWritten")
        if outcome.report is not None and outcome.report.auditor.status == "failed":
            _add(metrics, "ReportAuditorFailures")
    elif outcome.status == "replayed":
        _add(metrics, "ReportsReplayed")
    started = sum(1 for f in outcome.fixes if f.started)
    if started:
        _add(metrics, "FixWorkflowsStarted", started)
    logger.info(
        "post-call report",
        extra={
            "status": outcome.status,
            "patterns": [p["pattern_id"] for p in result.get("patterns", [])],
            "auditor": result.get("auditor"),
            "fixes": result["fixes"],
        },
    )


def emit_call(logger: Any, ended: CallEnded) -> None:
    logger.info("call ended", extra={"call_id": ended.call_id, "ended_at": ended.ended_at})


def emit_fix(logger: Any, fix_id: str, decision: FixDecision) -> None:
    count("FixDecisions", decision=decision.status)
    logger.info("fix decided", extra={"fix_id": fix_id, "status": decision.status})
