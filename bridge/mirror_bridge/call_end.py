"""The end of a call: its final state written and one `CallEnded` event, exactly once.

A call can end from several paths at once (Plivo's `stop`, the agent hanging up, either socket
closing), so `CallEnd.finish` runs its work once and every other caller awaits that same run.
Both sinks are blocking boto3 clients and run in a bounded pool, never on the event loop.

CallEnded is never dropped silently: the publisher retries a refused entry with backoff inside
the close budget (`mirror.events.RetryPolicy`); when it still fails, the call's META is marked
pending (`mirror.events.pending_fields`) and the CallEndedSweeper function re-sends it. Each
outcome is logged with the call id and kept in `CallEndResult` (`event_retries`,
`event_pending`, `event_emitted`), which the bridge's metrics count per call
(`CallEndedRetries`, `CallEndedPending`, `CallEndedLost`: `mirror_bridge.metrics`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mirror.events import CALL_ENDED as CALL_ENDED_DETAIL_TYPE
from mirror.events import (
    SOURCE_BRIDGE,
    EventBridgePublisher,
    RetryPolicy,
    call_ended_detail,
    pending_fields,
)
from mirror.models import CallContext
from mirror.state import StateStore

logger = logging.getLogger(__name__)

EVENT_SOURCE = SOURCE_BRIDGE
CALL_ENDED = CALL_ENDED_DETAIL_TYPE
DEFAULT_STATE_TTL_S = 7 * 24 * 3600


@runtime_checkable
class EventSink(Protocol):
    async def put_event(self, detail_type: str, detail: Mapping[str, Any]) -> int | None:
        """Put one event; returns how many retries it took (None: not counted); raises when
        it could not."""
        ...


class EventBridgeSink:
    """`events.put_events` on a bus, source `mirror.bridge`, through the core's one publisher
    (`mirror.events.EventBridgePublisher`: a `mirror.aws` client, short timeouts), in a small
    pool off the loop; a refused entry is retried with backoff (`retry`), and when every
    attempt failed it raises (`EventPublishError`)."""

    def __init__(
        self,
        client: Any = None,
        *,
        bus_name: str = "default",
        executor: ThreadPoolExecutor | None = None,
        region_name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.publisher = EventBridgePublisher(
            bus_name, EVENT_SOURCE, client=client, region_name=region_name, retry=retry
        )
        self.bus_name = bus_name
        self._pool = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="events")

    async def put_event(self, detail_type: str, detail: Mapping[str, Any]) -> int | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self.publisher.publish, detail_type, dict(detail)
        )


@dataclass
class InMemoryEventSink:
    """For tests and the local run: every event, in order."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def put_event(self, detail_type: str, detail: Mapping[str, Any]) -> int | None:
        self.events.append((detail_type, json.loads(json.dumps(detail))))
        return 0


@runtime_checkable
class CallStateWriter(Protocol):
    async def write_final(self, ctx: CallContext, fields: Mapping[str, Any]) -> None: ...


class StoreStateWriter:
    """The call's META item through the core `StateStore` (`ended_at`, `end_reason`, counts)."""

    def __init__(
        self,
        store: StateStore,
        *,
        ttl_s: int = DEFAULT_STATE_TTL_S,
        executor: ThreadPoolExecutor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._pool = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="state")

    async def write_final(self, ctx: CallContext, fields: Mapping[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._pool,
            lambda: self.store.put_call_meta(ctx, dict(fields), self.clock(), self.ttl_s),
        )


@dataclass(frozen=True, slots=True)
class CallEndResult:
    detail: dict[str, Any]
    state_written: bool
    event_emitted: bool
    event_pending: bool = False
    """Not emitted, but the call's META is marked for the sweeper to re-send it."""
    event_retries: int = 0


class CallEnd:
    """Runs the end of one call once; concurrent and later callers get the same result."""

    def __init__(
        self,
        ctx: CallContext,
        *,
        events: EventSink,
        state: CallStateWriter | None = None,
        wall_clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        self.ctx = ctx
        self.events = events
        self.state = state
        self.wall_clock = wall_clock
        self.timeout_s = timeout_s
        self._task: asyncio.Task[CallEndResult] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def run(self) -> asyncio.Task[CallEndResult] | None:
        """The call's one end run, once started (its result once done): what the metrics read."""
        return self._task

    async def finish(self, reason: str, counts: Mapping[str, int | float]) -> CallEndResult:
        if self._task is None:  # no await before this line: two callers cannot both get here
            self._task = asyncio.get_running_loop().create_task(self._finish(reason, counts))
        return await asyncio.shield(self._task)

    async def _finish(self, reason: str, counts: Mapping[str, int | float]) -> CallEndResult:
        ended_at = self.wall_clock()
        detail = call_ended_detail(self.ctx.tenant_id, self.ctx.call_id, ended_at, reason, counts)
        state_written = False
        fields: dict[str, Any] = {"ended_at": ended_at, "end_reason": reason}
        fields.update({f"bridge_{k}": v for k, v in counts.items()})
        if self.state is not None:
            try:
                await asyncio.wait_for(self.state.write_final(self.ctx, fields), self.timeout_s)
                state_written = True
            except Exception:  # the event still goes out: the report can be rebuilt from it
                logger.exception("call state not written", extra={"call_id": self.ctx.call_id})
        event_emitted = False
        event_pending = False
        retries: int | None = 0
        call = {"call_id": self.ctx.call_id, "tenant_id": self.ctx.tenant_id}
        try:
            retries = await asyncio.wait_for(
                self.events.put_event(CALL_ENDED, detail), self.timeout_s
            )
            event_emitted = True
        except Exception as e:  # retried already (the publisher's policy): mark it pending
            retries = getattr(e, "attempts", 1) - 1
            logger.warning(
                "CallEnded not emitted", extra={**call, "error": type(e).__name__ + f": {e}"}
            )
            event_pending = await self._mark_pending(fields)
        retries = retries or 0
        if retries and event_emitted:
            logger.info("CallEnded emitted after retries", extra={**call, "retries": retries})
        if not event_emitted and not event_pending:
            logger.error("CallEnded lost: not emitted and not marked pending", extra=call)
        return CallEndResult(detail, state_written, event_emitted, event_pending, retries)

    async def _mark_pending(self, final: Mapping[str, Any]) -> bool:
        """The META marked so the sweeper re-sends this CallEnded (its detail is rebuilt from
        the META: `ended_at`, `end_reason` and the `bridge_*` counts, written again here in
        case the first write failed too)."""
        if self.state is None:
            return False
        fields = {**final, **pending_fields(EVENT_SOURCE, self.wall_clock())}
        try:
            await asyncio.wait_for(self.state.write_final(self.ctx, fields), self.timeout_s)
        except Exception:
            logger.exception("CallEnded not marked pending", extra={"call_id": self.ctx.call_id})
            return False
        logger.warning(
            "CallEnded marked pending for the sweeper", extra={"call_id": self.ctx.call_id}
        )
        return True
