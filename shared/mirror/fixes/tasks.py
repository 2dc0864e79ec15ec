"""The glue between the FixPr task functions (functions/fix_pr/*.py) and `workflow`.

Every task is invoked by the state machine with the same event shape (see
statemachines/fix_pr.asl.json):

    {"state": <the execution's document>, "execution_arn": "...",   # every task
     "token": "...",                                                 # await_approval only
     "outcome": "opened" | "rejected" | "failed"}                    # record only

`run` builds the dependencies from the environment (once per container and settings), calls
the step, and lets a failure propagate: the exception's class name is the error Step Functions
retries or catches. It logs the failure's type and a redacted message, and counts it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from mirror.fixes import workflow
from mirror.fixes.settings import FixSettings
from mirror.fixes.store import FixStore
from mirror.fixes.workflow import FixDeps
from mirror.redact import redact
from mirror.reports.store import DynamoDBReportStore

STEPS = ("collect", "draft", "validate", "await_approval", "open_pr", "record")

_LOCK = threading.Lock()
_DEPS: dict[FixSettings, FixDeps] = {}


def _llm() -> Any:
    """The drafting LLM from MIRROR_CONFIG's `llm` or the standard variables; None without."""
    from mirror.config import config_from_env
    from mirror.llm import build_llm_client

    settings = config_from_env().llm
    return None if settings is None else build_llm_client(settings)


def deps_from_env(logger: Any = None) -> FixDeps:
    settings = FixSettings.from_env()
    with _LOCK:
        deps = _DEPS.get(settings)
        if deps is None:
            log: Callable[[str, dict[str, Any]], None] = (
                (lambda msg, extra: logger.warning(msg, extra=extra))
                if logger is not None
                else (lambda msg, extra: None)
            )
            deps = FixDeps(
                settings=settings,
                fixes=FixStore(settings.reports_table),
                reports=DynamoDBReportStore(settings.reports_table),
                repo=settings.repo_host(),
                llm_factory=_llm,
                log=log,
            )
            _DEPS[settings] = deps
        return deps


def reset() -> None:
    """Forget the built dependencies (tests change the environment between cases)."""
    with _LOCK:
        _DEPS.clear()


def _require_utf8(event: dict[str, Any]) -> None:
    """A string that cannot be encoded as UTF-8 (a lone surrogate) is bad input: refused here as
    a permanent ValueError, not left to fail inside a boto3 call, where it would surface as a
    TransientError that Step Functions retries."""
    stack: list[Any] = [event]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a FixPr task event holds text that is not valid UTF-8") from None
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def dispatch(step: str, event: dict[str, Any], deps: FixDeps) -> Mapping[str, Any]:
    if not isinstance(event, dict) or not isinstance(event.get("state"), dict):
        raise ValueError("a FixPr task event is {'state': {...}, ...}")
    _require_utf8(event)
    state = event["state"]
    if step == "collect":
        return workflow.collect(state, deps, event.get("execution_arn"))
    if step == "draft":
        return workflow.draft(state, deps)
    if step == "validate":
        return workflow.validate(state, deps)
    if step == "await_approval":
        return workflow.await_approval(str(event.get("token") or ""), state, deps)
    if step == "open_pr":
        return workflow.open_pr(state, deps)
    if step == "record":
        outcome = event.get("outcome")
        if outcome not in ("opened", "rejected", "failed"):
            raise ValueError("record needs outcome opened, rejected or failed")
        return workflow.record(outcome, state, deps)
    raise ValueError(f"unknown FixPr step {step!r}")


def _safe(count: Callable[..., None], logger: Any) -> Callable[..., None]:
    """A metric that cannot be emitted never fails the step."""

    def emit(name: str, **dimensions: str) -> None:
        try:
            count(name, **dimensions)
        except Exception:  # noqa: BLE001
            logger.warning("metric not emitted", extra={"metric": name})

    return emit


def run(
    step: str, event: dict[str, Any], logger: Any, count: Callable[..., None]
) -> dict[str, Any]:
    """One task invocation. `count(name, **dimensions)` emits a metric."""
    count = _safe(count, logger)
    state = event.get("state") if isinstance(event, dict) else None
    fix_id = state.get("fix_id") if isinstance(state, dict) else None
    logger.append_keys(fix_id=fix_id, step=step)
    try:
        result = dispatch(step, event, deps_from_env(logger))
    except Exception as e:
        logger.warning(
            "fix step failed",
            extra={"error_type": type(e).__name__, "error": redact(str(e))[:500]},
        )
        count("FixStepFailures", step=step, error=type(e).__name__)
        raise
    count("FixSteps", step=step)
    logger.info("fix step done", extra={"keys": sorted(result)})
    return dict(result)  # the step's typed state, as the JSON object Step Functions gets
