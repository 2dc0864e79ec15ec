"""How the bridge calls ScoreTurn, GateTool and GenerateCorrection.

`FunctionTransport.invoke(name, payload, timeout_s)` returns the function's JSON answer or raises
`FunctionError`: a timeout, a Lambda function error, an unreadable answer, and the functions' own
`{"error": {...}}` answers all raise, so the session applies one set of failure rules (speech
fails open, irreversible tools hold). Blocking clients (boto3, the in-process handlers) run in a
bounded thread pool and hand their answers back through the loop's `LoopInbox`: the event loop,
which carries every call's audio, never waits on them, a burst of calls cannot start unbounded
threads, and an answer is taken at the loop's next audio frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol, runtime_checkable

from mirror import aws
from mirror.local import import_file

logger = logging.getLogger(__name__)

SCORE_TURN = "score_turn"
GATE_TOOL = "gate_tool"
GENERATE_CORRECTION = "generate_correction"
FUNCTION_NAMES: tuple[str, ...] = (SCORE_TURN, GATE_TOOL, GENERATE_CORRECTION)
DEFAULT_MAX_WORKERS = 16
REPO_ROOT = Path(__file__).resolve().parents[2]

ErrorKind = Literal["timeout", "function_error", "error_response", "invalid_response", "transport"]


class FunctionError(Exception):
    """A function call that produced no usable answer; `kind` says why (counted per kind)."""

    def __init__(self, name: str, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{name}: {kind}: {detail}")
        self.name = name
        self.kind = kind
        self.detail = detail


@runtime_checkable
class FunctionTransport(Protocol):
    async def invoke(self, name: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The function's answer; raises FunctionError (never anything else) on failure."""
        ...


def check_answer(name: str, answer: Any) -> dict[str, Any]:
    """A dict without `error`, or FunctionError: the functions answer bad input and store
    failures with `{"error": {...}}` instead of raising."""
    if not isinstance(answer, dict):
        raise FunctionError(name, "invalid_response", f"not a JSON object: {type(answer).__name__}")
    if "error" in answer:
        error = answer["error"]
        kind = error.get("type") if isinstance(error, dict) else None
        raise FunctionError(name, "error_response", str(kind or error)[:200])
    return answer


GIL_SWITCH_INTERVAL_S = 0.0001
"""The GIL's switch interval while no in-process handler runs (the relay sets it at the first
call): how long a thread holding the GIL (boto3's work on the pool, speech) may keep the event
loop, and every call's audio, waiting when it wants the GIL back, and how long a function call's
thread waits for it to start. Python's default, 5 ms, is a quarter of an audio frame."""
HANDLER_SWITCH_INTERVAL_S = 0.002
"""The switch interval while an in-process handler runs (`InProcessTransport`): ScoreTurn's
~1 ms runs to its end rather than in 0.1 ms slices between audio frames (the loop waits at most
this long for the GIL; the verdict comes back sooner)."""

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


class LoopInbox:
    """Work that threads hand to one event loop, run there at its first chance: the next audio
    frame the loop handles (the relay's frame handlers call `drain` when `pending`), or the
    loop's next turn if no frame comes first (`call_soon_threadsafe`, always sent too).

    Under load the loop's turn is a whole batch of socket events, 0.3–1 ms at 200 calls, and
    an answer that resolves a future costs two turns before the awaiting code runs (one for the
    callback, one for the task's wake-up); a frame is ~30 µs. Whichever comes first runs the
    work; the other finds nothing to do."""

    __slots__ = ("_loop", "pending", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.pending: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """From any thread. RuntimeError when the loop is closed."""
        self.pending.append((fn, args))
        self._loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """On the loop. A failing item is logged; the others still run."""
        pending = self.pending
        while pending:
            fn, args = pending.popleft()  # atomic: a thread may append meanwhile
            try:
                fn(*args)
            except Exception:
                logger.exception("work handed to the loop failed")


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
    weakref.WeakKeyDictionary()
)


def loop_inbox(loop: asyncio.AbstractEventLoop | None = None) -> LoopInbox:
    """The loop's one inbox (the running loop's by default), made on first use, on the loop."""
    loop = loop or asyncio.get_running_loop()
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = _inboxes[loop] = LoopInbox(loop)
    return inbox


def _settle(
    done: asyncio.Future[Any], result: Any, error: BaseException | None, cancelled: bool = False
) -> None:
    """A pool call's outcome onto its future, on the loop; nothing if the caller gave up."""
    if done.done():  # timed out meanwhile
        return
    if cancelled:
        done.cancel()
    elif error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _hand_back(inbox: LoopInbox, fn: Callable[..., None], *args: Any) -> None:
    """`inbox.post` from a pool thread; a loop already gone (shutdown) has nobody waiting."""
    try:
        inbox.post(fn, *args)
    except RuntimeError:
        pass


