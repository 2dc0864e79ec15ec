"""AWS faults injected under moto: a botocore `before-send` hook that fails chosen operations the
way the service or the network does (a throttle, a 500, a refused PutEvents entry, a connection
error, a read timeout), inside botocore's retry loop, so the clients' retry settings apply as
they would against AWS.

    faults = AwsFaults({"GetItem", "Query"}, kind="throttle")
    faults.install(monkeypatch)  # every client mirror.aws builds from now on goes through it
    ...
    faults.fired  # how many requests it failed; faults.seen: every operation it saw
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

FAULT_KINDS = ("throttle", "server_error", "connection", "read_timeout")


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self._body


def _response(url: str, status: int, body: dict[str, Any]) -> Any:
    from botocore.awsrequest import AWSResponse

    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "fault"}
    return AWSResponse(url, status, headers, _Raw(json.dumps(body).encode()))


def operation_of(request: Any) -> str:
    """The operation of a JSON-protocol request (DynamoDB, EventBridge, ...), else ''."""
    target = request.headers.get("X-Amz-Target") or b""
    if isinstance(target, bytes):
        target = target.decode()
    if target:
        return str(target).rsplit(".", 1)[-1]
    return ""


@dataclass
class AwsFaults:
    operations: set[str]
    """Operation names to fail ("GetItem", "PutEvents", ...); "*" fails every one."""
    kind: str = "throttle"
    times: int | None = None
    """Fail this many matching requests, then let them through (None: always)."""
    fired: int = 0
    seen: list[str] = field(default_factory=list)
    enabled: bool = True

    def hook(self, request: Any, **_: Any) -> Any:
        op = operation_of(request)
        self.seen.append(op)
        if not self.enabled or not (op in self.operations or "*" in self.operations):
            return None
        if self.times is not None and self.fired >= self.times:
            return None
        self.fired += 1
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        if self.kind == "connection":
            raise EndpointConnectionError(endpoint_url=request.url)
        if self.kind == "read_timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if self.kind == "server_error":
            return _response(request.url, 500, {"__type": "InternalServerError", "message": "x"})
        if self.kind == "failed_entry" and op == "PutEvents":
            entry = {"ErrorCode": "InternalFailure", "ErrorMessage": "injected"}
            return _response(request.url, 200, {"FailedEntryCount": 1, "Entries": [entry]})
        code = "ProvisionedThroughputExceededException" if op else "ThrottlingException"
        return _response(request.url, 400, {"__type": f"com.amazonaws#{code}", "message": "x"})

    def attach(self, client: Any) -> Any:
        """Fail the requests of this one client; returns it."""
        client.meta.events.register_first("before-send", self.hook)
        return client

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every client `mirror.aws.client()` builds from now on (the handlers' lazy clients)
        goes through the hook: a fresh process-wide session with it registered."""
        import boto3
        from botocore.retries.standard import ExponentialBackoff

        import mirror.aws

        # botocore's retries still happen (their count is what is under test), without their
        # jittered sleeps, which would make thousands of cases take hours
        monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
        session = boto3.session.Session()
        session.events.register_first("before-send", self.hook)  # before moto's
        monkeypatch.setattr(mirror.aws, "_SESSION", session)
