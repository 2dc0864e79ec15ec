"""The FixPr task functions: one handler per state of statemachines/fix_pr.asl.json.

- `collect`: create the fix record and gather the agent's reports of the pattern in the window.
- `draft`: the base commit, the prompt file, and a minimal diff (the LLM's, else the
  deterministic proposal).
- `validate`: the diff touches only fixable files, applies exactly, and the result parses.
- `await_approval` (.waitForTaskToken): store the task token with the diff; a reviewer decides
  through the Api.
- `open_pr`: for an approved fix only, a branch, one commit and a pull/merge request.
- `record`: the fix's outcome (opened, rejected with who and why, or failed with why).

Thin on purpose: each step lives in `mirror.fixes.workflow`; `mirror.fixes.tasks.run` builds
its dependencies and lets failures propagate, so Step Functions sees the error's class name
(the ASL retries `TransientError` and catches the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from mirror.fixes.tasks import run
from mirror.observability import count

logger = Logger()

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _task(step: str) -> Handler:
    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return run(step, event, logger, count)

    handler.__name__ = handler.__qualname__ = step
    return handler


collect = _task("collect")
draft = _task("draft")
validate = _task("validate")
await_approval = _task("await_approval")
open_pr = _task("open_pr")
record = _task("record")