async def _run_bounded(
    pool: ThreadPoolExecutor, name: str, timeout_s: float, fn: Callable[[], Any]
) -> Any:
    """`fn` in the pool, awaited without blocking the loop; a timeout cancels it if it has not
    started yet (a started thread finishes in the background: the pool bounds how many). The
    answer comes back through the loop's `LoopInbox`, as an in-process one does."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    inbox = loop_inbox(loop)

    def call() -> None:  # in the pool
        try:
            outcome: tuple[Any, BaseException | None] = (fn(), None)
        except BaseException as e:  # raised on the loop, as run_in_executor would
            outcome = (None, e)
        _hand_back(inbox, _settle, done, *outcome)

    work = pool.submit(call)
    done.add_done_callback(lambda f: work.cancel() if f.cancelled() else None)
    try:
        return await asyncio.wait_for(done, timeout_s)
    except TimeoutError:
        raise FunctionError(name, "timeout", f"no answer within {timeout_s:.3f} s") from None


class LambdaTransport:
    """Direct `lambda.invoke` (RequestResponse) with botocore timeouts and no SDK retries: the
    session's budget is the only clock that matters, a retry would only overrun it."""

    def __init__(
        self,
        function_names: Mapping[str, str],
        *,
        client: Any = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        region_name: str | None = None,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.function_names = dict(function_names)
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lambda")
        self._client = client
        self._client_lock = threading.Lock()
        self._region_name = region_name
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **kwargs: Any) -> LambdaTransport:
        """`SCORE_TURN_FUNCTION`, `GATE_TOOL_FUNCTION`, `GENERATE_CORRECTION_FUNCTION`
        (names or ARNs), as the task definition sets them."""
        names = {n: environ[f"{n.upper()}_FUNCTION"] for n in FUNCTION_NAMES}
        return cls(names, **kwargs)

    def client(self) -> Any:
        """Built on first use, in a worker thread (boto3 imports and reads its models), by the
        one AWS client factory: one attempt (no SDK retries), a connection per worker."""
        with self._client_lock:
            if self._client is None:
                self._client = aws.client(
                    "lambda",
                    connect_timeout_s=self._connect_timeout_s,
                    read_timeout_s=self._read_timeout_s,
                    attempts=1,
                    region_name=self._region_name,
                    max_pool_connections=self.max_workers,
                )
            return self._client

    def _invoke_sync(self, name: str, payload: dict[str, Any]) -> Any:
        try:
            response = self.client().invoke(
                FunctionName=self.function_names[name],
                InvocationType="RequestResponse",
                Payload=json.dumps(payload).encode("utf-8"),
            )
        except Exception as e:  # botocore errors and timeouts: one kind for the session
            raise FunctionError(name, "transport", f"{type(e).__name__}: {e}") from e
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise FunctionError(name, "function_error", str(response["FunctionError"]))
        try:
            return json.loads(body)
        except ValueError as e:
            raise FunctionError(name, "invalid_response", "answer is not JSON") from e

    async def invoke(self, name: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if name not in self.function_names:
            raise FunctionError(name, "transport", "no function configured under this name")
        answer = await _run_bounded(
            self._pool, name, timeout_s, lambda: self._invoke_sync(name, payload)
        )
        return check_answer(name, answer)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class LambdaContext:
    """What the handlers (and Powertools) read from a Lambda context."""

    function_name: str
    deadline: float
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


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
            _settle(done, *outcome)

        inbox = loop_inbox(loop)

        def hand_back(*outcome: Any) -> None:
            _hand_back(inbox, back, *outcome)

        def call() -> None:  # in the worker thread, to the hand-back with its GIL priority
            with _handler_running():
                try:
                    context = LambdaContext(function_name=name, deadline=deadline)
                    answer = handler(json.loads(event_json), context)
                    hand_back(json.loads(json.dumps(answer)), None)
                except BaseException as e:  # as Lambda reports it: the call failed
                    hand_back(None, e)

        work = self._pool.submit(call)
        # The CPU to the worker now: on a one-vCPU task it would otherwise wait for the loop's
        # time slice to end (~0.1-0.3 ms under load). The handler takes the GIL the loop gives
        # up here and holds it to its end (`HANDLER_SWITCH_INTERVAL_S`) as it would anyway.
        _yield_cpu()
        # cancelled before it started (the caller gave up): the container comes back all the same
        work.add_done_callback(lambda w: hand_back(None, None, True) if w.cancelled() else None)
        done.add_done_callback(lambda f: work.cancel() if f.cancelled() else None)
        return done

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
