"""One call's running state, shared by both sides of the relay: its counters, its end (the first
reason wins), the tasks it runs, and the call-length guard.

Every task the relay runs for a call is created here (`CallScope.task`), named `{call_id}::{job}`
through the bridge's one task helper (`tasks.spawn`, the session's too), so a task listing or a
"Task exception was never retrieved" line names the call and what it was doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from mirror_bridge.outbound import _Writer
from mirror_bridge.tasks import spawn

log = logging.getLogger("mirror_bridge.relay")


@dataclass
class RelayStats:
    plivo_frames: Counter[str] = field(default_factory=Counter)
    agent_frames: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class CallScope:
    """See the module docstring. Made on the call's loop once the call has started."""

    def __init__(self, call_id: str, stats: RelayStats) -> None:
        self.call_id = call_id
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[str] = self.loop.create_future()
        self.inflight: set[asyncio.Task[Any]] = set()
        """Handler tasks a socket waits for: cancelled when the call ends."""
        self.background: set[asyncio.Task[Any]] = set()
        """Slow Mirror dispatches left to finish: cancelled when the call ends."""

    # --- tasks -------------------------------------------------------------------------------

    def task(
        self, coro: Coroutine[Any, Any, Any], job: str, *, eager: bool = False
    ) -> asyncio.Task[Any]:
        """The one way a call starts a task: named `{call_id}::{job}`. `eager`: it runs now,
        up to its first wait (done already when it never waits)."""
        return spawn(coro, name=f"{self.call_id}::{job}", eager=eager)

    def run(
        self, coro: Coroutine[Any, Any, Any], job: str, side: str = "", event: Any = None
    ) -> asyncio.Task[Any] | None:
        """Run a handler's coroutine now (an eager task): None when it finished at once, else
        the task (the socket waits for it; it is cancelled if the call ends first). A session
        call (`side` given) that fails is logged: the call goes on."""
        task = self.task(coro, job, eager=True)
        if task.done():
            if side and not task.cancelled() and (exc := task.exception()) is not None:
                self.session_failed(side, event, exc)
            return None
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        if side:
            task.add_done_callback(
                lambda t: (
                    None
                    if t.cancelled() or (exc := t.exception()) is None
                    else self.session_failed(side, event, exc)
                )
            )
        return task

    def session_failed(self, side: str, event: Any, exc: BaseException) -> None:
        log.error(
            "call %s: session failed on %s %s; the call goes on",
            self.call_id, side, event, exc_info=exc,
        )  # fmt: skip

    async def cancel(self, readers: list[asyncio.Task[str]]) -> None:
        """The call is over: the readers and every handler task it waits for are cancelled
        and awaited; slow Mirror dispatches are cancelled."""
        waiting = [*readers, *self.inflight]
        for task in waiting:
            task.cancel()
        for task in waiting:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in list(self.background):
            task.cancel()

    # --- the end -----------------------------------------------------------------------------

    def over(self) -> bool:
        return self.ended.done()

    def end(self, reason: str) -> None:
        """The first end wins (stop, a socket closing, the call limit, a reader failing)."""
        if not self.ended.done():
            self.ended.set_result(reason)

    def reader_done(self, task: asyncio.Task[str]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s failed", task.get_name(), exc_info=exc)
            self.end("error")
        else:
            self.end(task.result())

    # --- the call-length guard ---------------------------------------------------------------

    async def call_limit(self, limit: float, agent: _Writer) -> str:
        """At `limit` seconds (`max_call_s`) the agent is told, then the call ends like a
        hang-up (the session closes, `CallEnded` once, both sockets close). The supervised
        session hangs the call up through Plivo's REST API on this reason (`max_duration`):
        with `keepCallAlive`, closing the stream alone would leave the caller in silence."""
        await asyncio.sleep(limit)
        log.warning("call %s reached MAX_CALL_S (%g s): ending it", self.call_id, limit)
        await agent.put(
            {"event": "mirror.call_ending", "reason": "max_duration", "max_call_s": limit}
        )
        return "max_duration"
