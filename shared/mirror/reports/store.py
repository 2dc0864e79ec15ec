"""Where reports live: the reports table (DynamoDB), transcripts in S3, fix starts in Step
Functions.

The reports table (`ReportsTable` in template.yaml; keys `pk`, `sk`, TTL `expires_at`):

    pk = CALL#{tenant}#{call}  sk = REPORT              the whole report (JSON in `data`)
    pk = CALL#{tenant}#{call}  sk = PATTERN#{pattern}   one per report entry, in the GSI
    pk = COUNT#{agent}#{pattern}#{window}  sk = COUNT   `n`: calls of the agent with the pattern
    pk = FIX#{fix id}          sk = FIX                 a fix workflow (`mirror.fixes.store`)

The GSI `ByAgentPattern` (HASH `agent_id`, RANGE `pattern_sk`
= `{pattern}#{window}#{ended_at:017.3f}#{call}`) holds only the entry items, so "the reports of
agent A", "of A with pattern P" and "of A with P in window W" are each one Query
(`begins_with`), newest first.

A report is written once per call: the report item (conditional on not existing), its entries
and the counter increments go in one transaction, so a redelivered event writes nothing and
a counter never counts a call twice or misses one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from urllib.parse import quote

from mirror.aws import DynamoDBTable, LazyClient, error_code
from mirror.reports.models import CallReport, ReportEntry, TranscriptRef
from mirror.state.base import attr_n, attr_s

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"
REPORT_SK = "REPORT"
PATTERN_PREFIX = "PATTERN#"
COUNT_SK = "COUNT"
GSI_NAME = "ByAgentPattern"
GSI_HASH = "agent_id"
GSI_RANGE = "pattern_sk"
MAX_REPORT_BYTES = 350_000
"""The report item's `data`; DynamoDB items hold 400 KB including names and the other fields."""
MAX_ENTRIES = 45
"""1 report + entries + counters must fit one transaction (100 items)."""
TRANSACTION_ATTEMPTS = 5


class ReportStoreError(Exception):
    """The reports table, the bucket or Step Functions failed; the event should be retried."""


def report_pk(tenant_id: str, call_id: str) -> str:
    if "#" in tenant_id:
        raise ValueError("tenant_id must not contain '#'")
    return f"CALL#{tenant_id}#{call_id}"


def count_pk(agent_id: str, pattern_id: str, window: str) -> str:
    return f"COUNT#{agent_id}#{pattern_id}#{window}"


def pattern_sk(pattern_id: str, window: str, ended_at: float, call_id: str) -> str:
    return f"{pattern_id}#{window}#{ended_at:017.3f}#{call_id}"


@dataclass(frozen=True)
class StoredEntry:
    """One report entry as the GSI returns it."""

    tenant_id: str
    call_id: str
    ended_at: float
    window: str
    entry: ReportEntry


