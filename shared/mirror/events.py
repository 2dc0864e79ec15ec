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
import threading
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirror.models import Identifier, TenantId

CALL_ENDED = "CallEnded"
SOURCE_BRIDGE = "mirror.bridge"
SOURCE_API = "mirror.api"
EVENT_SOURCES = (SOURCE_BRIDGE, SOURCE_API)
"""Who may send CallEnded: the bridge (Plivo calls) and the Api (`POST /v1/calls/{id}/end`)."""

AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
"""Agent ids prefix counter keys and execution names, so the same alphabet as tenant ids."""


class CallEndedDetail(BaseModel):
    """The `detail` of a CallEnded event, also accepted on its own (a direct invoke)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: TenantId
    call_id: Identifier
    ended_at: float = Field(ge=0)
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


class EventPublishError(RuntimeError):
    """An event was not put on the bus (the call failed, or the bus refused the entry)."""


class EventBridgePublisher:
    """`events.put_events` of one entry on `bus_name`, from `source`; blocking (run it off an
    event loop). The client comes from `mirror.aws.client` (short timeouts, 3 attempts) on first
    use; a failed call or a refused entry raises `EventPublishError` naming the error class or
    code (never the detail)."""

    def __init__(
        self,
        bus_name: str,
        source: str,
        *,
        client: Any = None,
        region_name: str | None = None,
    ) -> None:
        if not bus_name:
            raise ValueError("bus_name is required")
        if source not in EVENT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(EVENT_SOURCES)}")
        self.bus_name = bus_name
        self.source = source
        self.region_name = region_name
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

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        entry = {
            "Source": self.source,
            "DetailType": detail_type,
            "Detail": json.dumps(dict(detail)),
            "EventBusName": self.bus_name,
        }
        try:
            response = self.client().put_events(Entries=[entry])
        except Exception as e:  # noqa: BLE001 - botocore errors of every kind
            raise EventPublishError(f"{detail_type} not published ({type(e).__name__})") from e
        if response.get("FailedEntryCount"):
            code = (response.get("Entries") or [{}])[0].get("ErrorCode")
            raise EventPublishError(f"{detail_type} not published ({code})")
