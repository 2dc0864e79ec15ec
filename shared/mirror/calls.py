"""A call as a whole: reading its state, and ending it (the Api function's `/v1/calls` routes).

Why it is its own module: the HTTP layer only parses and serializes, so the rules live here and
any other entry point (a direct-invoke function, the bridge) gets the same behaviour.

- A call is *known* while its META item is live: ScoreTurn creates it with the first recorded
  turn, GenerateCorrection when it stores a correction. The GateTool alone does not, so a call
  that was only gated is unknown here. Nothing is ever created for an unknown call: reading or
  ending one says so (`None`; the API answers 404).
- Ending a call records `ended_at` (epoch seconds) in its META. A call that has already ended
  keeps its first `ended_at`, so ending it again returns the same result. Two *concurrent*
  first ends are not serialized (the store has no conditional metadata write): the stored
  `ended_at` is the last writer's and each request returns what it reads back after its write.
- `on_ended` publishes the CallEnded event (`EventBridgeCallEnded`: the same detail the bridge
  sends, source `mirror.api`; the Api function wires it when EVENT_BUS_NAME is set; the default
  `on_call_ended` publishes nothing). It runs after `ended_at` is stored, by the request that
  stored it. At least once: the first end stores `ended_event_pending: true` with `ended_at`
  and clears it after a successful publish, so when publishing failed (the request raised
  CallEventError) the client's retry publishes again. PostCallReport is idempotent per call, so
  a repeated event costs nothing. The publisher retries a refused entry with backoff first
  (`mirror.events.RetryPolicy`); when no client retry comes, the CallEndedSweeper function
  re-sends the event (`mirror.sweeper`: the first end also writes the pending index keys). A
  call ended by the bridge (which sends its own event) has no pending flag unless the bridge
  could not send it (the sweeper re-sends that one too), and ending it through the Api
  publishes nothing.

Importing this module does no I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mirror.events import (
    CALL_ENDED,
    PENDING_FIELD,
    SOURCE_API,
    EventBridgePublisher,
    EventPublishError,
    call_ended_detail,
    pending_fields,
)
from mirror.models import CallContext, Message, Verdict
from mirror.state import StateStore
from mirror.state.base import MetaValue

_log = logging.getLogger(__name__)

ENDED_AT_FIELD = "ended_at"
"""The META field that marks a call ended (epoch seconds)."""
EVENT_PENDING_FIELD = PENDING_FIELD
"""True from the first end until its CallEnded event was published."""
EVENT_SOURCE = SOURCE_API
CALL_ENDED_DETAIL_TYPE = CALL_ENDED


class CallEventError(Exception):
    """The CallEnded event could not be published; the end is stored, a retry publishes."""


class TurnVerdict(BaseModel):
    """One recorded turn's verdict, in recording order (`seq` increases)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    turn_id: str
    seq: int
    recorded_at: float
    verdict: Verdict


class CallState(BaseModel):
    """What `GET /v1/calls/{call_id}` returns: the call's metadata, history and verdicts."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    call_id: str
    tenant_id: str
    ended: bool
    ended_at: float | None = None
    started_at: float | None = None
    last_turn_at: float | None = None
    meta: dict[str, MetaValue] = Field(default_factory=dict)
    """Every metadata field as stored (the timestamps above included)."""
    history: list[Message] = Field(default_factory=list)
    """The last `history_limit` messages, oldest first."""
    verdicts: list[TurnVerdict] = Field(default_factory=list)


class CallEnded(BaseModel):
    """What `POST /v1/calls/{call_id}/end` returns; the same for every end of the same call."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    call_id: str
    tenant_id: str
    ended: bool = True
    ended_at: float
    started_at: float | None = None


