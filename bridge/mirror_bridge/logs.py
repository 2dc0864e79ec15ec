"""The bridge's logs: one JSON object per line on stdout, caller PII redacted.

Run as the image runs it (`uvicorn main:build_app --factory ...`), uvicorn configures logging
with its own dictConfig, which gives the root logger no handler: the bridge's INFO lines were
dropped and its warnings reached only logging's last-resort handler (message only: the call id
passed in `extra` and the error were lost). `configure_logging()` (called by `main.build_app`,
after uvicorn's dictConfig) gives the `mirror_bridge` and `mirror` (core) logger hierarchies a
handler of their own, so nothing uvicorn does to the root logger touches them.

Each line carries `time`, `level`, `logger`, `message` and, when known, `call_id`, `stream_id`,
`tenant_id` and `error` (exception type and message) with `traceback`. The call is found, in
order: the record's own `extra={"call_id": ...}`; the argument of a `call %s` in the message
(the bridge's convention: the answer route's lines); the call bound to the running context
(`bind_call`, done by the session factory for everything the call's relay task runs); the
running task's name (every task a call starts is named `{call_id}::{job}`, `tasks.spawn`).
`stream_id` and `tenant_id` come from the call's binding. The message, error and traceback go
through `mirror.redact.redact` (the caller's number, emails, card numbers), and a bare E.164
number (as `tenants.normalize_number` writes the caller's) becomes `[phone]` too.

The loop never writes to stdout itself: records are formatted where they are logged and queued
to one writer thread (`QueueListener`), so a slow log pipe cannot stall the calls' audio. EMF
metric documents (`metrics`) go out through the same queue (`write_line`), in order with logs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import logging
import queue
import re
import sys
import time
import traceback
from collections import OrderedDict
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from mirror.redact import redact as redact_pii

LOGGERS = ("mirror_bridge", "mirror")
"""The logger hierarchies the bridge writes: its own and the core library's."""

MAX_BOUND_CALLS = 4096
"""Calls whose stream and tenant are remembered for their log lines (the oldest go first)."""

_current_call: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mirror_bridge_call", default=None
)
_calls: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

_BARE_NUMBER = re.compile(r"(?<![\w+-])\+?\d{10,15}(?![\w-])")
"""A phone number as the bridge itself writes it (E.164 digits, `tenants.normalize_number`),
which `mirror.redact`'s formatted-number patterns do not match."""


def redact(text: str) -> str:
    """`mirror.redact.redact`, then the bridge's bare E.164 numbers."""
    return _BARE_NUMBER.sub("[phone]", redact_pii(text))


def bind_call(call_id: str, stream_id: str | None = None, tenant_id: str | None = None) -> None:
    """The current context (and every task it starts from now on) logs for `call_id`; its
    stream and tenant are remembered for any line that names the call."""
    _calls[call_id] = (stream_id, tenant_id)
    _calls.move_to_end(call_id)
    while len(_calls) > MAX_BOUND_CALLS:
        _calls.popitem(last=False)
    _current_call.set(call_id)


