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
- `on_call_ended` is the seam for the CallEnded EventBridge event (a later issue). It is called
  after `ended_at` is stored, by the request that stored it; today it does nothing.

Importing this module does no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mirror.models import CallContext, Message, Verdict
from mirror.state import StateStore
from mirror.state.base import MetaValue

ENDED_AT_FIELD = "ended_at"
"""The META field that marks a call ended (epoch seconds)."""


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


def on_call_ended(ctx: CallContext, meta: Mapping[str, MetaValue]) -> None:
    """Called once a request has stored a call's `ended_at` (`meta` as read back after it).

    The seam for the CallEnded EventBridge event, which a later issue adds; until then a call's
    end is only the `ended_at` field recorded in its META. Nothing is published here.
    """


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

    def end_call(self, ctx: CallContext, ttl_s: int) -> CallEnded | None:
        """Mark the call ended, once; None when the call is unknown (nothing is written).

        An ended call is returned as it is, with its first `ended_at`. Raises StateStoreError
        when the store cannot be used."""
        now = self.clock()
        meta = self.store.get_call_meta(ctx, now)
        if meta is None:
            return None
        ended_at = _number(meta.get(ENDED_AT_FIELD))
        if ended_at is None:
            self.store.put_call_meta(ctx, {ENDED_AT_FIELD: now}, now, ttl_s)
            # Read back: a concurrent end may have written after us; report what is stored.
            meta = self.store.get_call_meta(ctx, now) or {**meta, ENDED_AT_FIELD: now}
            ended_at = _number(meta.get(ENDED_AT_FIELD))
            if ended_at is None:  # not a number (written by something else): ours stands
                ended_at = now
            self.on_ended(ctx, meta)
        return CallEnded(
            call_id=ctx.call_id,
            tenant_id=ctx.tenant_id,
            ended_at=ended_at,
            started_at=_number(meta.get("started_at")),
        )