class DynamoDBReportStore(DynamoDBTable):
    def _do(self, what: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, method)(
                TableName=self.table_name, **kwargs
            )
            return response
        except Exception as e:
            raise ReportStoreError(f"{what}: {error_code(e) or type(e).__name__}") from e

    def get_report(self, tenant_id: str, call_id: str) -> CallReport | None:
        item = self._do(
            "read report",
            "get_item",
            Key={PK: attr_s(report_pk(tenant_id, call_id)), SK: attr_s(REPORT_SK)},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        return CallReport.model_validate_json(item["data"]["S"])

    def put_report(self, report: CallReport, *, now: float, ttl_s: int, count_ttl_s: int) -> bool:
        """Write the report, its entries and its counters atomically; False (nothing written)
        when the call already has a report."""
        if len(report.entries) > MAX_ENTRIES:
            raise ValueError(f"a report holds at most {MAX_ENTRIES} entries")
        data = report.model_dump_json()
        if len(data.encode()) > MAX_REPORT_BYTES:
            raise ValueError(
                f"the report is {len(data.encode())} bytes; at most {MAX_REPORT_BYTES} fit "
                "(move the transcript to the bucket)"
            )
        pk = report_pk(report.tenant_id, report.call_id)
        expires = attr_n(int(now + ttl_s))
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": {
                        PK: attr_s(pk),
                        SK: attr_s(REPORT_SK),
                        "data": attr_s(data),
                        "agent_id_of_report": attr_s(report.agent_id),
                        "ended_at": attr_n(report.ended_at),
                        "window": attr_s(report.window),
                        TTL_ATTRIBUTE: expires,
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        for e in report.entries:
            items.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": {
                            PK: attr_s(pk),
                            SK: attr_s(PATTERN_PREFIX + e.pattern_id),
                            GSI_HASH: attr_s(report.agent_id),
                            GSI_RANGE: attr_s(
                                pattern_sk(
                                    e.pattern_id, report.window, report.ended_at, report.call_id
                                )
                            ),  # fmt: skip
                            "tenant_id": attr_s(report.tenant_id),
                            "call_id": attr_s(report.call_id),
                            "ended_at": attr_n(report.ended_at),
                            "window": attr_s(report.window),
                            "data": attr_s(e.model_dump_json()),
                            TTL_ATTRIBUTE: expires,
                        },
                    }
                }
            )
        for pid in report.counted_patterns:
            items.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": {
                            PK: attr_s(count_pk(report.agent_id, pid, report.window)),
                            SK: attr_s(COUNT_SK),
                        },
                        "UpdateExpression": "SET #e = :e ADD #n :one",
                        "ExpressionAttributeNames": {"#n": "n", "#e": TTL_ATTRIBUTE},
                        "ExpressionAttributeValues": {
                            ":one": attr_n(1),
                            ":e": attr_n(int(now + count_ttl_s)),
                        },
                    }
                }
            )
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=items)
                return True
            except Exception as e:
                if error_code(e) != "TransactionCanceledException":
                    raise ReportStoreError(
                        f"write report: {error_code(e) or type(e).__name__}"
                    ) from e
                # A ClientError (error_code read its code), so `response` is its dict.
                response: dict[str, Any] = getattr(e, "response", {})
                reasons = [r.get("Code") for r in response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if attempt + 1 == TRANSACTION_ATTEMPTS:
                    raise ReportStoreError(f"write report: cancelled ({reasons})") from e
                time.sleep(0.05 * 2**attempt)  # another report was counting the same pattern
        raise AssertionError("unreachable")

    def get_count(self, agent_id: str, pattern_id: str, window: str) -> int:
        item = self._do(
            "read counter",
            "get_item",
            Key={PK: attr_s(count_pk(agent_id, pattern_id, window)), SK: attr_s(COUNT_SK)},
            ConsistentRead=True,
        ).get("Item")
        return int(item["n"]["N"]) if item else 0

    def list_entries(
        self,
        agent_id: str,
        pattern_id: str | None = None,
        window: str | None = None,
        *,
        limit: int = 20,
    ) -> list[StoredEntry]:
        """The agent's report entries, newest first: all of them, those of one pattern, or of
        one pattern in one window."""
        if window is not None and pattern_id is None:
            raise ValueError("a window needs a pattern")
        prefix = (
            ""
            if pattern_id is None
            else f"{pattern_id}#" + ("" if window is None else f"{window}#")
        )
        condition = "#a = :a"
        values: dict[str, Any] = {":a": attr_s(agent_id)}
        if prefix:
            condition += " AND begins_with(#r, :p)"
            values[":p"] = attr_s(prefix)
        names = {"#a": GSI_HASH} | ({"#r": GSI_RANGE} if prefix else {})
        response = self._do(
            "query reports",
            "query",
            IndexName=GSI_NAME,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
            Limit=limit,
        )
        return [
            StoredEntry(
                tenant_id=i["tenant_id"]["S"],
                call_id=i["call_id"]["S"],
                ended_at=float(i["ended_at"]["N"]),
                window=i["window"]["S"],
                entry=ReportEntry.model_validate_json(i["data"]["S"]),
            )
            for i in response.get("Items", [])
        ]


class S3TranscriptStore(LazyClient):
    """Transcripts too large for the report item: `transcripts/{tenant}/{call}.json`. The key
    and the content are functions of the call, so a retried write puts the same object."""

    service = "s3"
    read_timeout_s = 10.0

    def __init__(self, bucket: str, *, client: Any | None = None, prefix: str = "transcripts/"):
        if not bucket:
            raise ValueError("bucket is required")
        self.bucket = bucket
        self.prefix = prefix
        self._client = client

    def key(self, tenant_id: str, call_id: str) -> str:
        return f"{self.prefix}{quote(tenant_id, safe='')}/{quote(call_id, safe='')}.json"

    def put(self, tenant_id: str, call_id: str, body: bytes, messages: int) -> TranscriptRef:
        key = self.key(tenant_id, call_id)
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        except Exception as e:
            raise ReportStoreError(f"write transcript: {error_code(e) or type(e).__name__}") from e
        return TranscriptRef(
            bucket=self.bucket,
            key=key,
            bytes=len(body),
            sha256=sha256(body).hexdigest(),
            messages=messages,
        )

    def get(self, ref: TranscriptRef) -> list[Any]:
        try:
            body = self.client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read()
        except Exception as e:
            raise ReportStoreError(f"read transcript: {error_code(e) or type(e).__name__}") from e
        messages: list[Any] = json.loads(body)  # put() wrote a JSON list
        return messages


@dataclass(frozen=True)
class FixStart:
    name: str
    execution_arn: str
    started: bool
    """False when Step Functions answered ExecutionAlreadyExists (an execution of that name
    exists with another input or has closed). A start with the name and input of a running
    execution returns that execution (StartExecution is idempotent), so True does not mean
    this call created it: only that exactly one execution of the name exists."""


class FixWorkflowStarter(LazyClient):
    """StartExecution of the FixPr state machine under a deterministic name: of any number of
    concurrent or repeated starts for one (agent, pattern, window), one execution runs."""

    service = "stepfunctions"

    def __init__(self, state_machine_arn: str, *, client: Any | None = None) -> None:
        if ":stateMachine:" not in state_machine_arn:
            raise ValueError("state_machine_arn must be a Step Functions state machine ARN")
        self.state_machine_arn = state_machine_arn
        self._client = client

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"

    def start(self, name: str, payload: dict[str, Any]) -> FixStart:
        try:
            response = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(payload)
            )
        except Exception as e:
            if error_code(e) == "ExecutionAlreadyExists":
                return FixStart(name, self.execution_arn(name), started=False)
            raise ReportStoreError(
                f"start fix workflow: {error_code(e) or type(e).__name__}"
            ) from e
        return FixStart(name, response["executionArn"], started=True)
