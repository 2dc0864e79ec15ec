"""A reviewer's decision on a fix, delivered to the waiting workflow (the Api's
`POST /v1/fixes/{fix_id}/approve` and `/reject`).

1. The decision is recorded first, with a conditional write (`awaiting_approval` → `approved` /
   `rejected`, with the reviewer, the reason and the time): an unknown fix is FixNotFound (404),
   a fix not waiting for a decision (decided already, finished, expired) is FixConflict (409),
   and of two concurrent decisions exactly one wins.
2. Then SendTaskSuccess with the stored token and `{"approved", "reviewer", "reason",
   "decided_at"}`; the workflow's Choice opens the PR or records the rejection and ends
   (`Rejected`, a Succeed state: a rejection is an outcome, not a failure).
3. If Step Functions says the token is no longer valid (the approval timed out, the execution
   was stopped), the fix becomes `expired` and the caller gets FixConflict. Any other failure
   to deliver puts the fix back to `awaiting_approval` and raises TransientError (503): the
   reviewer can send the same decision again.

Reviewer identity: the IAM caller's ARN when the request was IAM-signed (the Api passes it), else
the `reviewer` the body names (local runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mirror.aws import client as aws_client
from mirror.aws import error_code
from mirror.fixes.errors import FixConflict, TransientError
from mirror.fixes.store import FixStore

_GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken", "ExecutionDoesNotExist"})


class FixDecisionRequest(BaseModel):
    """The body of `/approve` and `/reject`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reviewer: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Who decides; ignored when the request is IAM-signed (the caller's ARN is "
        "recorded instead). Required otherwise.",
    )
    reason: str = Field(
        "", max_length=2_000, description="Why (required to reject; shown in the PR body)."
    )


class FixDecision(BaseModel):
    """What the approve and reject routes return."""

    model_config = ConfigDict(extra="forbid")

    fix_id: str
    status: str = Field(description="`approved` or `rejected`.")
    reviewer: str
    reason: str
    decided_at: float


@dataclass
class FixApprovals:
    fixes: FixStore
    sfn: Any = None
    clock: Callable[[], float] = time.time

    @property
    def client(self) -> Any:
        if self.sfn is None:
            self.sfn = aws_client("stepfunctions", connect_timeout_s=2.0, read_timeout_s=5.0)
        return self.sfn

    def decide(self, fix_id: str, approved: bool, reviewer: str, reason: str) -> FixDecision:
        if not approved and not reason.strip():
            raise ValueError("a rejection needs a reason")
        now = self.clock()
        before = self.fixes.decide(fix_id, approved, reviewer, reason, now)
        output = {"approved": approved, "reviewer": reviewer, "reason": reason, "decided_at": now}
        try:
            self.client.send_task_success(taskToken=before.task_token, output=json.dumps(output))
        except Exception as e:
            code = error_code(e)
            if code in _GONE:
                self.fixes.expire(fix_id, self.clock())
                raise FixConflict(
                    f"fix {fix_id} can no longer be decided: the workflow stopped waiting ({code})",
                    "expired",
                ) from None
            self.fixes.undo_decision(fix_id, self.clock())
            raise TransientError(
                f"the decision could not reach the workflow ({code or type(e).__name__}); "
                "send it again"
            ) from None
        return FixDecision(
            fix_id=fix_id,
            status="approved" if approved else "rejected",
            reviewer=reviewer,
            reason=reason,
            decided_at=now,
        )
