"""The outgoing side of a call: how a session speaks (`SessionIO`) and each socket's bounded,
in-order writer queue (`_Writer`). Moved here unchanged from `relay`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mirror_bridge.plivo_protocol import Frame, wire_text
from mirror_bridge.tasks import spawn

log = logging.getLogger("mirror_bridge.relay")


class PlivoQueue(Protocol):
    """The one ordered queue of everything bound for Plivo (the relay's `_Writer`), as the
    session uses it."""

    def enqueue(self, message: dict[str, Any], tag: str | None = None) -> bool:
        """Queue in order without waiting; False when the socket is gone (dropped)."""
        ...

    def purge(self, tag: str) -> int:
        """Drop the queued messages tagged `tag` not yet written; how many."""
        ...


@dataclass(frozen=True, slots=True)
class SessionIO:
    """How a session speaks. Plivo: one ordered queue that never makes it wait (`plivo`). The
    agent: `send_agent` queues a JSON message, waiting for room when the agent's queue is full;
    `offer_agent` queues it without waiting and returns False when it would have to wait (then
    await `send_agent`); a message offered right after ones that were sent keeps its place.
    Neither raises once a side is gone (the message is dropped and logged)."""

    plivo: PlivoQueue
    send_agent: Callable[[dict[str, Any]], Awaitable[None]]
    offer_agent: Callable[[dict[str, Any]], bool] | None = None


class _Writer:
    """One socket's outgoing messages, in order, at most `size` of them waiting. Messages go out
    as `wire_text` (a received frame as it came).

    A message for an idle socket is written at once: with `write_now` (a push socket's: the
    transport takes it, or it says no) nothing else happens; otherwise it is sent in an eager
    task, which schedules nothing when the socket takes it without waiting. While a send waits
    (a slow peer: the transport's buffer is full), later messages queue behind it and that task
    sends them in order; when `size` are waiting, `offer` says no and `put` waits for room
    (back-pressure on this direction only). `enqueue` (the session's way in, `PlivoQueue`)
    never waits: the session's messages keep their order here, in this one queue, past `size`
    if they must (`offer` and `put` then wait behind them), tagged by origin so that `purge` can
    drop the ones of an origin not yet written (an intervened turn's audio). The task that
    sends a backlog is the call's, named `{call_id}::{name}-writer`."""

    def __init__(
        self,
        name: str,
        send: Callable[[str], Awaitable[None]],
        size: int,
        write_now: Callable[[str], bool] | None = None,
        *,
        call_id: str,
        stall_s: float | None = None,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        """`stall_s`: the longest a `put` waits for room (None: no limit). A peer that has
        taken nothing for that long, with the queue full, is stalled: the writer gives up
        (what is queued and every later message is dropped, no put waits again) and
        `on_stall` runs once (the relay ends the call: `agent_stalled`). Without it, a socket
        waiting on a stalled peer would hold the other direction, Plivo's `stop` and its end
        included, for as long as the peer stalls (issue 13, item 2)."""
        self.name = name
        self._stall_s = stall_s
        self._on_stall = on_stall
        self.stalled = False
        self._task_name = f"{call_id}::{name}-writer"
        self._send = send
        self._write_now = write_now
        self._size = size
        self._loop = asyncio.get_running_loop()
        self._pending: deque[tuple[str, str | None]] = deque()  # (wire text, tag)
        self._room: deque[asyncio.Future[None]] = deque()  # puts waiting for room, in order
        self._admitted = 0  # puts given room that have not queued their message yet
        self._busy = False  # a send is under way (then `_pending` is drained by its task)
        self._task: asyncio.Task[None] | None = None
        self.dead = False
        self.closing = False
        self.sent = 0

    def _full(self) -> bool:
        return bool(self._room) or len(self._pending) + self._admitted >= self._size

    def offer(self, message: dict[str, Any]) -> bool:
        """`put` without waiting: False (nothing queued) when it would have to wait."""
        if self.dead or self.closing:
            log.debug("%s side is gone; dropped %s", self.name, message.get("event"))
            return True
        if not self._busy and (write_now := self._write_now) is not None:
            # the usual case, first: an idle socket whose transport takes it now
            text = message.text if type(message) is Frame else None  # wire_text, inline
            try:
                if write_now(text if text is not None else wire_text(message)):
                    self.sent += 1
                    return True
            except Exception as e:  # as a failed send
                log.info("%s write failed (%s); dropping further frames", self.name, e)
                self._give_up()
                return True
        if self._full():
            return False
        self._push(wire_text(message))
        return True

    def enqueue(self, message: dict[str, Any], tag: str | None = None) -> bool:
        """Queue in order without waiting, whatever the backlog; False when the side is gone
        (the message is dropped)."""
        if self.dead or self.closing:
            log.debug("%s side is gone; dropped %s", self.name, message.get("event"))
            return False
        self._push(wire_text(message), tag)
        return not self.dead

    def purge(self, tag: str) -> int:
        """Drop the queued messages tagged `tag` that are not written yet; how many."""
        pending = self._pending
        kept = [item for item in pending if item[1] != tag]
        dropped = len(pending) - len(kept)
        if dropped:
            pending.clear()  # in place: a running drain holds this deque
            pending.extend(kept)
            while self._room and len(pending) + self._admitted < self._size:
                self._let_in()  # room made: waiting puts come in
        return dropped

    async def put(self, message: dict[str, Any]) -> None:
        if self.dead or self.closing:
            log.debug("%s side is gone; dropped %s", self.name, message.get("event"))
            return
        text = wire_text(message)
        if self._full():
            waiter = self._loop.create_future()
            self._room.append(waiter)
            try:
                async with asyncio.timeout(self._stall_s):
                    try:
                        await waiter
                    except asyncio.CancelledError:
                        if waiter.done() and not waiter.cancelled():  # room given: pass it on
                            self._admitted -= 1
                            self._let_in()
                        else:
                            with contextlib.suppress(ValueError):
                                self._room.remove(waiter)
                        raise
            except TimeoutError:
                self._stalled()
                return
            self._admitted -= 1
            if self.dead:
                return
        self._push(text)

    def _stalled(self) -> None:
        if self.stalled:
            return
        self.stalled = True
        log.warning(
            "%s: %s side took nothing for %.1f s with %d queued: stalled, dropping its frames",
            self._task_name, self.name, self._stall_s or 0.0, len(self._pending),
        )  # fmt: skip
        self._give_up()
        if self._on_stall is not None:
            self._on_stall()

    def _push(self, text: str, tag: str | None = None) -> None:
        if not self._busy and (write_now := self._write_now) is not None:
            try:
                if write_now(text):
                    self.sent += 1
                    return
            except Exception as e:  # as a failed send
                log.info("%s write failed (%s); dropping further frames", self.name, e)
                self._give_up()
                return
        self._pending.append((text, tag))
        if not self._busy:
            task = spawn(self._drain(), name=self._task_name, eager=True)
            if not task.done():
                self._task = task

    def _let_in(self) -> None:
        """Room for one more: the first put still waiting gets it."""
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                self._admitted += 1
                waiter.set_result(None)
                return

    async def _drain(self) -> None:
        self._busy = True
        pending = self._pending
        try:
            while pending:
                text, _ = pending.popleft()
                if self._room:
                    self._let_in()
                try:
                    await self._send(text)
                    self.sent += 1
                except Exception as e:  # the socket closed under us; its reader will see it too
                    log.info("%s send failed (%s); dropping further frames", self.name, e)
                    self._give_up()
        finally:
            self._busy = False
            self._task = None

    def _give_up(self) -> None:
        """Drop what is queued and let every waiting put return (dropping its message)."""
        self.dead = True
        self._pending.clear()
        while self._room:
            self._let_in()

    async def finish(self, timeout: float) -> None:
        """Send what is queued (up to `timeout`), then stop. A backlog at the limit means a
        stalled peer: it is dropped, and only the send under way gets the time."""
        self.closing = True
        if len(self._pending) >= self._size:
            self._give_up()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            self._give_up()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
