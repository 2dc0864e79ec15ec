"""The dispatch of the agent's Mirror messages (`mirror.*`) to the session.

The session is called in order with the agent's audio (a `mirror.turn` is registered before the
audio that follows it) but may not stall that audio: a session takes a message at once and does
the slow part (ScoreTurn, GateTool, speech) in tasks of its own; one that still takes longer
than `Settings.mirror_dispatch_s` is left to finish in the background (counted as
`agent_mirror_slow`, cancelled when the call ends) and the agent's messages read on."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mirror_bridge.agent_protocol import MirrorMessage
from mirror_bridge.call_scope import CallScope
from mirror_bridge.contract import CallSessionLike

log = logging.getLogger("mirror_bridge.relay")


async def dispatch_mirror(
    call: CallScope, session: CallSessionLike, message: MirrorMessage, timeout_s: float
) -> None:
    """Hand `message` to the session (see the module docstring)."""
    # eager: a session that takes the message at once is done before this returns
    task = call.task(session.on_mirror_message(message), "mirror-dispatch", eager=True)
    if not task.done():
        await asyncio.wait({task}, timeout=timeout_s)
    event = getattr(message, "event", "?")
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "call %s: session failed on agent %s; the call goes on",
                call.call_id, event, exc_info=task.exception(),
            )  # fmt: skip
        return
    call.stats.skipped["agent_mirror_slow"] += 1
    log.warning(
        "call %s: session took over %.0f ms on %s; reading on",
        call.call_id, 1000 * timeout_s, event,
    )  # fmt: skip
    call.background.add(task)

    def done(task: asyncio.Task[Any]) -> None:
        call.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "call %s: session failed on a Mirror message", call.call_id,
                exc_info=task.exception(),
            )  # fmt: skip

    task.add_done_callback(done)
