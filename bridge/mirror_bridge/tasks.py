"""The one way the session starts an asyncio task: named `<call_id>::<job>`, so a task dump or
a "task was destroyed but it is pending" warning says whose it is and what it was doing."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def spawn[T](coro: Coroutine[Any, Any, T], *, name: str, eager: bool = False) -> asyncio.Task[T]:
    """A task on the running loop. `eager`: it runs up to its first suspension now, not on the
    loop's next turn (then it may be done when this returns)."""
    loop = asyncio.get_running_loop()
    if eager:
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)
    return loop.create_task(coro, name=name)