def _task_call_id() -> str | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread (an executor's)
        return None
    if task is None:
        return None
    name = task.get_name()
    call_id, sep, _ = name.partition("::")
    return call_id if sep and call_id else None


_CALL_ARG = re.compile(r"\bcall %s")
_PLACEHOLDER = re.compile(r"%[-#0 +\d.]*[sdifrxXeEgGcoa]")


def _message_call_id(record: logging.LogRecord) -> str | None:
    """The bridge's lines say `call %s` with the call id as that argument (the answer route's,
    the relay's): that argument, when the line has it."""
    msg, args = record.msg, record.args
    if not isinstance(msg, str) or not isinstance(args, tuple) or not args:
        return None
    found = _CALL_ARG.search(msg)
    if found is None:
        return None
    index = len(_PLACEHOLDER.findall(msg.replace("%%", "")[: found.start()]))
    value = args[index] if index < len(args) else None
    return value if isinstance(value, str) and value else None


def call_fields(record: logging.LogRecord) -> dict[str, str]:
    """`call_id`, `stream_id` and `tenant_id` for a record, those known (module docstring)."""
    call_id = (
        getattr(record, "call_id", None)
        or _message_call_id(record)
        or _current_call.get()
        or _task_call_id()
    )
    if not call_id:
        return {}
    out = {"call_id": str(call_id)}
    stream_id, tenant_id = _calls.get(str(call_id), (None, None))
    stream_id = getattr(record, "stream_id", None) or stream_id
    tenant_id = getattr(record, "tenant_id", None) or tenant_id
    if stream_id:
        out["stream_id"] = str(stream_id)
    if tenant_id:
        out["tenant_id"] = str(tenant_id)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module docstring), redacted."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as e:  # a bad format string must not lose the line
            message = f"{record.msg!r} (unformattable: {e})"
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(message),
        }
        doc.update(call_fields(record))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["error"] = redact(f"{type(exc).__name__}: {exc}")
            doc["traceback"] = redact("".join(traceback.format_exception(exc)))
        elif isinstance(error := getattr(record, "error", None), str | BaseException):
            doc["error"] = redact(
                f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
            )
        return json.dumps(doc, ensure_ascii=False, default=str)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time (as logging's last-resort handler does
    for stderr), so a replaced stdout (a test's capture) is never written after it closed."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _PreformattedQueueHandler(QueueHandler):
    """Formats on the logging thread (the loop: cheap), writes on the listener's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        line = self.format(record)
        return _line_record(line, record.levelno)


def _line_record(line: str, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("mirror_bridge", level, "", 0, line, None, None)
    return record


_queue: queue.SimpleQueue[logging.LogRecord] | None = None
_listener: QueueListener | None = None
_handler: QueueHandler | None = None
_previous_levels: dict[str, int] = {}


def configured() -> bool:
    return _handler is not None


def configure_logging(level: str | int = "INFO", *, core: bool = True) -> None:
    """The bridge's JSON logs on stdout for `LOGGERS` at `level` (module docstring); without
    `core`, for `mirror_bridge` alone (the `mirror` logger is left to whoever owns it: in
    `BRIDGE_MODE=local`, possibly the in-process functions' Powertools logger, which must find
    no handler on it). Idempotent: a second call only changes the level."""
    global _queue, _listener, _handler
    if isinstance(level, str):
        level = logging.getLevelName(level.strip().upper() or "INFO")
        if not isinstance(level, int):
            level = logging.INFO
    if _handler is None:
        _queue = queue.SimpleQueue()
        out = _StdoutHandler()
        out.setFormatter(logging.Formatter("%(message)s"))  # lines arrive formatted
        _listener = QueueListener(_queue, out)
        _listener.start()
        atexit.register(shutdown_logging)
        _handler = _PreformattedQueueHandler(_queue)
        _handler.setFormatter(JsonFormatter())
    for name in LOGGERS if core else LOGGERS[:1]:
        logger = logging.getLogger(name)
        _previous_levels.setdefault(name, logger.level)
        logger.setLevel(level)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        # Records still propagate: under uvicorn the root logger has no handler (nothing is
        # written twice), and a test's log capture on the root logger keeps seeing them.


def write_line(line: str) -> bool:
    """Queue one ready line (an EMF document) for stdout; False when logging is not
    configured (a test's app: nothing is written)."""
    if _queue is None:
        return False
    _queue.put_nowait(_line_record(line))
    return True


def shutdown_logging() -> None:
    """Flush the queued lines and undo `configure_logging` (the app's shutdown, or exit): the
    loggers get their levels back and lose the handler; a line logged later goes wherever it
    went before (an app served in a test process leaves that process's logging as it was)."""
    global _listener, _handler, _queue
    handler, _handler = _handler, None
    for name, level in _previous_levels.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if handler is not None:
            logger.removeHandler(handler)
    _previous_levels.clear()
    if _listener is not None:
        listener, _listener = _listener, None
        listener.stop()  # writes what is queued, then ends the writer thread
    _queue = None
