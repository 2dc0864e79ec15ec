"""ScoreTurn, GateTool and GenerateCorrection run in this process: the bridge's local transport.

`InProcessTransport` is the `FunctionTransport` of `BRIDGE_MODE=local` (the wiring imports it
from here, lazily, only in that mode), of the demo, the end-to-end tests and the bridge
benchmark: the real handlers from `functions/*/app.py`, loaded by path from this checkout, each
given what Lambda would give it (a JSON round trip each way and a `LambdaContext` with the
call's deadline). The bridge image does not ship this package; in production the same
functions are reached through `mirror_bridge.transport.LambdaTransport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from mirror_bridge.transport import (
    FUNCTION_NAMES,
    GIL_SWITCH_INTERVAL_S,
    FunctionError,
    check_answer,
    hand_back,
    loop_inbox,
    settle,
)
from mirror_dev.lambda_context import LambdaContext
from mirror_dev.local import import_file

REPO_ROOT = Path(__file__).resolve().parents[2]
"""dev/mirror_dev/in_process.py -> the checkout, whose functions/ the handlers come from."""

HANDLER_SWITCH_INTERVAL_S = 0.002
"""The switch interval while an in-process handler runs: ScoreTurn's ~1 ms runs to its end
rather than in 0.1 ms slices between audio frames (the loop waits at most this long for the GIL;
the verdict comes back sooner). Back to `transport.GIL_SWITCH_INTERVAL_S` when none runs."""

_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)
_handlers_running = 0
_handlers_lock = threading.Lock()


@contextlib.contextmanager
def _handler_running() -> Iterator[None]:
    """Around an in-process handler, in its thread: `HANDLER_SWITCH_INTERVAL_S` while any runs."""
    global _handlers_running
    with _handlers_lock:
        _handlers_running += 1
        if _handlers_running == 1:
            sys.setswitchinterval(HANDLER_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        with _handlers_lock:
            _handlers_running -= 1
            if _handlers_running == 0:
                sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def load_handler_module(name: str, root: Path = REPO_ROOT) -> ModuleType:
    """`functions/<name>/app.py`, imported by path under a unique module name: each copy has
    its own lazily built service, like its own Lambda container."""
    return import_file(root / "functions" / name / "app.py", f"mirror_fn_{name}")


Handler = Callable[[dict[str, Any], Any], Any]


class InProcessTransport:
    """The same three handlers, run in this process (locally, against moto).

    A Lambda container runs one invocation at a time and the handlers rely on it (the
    correction handler keeps one event loop per container), so each function gets `containers`
    independent copies of its handler, each used by one invocation at a time, all on one bounded
    pool."""

    def __init__(
        self,
        handlers: Mapping[str, Handler | list[Handler]] | None = None,
        *,
        containers: int = 2,
        max_workers: int | None = None,
        root: Path = REPO_ROOT,
    ) -> None:
        if containers < 1:
            raise ValueError("containers must be at least 1")
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers or containers * len(FUNCTION_NAMES),
            thread_name_prefix="fn",
        )
        self._root = root
        self._containers = containers
        self._given = dict(handlers) if handlers is not None else None
        self._free: dict[str, asyncio.Queue[Handler]] = {}
        self._build_lock = asyncio.Lock()

    @property
    def max_workers(self) -> int:
        return self._pool._max_workers

    async def _queue(self, name: str) -> asyncio.Queue[Handler]:
        async with self._build_lock:
            if name not in self._free:
                handlers: list[Handler]
                if self._given is not None:
                    if name not in self._given:
                        raise FunctionError(name, "transport", "no handler for this name")
                    given = self._given[name]
                    handlers = list(given) if isinstance(given, list) else [given]
                else:
                    loop = asyncio.get_running_loop()
                    modules = await asyncio.gather(
                        *(
                            loop.run_in_executor(self._pool, load_handler_module, name, self._root)
                            for _ in range(self._containers)
                        )
                    )
                    handlers = [m.lambda_handler for m in modules]
                queue: asyncio.Queue[Handler] = asyncio.Queue()
                for handler in handlers:
                    queue.put_nowait(handler)
                self._free[name] = queue
            return self._free[name]

    async def warm(self, names: tuple[str, ...] = FUNCTION_NAMES) -> None:
        """Load the handlers now: a cold import takes far longer than a turn's hold budget."""
        for name in names:
            await self._queue(name)

    async def invoke(self, name: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                queue = self._free.get(name) or await self._queue(name)
                handler = await queue.get()
                answer = await self._run(queue, handler, name, json.dumps(payload), deadline)
        except TimeoutError:
            raise FunctionError(name, "timeout", f"no answer within {timeout_s:.3f} s") from None
        except FunctionError:
            raise
        except Exception as e:
            raise FunctionError(name, "function_error", f"{type(e).__name__}: {e}") from e
        return check_answer(name, answer)

    def _run(
        self,
        queue: asyncio.Queue[Handler],
        handler: Handler,
        name: str,
        event_json: str,
        deadline: float,
    ) -> asyncio.Future[Any]:
        """The handler in the pool; its container goes back to `queue` only once it is really
        done (a timed-out call keeps it until it returns), and the answer and the container
        come back to the loop in one wake-up, scheduled by the worker before it lets go of the
        handler's GIL priority. Cancelling the result cancels the call if it has not started.
        A JSON round trip each way, in the worker: the handler sees what Lambda would hand it
        and its answer comes back as Lambda would return it (never shared objects), and the
        loop, which carries the audio, does none of that work. The answer comes back through the
        loop's `LoopInbox`."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def back(*outcome: Any) -> None:  # on the loop
            queue.put_nowait(handler)
            settle(done, *outcome)

        inbox = loop_inbox(loop)

        def give_back(*outcome: Any) -> None:
            hand_back(inbox, back, *outcome)

        def call() -> None:  # in the worker thread, to the hand-back with its GIL priority
            with _handler_running():
                try:
                    context = LambdaContext(function_name=name, deadline=deadline)
                    answer = handler(json.loads(event_json), context)
                    give_back(json.loads(json.dumps(answer)), None)
                except BaseException as e:  # as Lambda reports it: the call failed
                    give_back(None, e)

        work = self._pool.submit(call)
        # The CPU to the worker now: on a one-vCPU task it would otherwise wait for the loop's
        # time slice to end (~0.1-0.3 ms under load). The handler takes the GIL the loop gives
        # up here and holds it to its end (`HANDLER_SWITCH_INTERVAL_S`) as it would anyway.
        _yield_cpu()
        # cancelled before it started (the caller gave up): the container comes back all the same
        work.add_done_callback(lambda w: give_back(None, None, True) if w.cancelled() else None)
        done.add_done_callback(lambda f: work.cancel() if f.cancelled() else None)
        return done

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
