"""Re-sending the CallEnded events that were never published (the CallEndedSweeper function).

A CallEnded that could not be put on the bus is not dropped: its call's META is marked
pending (`mirror.events.pending_fields`: `ended_event_pending: true` plus the keys of the
sparse `CallEndedPendingIndex` GSI, `ended_event_source` and `ended_event_pending_since`). The
bridge marks it when its retries ran out at the end of a Plivo call; the Api marks every first
end (`mirror.calls`) and clears the flag once its publish went through.

The sweeper queries the index per source for marks older than `min_age_s` (younger ones may
still be published by their own sender, e.g. the client retrying `POST /end`), rebuilds the
detail from the META (`ended_at`, `end_reason`, the bridge's `bridge_*` counts), re-publishes
it with its original source and removes the index keys (so the GSI stays sparse) with
`ended_event_pending: false`, conditioned on the mark it read: a newer mark is kept. A META
whose flag was already cleared (the Api published it) only loses its index keys. A failed
publish keeps the mark for the next run. PostCallReport is idempotent per call, so a repeat
costs nothing.

Importing this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mirror.events import (
    CALL_ENDED,
    EVENT_SOURCES,
    PENDING_FIELD,
    PENDING_INDEX,
    PENDING_SINCE_FIELD,
    PENDING_SOURCE_FIELD,
    SOURCE_API,
    call_ended_detail,
)
from mirror.state.base import INTERNAL_META_FIELDS, META_SK, PK, SK, attr_n, scalar_from_attr
from mirror.state.base import MetaValue as MetaValue

BRIDGE_COUNT_PREFIX = "bridge_"
"""The bridge stores its CallEnded counts on META as `bridge_<name>` (`mirror_bridge.call_end`)."""


@dataclass(frozen=True, slots=True)
class PendingCallEnded:
    """One META marked pending, as the index returned it."""

    tenant_id: str
    call_id: str
    source: str
    since: float
    meta: dict[str, MetaValue] = field(default_factory=dict)

    @property
    def still_pending(self) -> bool:
        return self.meta.get(PENDING_FIELD) is True

    def detail(self) -> dict[str, Any]:
        """The CallEnded detail its sender would have sent."""
        ended_at = self.meta.get("ended_at")
        reason = self.meta.get("end_reason")
        counts = {
            k.removeprefix(BRIDGE_COUNT_PREFIX): v
            for k, v in self.meta.items()
            if k.startswith(BRIDGE_COUNT_PREFIX)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        }
        return call_ended_detail(
            self.tenant_id,
            self.call_id,
            float(ended_at)
            if isinstance(ended_at, int | float) and not isinstance(ended_at, bool)
            else self.since,
            reason
            if isinstance(reason, str) and reason
            else ("api" if self.source == SOURCE_API else ""),
            counts,
        )


class PendingIndex(Protocol):
    def find(self, source: str, before: float, limit: int) -> list[PendingCallEnded]: ...

    def clear(self, pending: PendingCallEnded) -> bool:
        """Remove the mark it was read with; False when a newer mark (or no META) is there."""
        ...


class Publisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> int: ...


def split_key(pk: str) -> tuple[str, str]:
    """`tenant#call` back into its parts (`mirror.state.base.call_key`: tenants have no '#')."""
    tenant_id, sep, call_id = pk.partition("#")
    if not sep or not tenant_id or not call_id:
        raise ValueError(f"not a call key: {pk[:80]!r}")
    return tenant_id, call_id


class DynamoDBPendingIndex:
    """`PendingIndex` over the call table's `CallEndedPendingIndex` (projection ALL)."""

    def __init__(self, table_name: str, *, client: Any = None) -> None:
        if not table_name:
            raise ValueError("table_name is required")
        self.table_name = table_name
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            from mirror.aws import client

            self._client = client("dynamodb", connect_timeout_s=1.0, read_timeout_s=3.0)
        return self._client

    def _pages(self, source: str, before: float, page_size: int) -> Iterator[dict[str, Any]]:
        start: dict[str, Any] | None = None
        while True:
            extra: dict[str, Any] = {"Limit": page_size}
            if start:
                extra["ExclusiveStartKey"] = start
            page = self.client().query(
                TableName=self.table_name,
                IndexName=PENDING_INDEX,
                KeyConditionExpression="#src = :src AND #since <= :before",
                ExpressionAttributeNames={
                    "#src": PENDING_SOURCE_FIELD,
                    "#since": PENDING_SINCE_FIELD,
                },
                ExpressionAttributeValues={":src": {"S": source}, ":before": attr_n(before)},
                **extra,
            )
            yield from page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def find(self, source: str, before: float, limit: int) -> list[PendingCallEnded]:
        found: list[PendingCallEnded] = []
        for item in self._pages(source, before, min(max(limit, 1), 1000)):
            if item.get(SK, {}).get("S") != META_SK:
                continue
            try:
                tenant_id, call_id = split_key(item[PK]["S"])
                since = float(item[PENDING_SINCE_FIELD]["N"])
            except (KeyError, ValueError):
                continue  # not a mark this code wrote: leave it alone
            meta = {
                k: scalar_from_attr(v) for k, v in item.items() if k not in INTERNAL_META_FIELDS
            }
            found.append(PendingCallEnded(tenant_id, call_id, source, since, meta))
            if len(found) >= limit:
                break
        return found

    def clear(self, pending: PendingCallEnded) -> bool:
        try:
            self.client().update_item(
                TableName=self.table_name,
                Key={PK: {"S": f"{pending.tenant_id}#{pending.call_id}"}, SK: {"S": META_SK}},
                UpdateExpression="SET #flag = :false REMOVE #src, #since",
                ConditionExpression="#since = :since",
                ExpressionAttributeNames={
                    "#flag": PENDING_FIELD,
                    "#src": PENDING_SOURCE_FIELD,
                    "#since": PENDING_SINCE_FIELD,
                },
                ExpressionAttributeValues={
                    ":false": {"BOOL": False},
                    ":since": attr_n(pending.since),
                },
            )
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return False
            raise
        return True


@dataclass
class SweepResult:
    """What one run did, per call id: `swept` re-published, `cleared` already published (only
    the index keys removed), `failed` left pending for the next run (with the error class)."""

    swept: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: int = 0

    @property
    def found(self) -> int:
        return len(self.swept) + len(self.cleared) + len(self.failed)


def sweep(
    index: PendingIndex,
    publishers: dict[str, Publisher],
    *,
    now: float,
    min_age_s: float,
    limit: int,
) -> SweepResult:
    """Re-publish every CallEnded marked pending at least `min_age_s` ago (at most `limit` per
    source). Never raises for one call: its failure is recorded and the mark stays. Raises
    when the index cannot be read at all."""
    result = SweepResult()
    for source in EVENT_SOURCES:
        publisher = publishers.get(source)
        for pending in index.find(source, now - min_age_s, limit):
            key = pending.call_id
            try:
                if pending.still_pending:
                    if publisher is None:
                        raise LookupError(f"no publisher for {source}")
                    result.retries += publisher.publish(CALL_ENDED, pending.detail())
                    result.swept.append(key)
                else:
                    result.cleared.append(key)
                index.clear(pending)
            except Exception as e:  # noqa: BLE001 - one call's failure never stops the run
                if key in result.swept:
                    result.swept.remove(key)  # published, but the mark stays: sent again later
                result.cleared = [c for c in result.cleared if c != key]
                result.failed[key] = type(e).__name__
    return result
