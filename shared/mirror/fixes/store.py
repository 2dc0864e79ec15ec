"""The fix record: one item per fix workflow in the reports table (`pk = FIX#{fix id}`,
`sk = FIX`), the fix id being the execution name.

Status, in order: `collecting` (Collect created it) → `awaiting_approval` (the task token and the
validated diff are stored) → `approved` / `rejected` (the Api's decision, with who and why)
→ `opened` (the PR's URL) or `rejected` (recorded); `failed` (why) from any step; `expired` when
the approval window closed before a decision reached the workflow.

Every transition is a conditional write on the current status, so two reviewers deciding at
once cannot both win, and a decision can never reach a fix that is not waiting for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirror.aws import DynamoDBTable, error_code
from mirror.fixes.errors import FixConflict, FixNotFound, TransientError
from mirror.reports.naming import DAY_S
from mirror.state.base import from_attr, to_attr

SK_VALUE = "FIX"
FIX_TTL_S = 400 * DAY_S
_THROTTLED = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def fix_pk(fix_id: str) -> str:
    return f"FIX#{fix_id}"


@dataclass(frozen=True)
class FixRecord:
    fix_id: str
    status: str
    agent_id: str
    pattern_id: str
    window: str
    tenant_id: str
    task_token: str | None = None
    diff: str | None = None
    files: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    reviewer: str | None = None
    reason: str | None = None
    decided_at: float | None = None
    pr_url: str | None = None
    branch: str | None = None
    commit: str | None = None
    error: str | None = None
    cause: str | None = None
    execution_arn: str | None = None

    def public(self) -> dict[str, Any]:
        """What the Api may show: everything but the task token."""
        out = {k: v for k, v in self.__dict__.items() if k != "task_token"}
        return out


class FixStore(DynamoDBTable):
    def _call(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        """None when the condition failed; TransientError for throttling and outages."""
        try:
            response: dict[str, Any] = getattr(self.client, method)(
                TableName=self.table_name, **kwargs
            )
            return response
        except Exception as e:
            code = error_code(e)
            if code == "ConditionalCheckFailedException":
                return None
            if code in _THROTTLED or code is None:
                raise TransientError(f"fix record: {code or type(e).__name__}") from e
            raise

    def _key(self, fix_id: str) -> dict[str, Any]:
        return {"pk": {"S": fix_pk(fix_id)}, "sk": {"S": SK_VALUE}}

    def get(self, fix_id: str) -> FixRecord | None:
        response = self._call("get_item", Key=self._key(fix_id), ConsistentRead=True) or {}
        item = response.get("Item")
        if item is None:
            return None
        fields = {k: from_attr(v) for k, v in item.items() if k in FixRecord.__dataclass_fields__}
        return FixRecord(**fields)

    def create(self, fix: dict[str, Any], now: float, execution_arn: str | None = None) -> None:
        """Create the record (status `collecting`); a repeat for the same fix changes nothing."""
        item = {
            **self._key(fix["fix_id"]),
            "fix_id": to_attr(fix["fix_id"]),
            "status": to_attr("collecting"),
            "agent_id": to_attr(fix["agent_id"]),
            "pattern_id": to_attr(fix["pattern_id"]),
            "window": to_attr(fix["window"]),
            "tenant_id": to_attr(fix.get("tenant_id", "")),
            "execution_arn": to_attr(execution_arn),
            "created_at": to_attr(now),
            "updated_at": to_attr(now),
            "expires_at": to_attr(int(now + FIX_TTL_S)),
        }
        self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")

    def _update(
        self,
        fix_id: str,
        values: dict[str, Any],
        *,
        allowed: tuple[str, ...],
        now: float,
        remove: tuple[str, ...] = (),
    ) -> bool:
        names = {f"#{i}": k for i, k in enumerate(values)} | {"#s": "status", "#u": "updated_at"}
        sets = ", ".join(f"#{i} = :{i}" for i in range(len(values))) + ", #u = :now"
        attrs = {f":{i}": to_attr(v) for i, v in enumerate(values.values())}
        attrs[":now"] = to_attr(now)
        attrs |= {f":a{i}": to_attr(s) for i, s in enumerate(allowed)}
        expression = f"SET {sets}"
        if remove:
            names |= {f"#r{i}": k for i, k in enumerate(remove)}
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        condition = (
            "attribute_exists(pk) AND #s IN ("
            + ", ".join(f":a{i}" for i in range(len(allowed)))
            + ")"
        )
        return (
            self._call(
                "update_item",
                Key=self._key(fix_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attrs,
            )
            is not None
        )

    def await_approval(
        self, fix_id: str, token: str, diff: str, files: list[str], checks: list[str], now: float
    ) -> None:
        """Store the task token with the diff it approves (idempotent for a retried task)."""
        ok = self._update(
            fix_id,
            {
                "status": "awaiting_approval",
                "task_token": token,
                "diff": diff,
                "files": files,
                "checks": checks,
            },
            allowed=("collecting", "awaiting_approval"),
            now=now,
        )
        if not ok:
            current = self.get(fix_id)
            raise FixConflict(
                f"fix {fix_id} cannot wait for approval (status "
                f"{current.status if current else 'missing'})",
                current.status if current else None,
            )

    def decide(
        self, fix_id: str, approved: bool, reviewer: str, reason: str, now: float
    ) -> FixRecord:
        """awaiting_approval → approved/rejected; FixNotFound / FixConflict otherwise. Returns
        the record as it was before (it holds the task token)."""
        current = self.get(fix_id)
        if current is None:
            raise FixNotFound(f"no fix {fix_id!r}")
        status = "approved" if approved else "rejected"
        ok = current.status == "awaiting_approval" and self._update(
            fix_id,
            {"status": status, "reviewer": reviewer, "reason": reason, "decided_at": now},
            allowed=("awaiting_approval",),
            now=now,
        )
        if not ok:
            latest = self.get(fix_id) or current
            who = f" by {latest.reviewer}" if latest.reviewer else ""
            raise FixConflict(
                f"fix {fix_id} is not awaiting approval (status {latest.status}{who})",
                latest.status,
            )
        return current

    def undo_decision(self, fix_id: str, now: float) -> None:
        """Back to awaiting_approval after the decision could not be delivered (retryable)."""
        self._update(
            fix_id,
            {"status": "awaiting_approval"},
            allowed=("approved", "rejected"),
            now=now,
            remove=("reviewer", "reason", "decided_at"),
        )

    def expire(self, fix_id: str, now: float) -> None:
        self._update(
            fix_id,
            {"status": "expired"},
            allowed=("approved", "rejected", "awaiting_approval"),
            now=now,
            remove=("task_token",),
        )

    def finish(self, fix_id: str, status: str, fields: dict[str, Any], now: float) -> None:
        """The workflow's last word: opened, rejected or failed (the token is dropped)."""
        allowed = {
            "opened": ("approved",),
            "rejected": ("rejected",),
            "failed": ("collecting", "awaiting_approval", "approved", "rejected", "failed"),
        }[status]
        ok = self._update(
            fix_id, {"status": status, **fields}, allowed=allowed, now=now, remove=("task_token",)
        )
        if not ok:
            current = self.get(fix_id)
            if current is None or current.status != status:  # a repeat of the same finish is ok
                raise FixConflict(
                    f"fix {fix_id} cannot become {status} (status "
                    f"{current.status if current else 'missing'})",
                    current.status if current else None,
                )
