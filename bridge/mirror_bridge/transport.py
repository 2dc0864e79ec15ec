"""How the bridge calls ScoreTurn, GateTool and GenerateCorrection.

`FunctionTransport.invoke(name, payload, timeout_s)` returns the function's JSON answer or raises
`FunctionError`: a timeout, a Lambda function error, an unreadable answer, and the functions' own
`{"error": {...}}` answers all raise, so the session applies one set of failure rules (speech
fails open, irreversible tools hold). Blocking clients (boto3 here; locally the in-process
handlers of `mirror_dev.in_process`, which the image does not ship) run in a bounded thread pool
and hand their answers back through the loop's `LoopInbox`: the event loop, which carries every
call's audio, never waits on them, a burst of calls cannot start unbounded threads, and an
answer is taken at the loop's next audio frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, runtime_checkable

from mirror import aws

logger = logging.getLogger(__name__)

SCORE_TURN = "score_turn"
GATE_TOOL = "gate_tool"
GENERATE_CORRECTION = "generate_correction"
FUNCTION_NAMES: tuple[str, ...] = (SCORE_TURN, GATE_TOOL, GENERATE_CORRECTION)
DEFAULT_MAX_WORKERS = 16

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
"""The GIL's switch interval while no in-process handler runs (set once at the app's start-up,
before any call: `app.tuned` through `tuning.freeze_startup_heap`): how long a thread holding
the GIL (boto3's work on the pool, speech) may keep the event loop, and every call's audio,
waiting when it wants the GIL back, and how long a function call's thread waits for it to
start. Python's default, 5 ms, is a quarter of an audio frame. The local transport
(`mirror_dev.in_process`) raises it while one of its handlers runs."""


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


def settle(
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


def hand_back(inbox: LoopInbox, fn: Callable[..., None], *args: Any) -> None:
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
        hand_back(inbox, settle, done, *outcome)

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
            # the body is read inside the same net: a connection reset or a read timeout while
            # the answer streams in (botocore's `StreamingBody.read`) is a transport failure
            # too, never an exception the session does not expect (issue 13, item 4)
            body = response["Payload"].read()
        except Exception as e:  # botocore errors and timeouts: one kind for the session
            raise FunctionError(name, "transport", f"{type(e).__name__}: {e}") from e
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
