"""The CallEnded event: its one model, and the one publisher both senders use.

Two senders, told apart by the event's `source`: the bridge (`mirror.bridge`, a Plivo call that
ended; `mirror_bridge.call_end.EventBridgeSink`) and the Api (`mirror.api`,
`POST /v1/calls/{id}/end`; `mirror.calls.EventBridgeCallEnded`). PostCallReport reads what
either sent with `parse_call_ended` (`mirror.reports.models` re-exports it): the detail built
by `call_ended_detail` is exactly what `CallEndedDetail` reads.

Importing this module does no I/O; boto3 is loaded when the first event is published.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirror.models import Identifier, TenantId

logger = logging.getLogger(__name__)

CALL_ENDED = "CallEnded"
SOURCE_BRIDGE = "mirror.bridge"
SOURCE_API = "mirror.api"
EVENT_SOURCES = (SOURCE_BRIDGE, SOURCE_API)
"""Who may send CallEnded: the bridge (Plivo calls) and the Api (`POST /v1/calls/{id}/end`)."""

AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
"""Agent ids prefix counter keys and execution names, so the same alphabet as tenant ids."""


MAX_ENDED_AT = 253_402_300_799.0
"""The last second of year 9999 (UTC): the latest time Python's datetime can represent."""


class CallEndedDetail(BaseModel):
    """The `detail` of a CallEnded event, also accepted on its own (a direct invoke)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: TenantId
    call_id: Identifier
    ended_at: float = Field(ge=0, le=MAX_ENDED_AT, allow_inf_nan=False)
    """Epoch seconds; finite and at most `MAX_ENDED_AT` (the report window and the pattern
    keys derive from it: 1e300 or inf used to crash PostCallReport on every delivery)."""
    reason: Annotated[str, Field(max_length=128)] = ""
    counts: dict[str, float] = Field(default_factory=dict)
    agent_id: AgentId | None = None
    """Optional: the agent that handled the call (default: the call's `agent_id` META field,
    else the tenant id)."""


class CallEndedEnvelope(BaseModel):
    """The EventBridge envelope around a CallEnded detail (what the rule delivers)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    source: str
    detail_type: str = Field(alias="detail-type")
    detail: CallEndedDetail

    @field_validator("detail_type")
    @classmethod
    def _call_ended(cls, value: str) -> str:
        if value != CALL_ENDED:
            raise ValueError(f"detail-type must be {CALL_ENDED!r}")
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in EVENT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(EVENT_SOURCES)}")
        return value


def parse_call_ended(event: Any) -> CallEndedDetail:
    """An EventBridge envelope (it has `detail`) or a bare detail; raises ValidationError."""
    if isinstance(event, dict) and "detail" in event:
        return CallEndedEnvelope.model_validate(event).detail
    return CallEndedDetail.model_validate(event)


def call_ended_detail(
    tenant_id: str,
    call_id: str,
    ended_at: float | None,
    reason: str,
    counts: Mapping[str, int | float] | None = None,
) -> dict[str, Any]:
    """The detail both senders put on the bus (`CallEndedDetail`'s fields), as plain JSON
    values: the counts keep their own numbers (an int stays an int on the wire)."""
    return {
        "tenant_id": tenant_id,
        "call_id": call_id,
        "ended_at": ended_at,
        "reason": reason,
        "counts": dict(counts or {}),
    }


PENDING_FIELD = "ended_event_pending"
"""META field: True while a call's CallEnded has not been published (`mirror.calls` sets it
with the Api's first end; the bridge when its retries ran out)."""
PENDING_SOURCE_FIELD = "ended_event_source"
"""META field (S), the hash key of `PENDING_INDEX`: who must re-send the CallEnded."""
PENDING_SINCE_FIELD = "ended_event_pending_since"
"""META field (N, epoch seconds), the range key of `PENDING_INDEX`: when it became pending."""
PENDING_INDEX = "CallEndedPendingIndex"
"""The sparse GSI of `CallStateTable` (template.yaml) over the two fields above: only a META
marked pending has them, so the sweeper (`functions/call_ended_sweeper`) reads just those."""