class OverrideNote(BaseModel):
    """What `POST /v1/calls/{call_id}/override:take` returns: the one-shot note GenerateCorrection
    stored for the agent's next turn, handed out once."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    call_id: str
    tenant_id: str
    note: str | None
    """The note, now deleted from the store; null when none is pending (none was stored, it was
    taken already, or it expired)."""


def on_call_ended(ctx: CallContext, meta: Mapping[str, MetaValue]) -> None:
    """Called once a request has stored a call's `ended_at` (`meta` as read back after it).

    The default publishes nothing (a local run without an event bus); see EventBridgeCallEnded.
    """


class EventBridgeCallEnded:
    """`on_ended` that puts the CallEnded event on an EventBridge bus: the detail the bridge
    sends (`mirror.events.call_ended_detail`), source `mirror.api`, `reason` the META's
    `end_reason` or "api", through the one publisher (`mirror.events.EventBridgePublisher`: a
    `mirror.aws` client with short timeouts, built on first use). A failed put raises
    CallEventError."""

    def __init__(self, bus_name: str, *, client: Any = None) -> None:
        self.publisher = EventBridgePublisher(bus_name, EVENT_SOURCE, client=client)
        self.bus_name = bus_name

    def __call__(self, ctx: CallContext, meta: Mapping[str, MetaValue]) -> None:
        reason = meta.get("end_reason")
        ended_at = meta.get(ENDED_AT_FIELD)
        detail = call_ended_detail(
            ctx.tenant_id,
            ctx.call_id,
            ended_at if isinstance(ended_at, int | float) else None,
            reason if isinstance(reason, str) and reason else "api",
        )
        try:
            retries = self.publisher.publish(CALL_ENDED_DETAIL_TYPE, detail)
        except EventPublishError as e:
            raise CallEventError(str(e)) from None
        if retries:
            _log.info(
                "CallEnded published after retries",
                extra={"call_id": ctx.call_id, "tenant_id": ctx.tenant_id, "retries": retries},
            )


def _number(value: MetaValue) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass
class CallsService:
    """Reads and ends calls in a state store. Time comes from `clock` (epoch seconds)."""

    store: StateStore
    clock: Callable[[], float] = time.time
    on_ended: Callable[[CallContext, Mapping[str, MetaValue]], None] = on_call_ended

    def get_call(self, ctx: CallContext, history_limit: int) -> CallState | None:
        """The call's state, or None when the call is unknown (no live META).

        Raises StateStoreError when the store cannot be read."""
        now = self.clock()
        meta = self.store.get_call_meta(ctx, now)
        if meta is None:
            return None
        history = self.store.get_history(ctx, now, history_limit)
        verdicts = [
            TurnVerdict(turn_id=v.turn_id, seq=v.seq, recorded_at=v.recorded_at, verdict=v.verdict)
            for v in self.store.list_verdicts(ctx, now)
        ]
        ended_at = _number(meta.get(ENDED_AT_FIELD))
        return CallState(
            call_id=ctx.call_id,
            tenant_id=ctx.tenant_id,
            ended=ended_at is not None,
            ended_at=ended_at,
            started_at=_number(meta.get("started_at")),
            last_turn_at=_number(meta.get("last_turn_at")),
            meta=meta,
            history=history,
            verdicts=verdicts,
        )

    def take_override(self, ctx: CallContext) -> OverrideNote | None:
        """The call's pending override note, read and deleted at once (a second take gets
        null); None when the call is unknown. Raises StateStoreError when the store fails."""
        now = self.clock()
        if self.store.get_call_meta(ctx, now) is None:
            return None
        note = self.store.take_override(ctx, now)
        return OverrideNote(call_id=ctx.call_id, tenant_id=ctx.tenant_id, note=note)

    def end_call(self, ctx: CallContext, ttl_s: int) -> CallEnded | None:
        """Mark the call ended, once; None when the call is unknown (nothing is written).

        An ended call is returned as it is, with its first `ended_at`. Raises StateStoreError
        when the store cannot be used, CallEventError (from `on_ended`) when the CallEnded event
        could not be published: the end is stored and a retry publishes again."""
        now = self.clock()
        meta = self.store.get_call_meta(ctx, now)
        if meta is None:
            return None
        ended_at = _number(meta.get(ENDED_AT_FIELD))
        if ended_at is None:
            # pending_fields: the flag, plus the sparse index keys the sweeper reads
            # (`mirror.sweeper`) should this request's publish and the client's retries fail.
            self.store.put_call_meta(
                ctx, {ENDED_AT_FIELD: now, **pending_fields(SOURCE_API, now)}, now, ttl_s
            )
            # Read back: a concurrent end may have written after us; report what is stored.
            meta = self.store.get_call_meta(ctx, now) or {**meta, ENDED_AT_FIELD: now}
            ended_at = _number(meta.get(ENDED_AT_FIELD))
            if ended_at is None:  # not a number (written by something else): ours stands
                ended_at = now
        if meta.get(EVENT_PENDING_FIELD) is True:
            self.on_ended(ctx, meta)  # raises CallEventError: the flag stays for the retry
            self.store.put_call_meta(ctx, {EVENT_PENDING_FIELD: False}, now, ttl_s)
        return CallEnded(
            call_id=ctx.call_id,
            tenant_id=ctx.tenant_id,
            ended_at=ended_at,
            started_at=_number(meta.get("started_at")),
        )
