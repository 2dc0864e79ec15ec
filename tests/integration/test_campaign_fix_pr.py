"""Campaign: hostile events at the FixPr task functions that read and write the store (`collect`,
`record`), on moto.

A FixPr task raises on purpose (Step Functions sees the error's class name: the ASL retries
`TransientError` and records anything else), so "no raise" is not the rule here. What must hold
for an event that is not a valid task state: the step either returns a state or raises a
permanent error, never `TransientError` (bad input retried with backoff until the execution
times out), and the error's message carries none of the PII the event held.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.fixes import tasks
from mirror.fixes.errors import FixError, TransientError
from mirror_dev.local import import_file
from mirror_dev.reports_local import create_reports_table, reports_table_properties
from tests.conftest import REPO_ROOT, TEMPLATE_PATH
from tests.fakes.hostile import FAMILIES, hostile_event
from tests.fakes.lambda_context import FakeContext
from tests.support.campaign import Tally
from tests.support.handlers import CurrentStdout, load_event, reset_logger

pytestmark = pytest.mark.integration

REPORTS_TABLE = "mirror-reports-campaign-fix"
SERVICE = "mirror-fix-campaign"
PII = ("4111 1111 1111 1111", "4111111111111111", "123-45-6789", "jo@example.com")


@pytest.fixture
def fix_pr(dynamodb_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    create_reports_table(dynamodb_client, REPORTS_TABLE, reports_table_properties(TEMPLATE_PATH))
    env = {
        "REPORTS_TABLE": REPORTS_TABLE,
        "REPO_PROVIDER": "github",
        "REPO": "acme/agent",
        "PROMPT_PATH": "prompts/agent.md",
        "FIXABLE_FILES": "prompts/agent.md",
        "REPO_TOKEN_SECRET": "mirror/repo-token",
        "POWERTOOLS_SERVICE_NAME": SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": "MirrorTest",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("OPENAI_API_KEY", "MIRROR_CONFIG", "REPO_API_URL", "FIX_MAX_FAILURES"):
        monkeypatch.delenv(name, raising=False)
    tasks.reset()
    reset_logger(SERVICE)
    module = import_file(REPO_ROOT / "functions" / "fix_pr" / "app.py", "fix_pr_campaign")
    for handler in logging.getLogger(SERVICE).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(CurrentStdout())  # type: ignore[arg-type]
    yield module
    tasks.reset()
    reset_logger(SERVICE)


@given(data=st.data())
def test_hostile_task_events_fail_permanently_and_echo_no_pii(
    fix_pr: ModuleType, data: st.DataObject
) -> None:
    step = data.draw(st.sampled_from(["collect", "record"]), label="step")
    sample = load_event("fix_pr_collect.json")
    if step == "record":
        sample["state"] = {**sample["state"], "outcome": {"status": "failed", "error": "x"}}
    event = data.draw(hostile_event(sample, (*FAMILIES, "nesting")), label="event")
    tally = Tally(f"fix_pr_{step}")
    try:
        out = getattr(fix_pr, step)(event, FakeContext(function_name="fix-pr"))
        json.dumps(out)
        tally.saw("ok")
    except TransientError as e:  # retried by the ASL: bad input would never stop
        tally.crashes += 1
        raise AssertionError(f"bad input raised TransientError: {e!s:.300}") from e
    except Exception as e:
        tally.saw(f"raised:{type(e).__name__}")
        text = f"{type(e).__name__}: {e}"
        assert not any(p in text for p in PII), text[:500]
    finally:
        tally.write()


@pytest.mark.parametrize("step", ["collect", "record"])
def test_a_lone_surrogate_is_bad_input_not_a_transient_error(fix_pr: ModuleType, step: str) -> None:
    """Found by `make campaign`: a lone surrogate in the event failed inside boto3's encoding and
    surfaced as TransientError, which the ASL retries; it is refused as a permanent error now."""
    event = load_event("fix_pr_collect.json")
    event["execution_arn"] = "\ud800"
    if step == "record":
        event["outcome"] = "failed"
    with pytest.raises(ValueError, match="not valid UTF-8"):
        getattr(fix_pr, step)(event, FakeContext(function_name="fix-pr"))
    # the allow twin: the sample gets past the check to the workflow (no reports stored here)
    with pytest.raises(FixError, match="no reports of pattern"):
        fix_pr.collect(load_event("fix_pr_collect.json"), FakeContext(function_name="fix-pr"))