def pending_fields(source: str, now: float) -> dict[str, Any]:
    """The META fields that mark a call's CallEnded pending for the sweeper."""
    if source not in EVENT_SOURCES:
        raise ValueError(f"source must be one of {', '.join(EVENT_SOURCES)}")
    return {PENDING_FIELD: True, PENDING_SOURCE_FIELD: source, PENDING_SINCE_FIELD: now}


class EventPublishError(RuntimeError):
    """An event was not put on the bus (the call failed, or the bus refused the entry), after
    every attempt the publisher's budget allowed. `attempts` says how many were made."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a publisher retries one event: up to `attempts` tries, sleeping `base_delay_s`
    doubled after each failure (at most `max_delay_s`, with full jitter), and never starting
    an attempt (or a sleep) that would end after `budget_s` from the first one. The defaults
    fit inside the bridge's 5 s close budget with the client's own 1 s connect / 2 s read
    timeouts."""

    attempts: int = 4
    base_delay_s: float = 0.1
    max_delay_s: float = 1.0
    budget_s: float = 4.0

    def delay(self, failures: int) -> float:
        """The sleep after the `failures`-th failure (full jitter: 0..cap)."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (failures - 1)))
        return random.uniform(0, cap)  # noqa: S311 - jitter, not a secret


NO_RETRY = RetryPolicy(attempts=1)


class EventBridgePublisher:
    """`events.put_events` of one entry on `bus_name`, from `source`; blocking (run it off an
    event loop). The client comes from `mirror.aws.client` (short timeouts, 3 attempts) on first
    use. A refused entry (`FailedEntryCount`: throttling, an internal failure) or a failed call
    is retried with backoff under `retry` (`RetryPolicy`: botocore retries the call's own
    transport errors, but never a refused entry, which came back as a 200); when every attempt
    failed it raises `EventPublishError` naming the error class or code (never the detail).
    `publish` returns how many retries it took (0: the first attempt went through), so callers
    can count them (`CallEndedRetries`)."""

    def __init__(
        self,
        bus_name: str,
        source: str,
        *,
        client: Any = None,
        region_name: str | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not bus_name:
            raise ValueError("bus_name is required")
        if source not in EVENT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(EVENT_SOURCES)}")
        self.bus_name = bus_name
        self.source = source
        self.region_name = region_name
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._client = client
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from mirror.aws import client

                self._client = client(
                    "events",
                    connect_timeout_s=1.0,
                    read_timeout_s=2.0,
                    attempts=3,
                    region_name=self.region_name,
                )
            return self._client

    def _put_once(self, entry: dict[str, Any]) -> str | None:
        """None when the entry was accepted, else why not (an error class or code)."""
        try:
            response = self.client().put_events(Entries=[entry])
        except Exception as e:  # noqa: BLE001 - botocore errors of every kind
            return type(e).__name__
        if response.get("FailedEntryCount"):
            return str((response.get("Entries") or [{}])[0].get("ErrorCode") or "FailedEntry")
        return None

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> int:
        entry = {
            "Source": self.source,
            "DetailType": detail_type,
            "Detail": json.dumps(dict(detail)),
            "EventBusName": self.bus_name,
        }
        policy = self.retry
        started = self._clock()
        attempts = 0
        while True:
            attempts += 1
            error = self._put_once(entry)
            if error is None:
                return attempts - 1
            delay = policy.delay(attempts)
            spent = self._clock() - started
            if attempts >= policy.attempts or spent + delay >= policy.budget_s:
                raise EventPublishError(
                    f"{detail_type} not published ({error}; {attempts} attempt(s))", attempts
                )
            logger.warning(
                "event not published, retrying",
                extra={
                    "detail_type": detail_type,
                    "call_id": detail.get("call_id"),
                    "error": error,
                    "attempt": attempts,
                },
            )
            self._sleep(delay)
