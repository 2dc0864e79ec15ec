"""What the Lambda handler tests share: the functions' environment on the moto call table and a
loader that imports a handler fresh in it (each test module's fixtures name only their
differences), the sample events of events/, caller PII to look for in logs, Powertools' logger
reset between fresh imports, readers of the EMF lines a handler printed and of what it wrote to
the call table, and the checks the handler modules all make (a bad event's structured error, a
clean import that loads no heavy client)."""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mirror.models import CallContext
from mirror_dev.local import import_file
from tests.conftest import REPO_ROOT
from tests.support.process import clean_python

EVENTS_DIR = REPO_ROOT / "events"
NAMESPACE = "MirrorTest"
"""The metrics namespace every handler test runs its function under."""
UNSET_ENV = (
    "MIRROR_CONFIG",
    "POWERTOOLS_METRICS_DISABLED",
    "POWERTOOLS_DEV",
    "POWERTOOLS_LOGGER_LOG_EVENT",
)
"""Settings a developer's shell may carry that would change what a handler does under test."""


def set_handler_env(
    monkeypatch: pytest.MonkeyPatch, table: str, service: str, *, unset: Iterable[str] = ()
) -> str:
    """A function's environment on the moto call `table`: logs at DEBUG under the stdlib logger
    `service` (the test's own, not the deployed name), metrics in NAMESPACE, no tracing; the
    UNSET_ENV settings and `unset` removed. Returns the table."""
    monkeypatch.setenv("CALL_TABLE", table)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    for name in (*UNSET_ENV, *unset):
        monkeypatch.delenv(name, raising=False)
    return table


def unload(module: ModuleType) -> None:
    """Forget a freshly imported handler: its metrics, its container's loop, its module."""
    if hasattr(module, "metrics"):
        module.metrics.clear_metrics()
    if hasattr(module, "deps"):
        module.deps.loop().close()
    sys.modules.pop(module.__name__, None)


def handler_loader(
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    path: Path,
    name: str | None = None,
    *,
    stub_tiers: bool = True,
) -> Iterator[Callable[..., ModuleType]]:
    """The body of a fixture (`yield from handler_loader(...)`, after the env and capsys are
    set) that imports a handler fresh: `load(path=path, config=json, tiers=[...])`, under the
    module name `name` (default: the function's directory). With `stub_tiers`, `tiers` replace
    what `mirror.llm` would build (`deps.using(remote_tiers=...)`: none unless given), so tests
    never depend on that module's configuration. Every module loaded is unloaded after."""
    loaded: list[ModuleType] = []
    swaps = ExitStack()

    def load(
        path: Path = path, config: str | None = None, tiers: Iterable[Any] | None = None
    ) -> ModuleType:
        if config is not None:
            monkeypatch.setenv("MIRROR_CONFIG", config)
        reset_logger(service)
        module = import_file(path, name or path.parent.name)
        loaded.append(module)
        if stub_tiers and hasattr(module, "deps"):
            swaps.enter_context(module.deps.using(remote_tiers=lambda config: list(tiers or [])))
        module.metrics.clear_metrics()  # drop leftovers of an earlier test
        # pytest swaps capsys's stream between setup and call; log to whichever is current
        for handler in logging.getLogger(service).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(CurrentStdout())
        return module

    try:
        with swaps:
            yield load
    finally:
        for module in loaded:
            unload(module)
        reset_logger(service)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def ctx_of(event: Mapping[str, Any]) -> CallContext:
    """The call an event is about (the tenant `default` when it names none)."""
    return CallContext(call_id=event["call_id"], tenant_id=event.get("tenant_id") or "default")


def table_items(dynamodb_client: Any, table: str) -> list[dict[str, Any]]:
    return dynamodb_client.scan(TableName=table)["Items"]


PII_TEXT = (
    "my email is jo@example.com and my card is 4111 1111 1111 1111, call me back on 415-555-0134"
)
PII_VALUES = (
    "jo@example.com",
    "4111 1111 1111 1111",
    "4111111111111111",
    "415-555-0134",
    "4155550134",
)


class CurrentStdout:
    """A stream that writes to whatever sys.stdout is when the record is emitted."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def reset_logger(name: str) -> None:
    """Forget Powertools' configuration of the stdlib logger, so the next `Logger()` configures
    it afresh (new handler, current POWERTOOLS_LOG_LEVEL) instead of reusing the first one."""
    log = logging.getLogger(name)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    for attr in (
        "init",
        "powertools_handler",
        "powertools_buffer_config",
        "powertools_buffer_cache",
    ):
        if hasattr(log, attr):
            delattr(log, attr)


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    docs = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if "_aws" in doc:
                docs.append(doc)
    return docs


def emf_metric(docs: list[dict[str, Any]], name: str) -> list[tuple[dict[str, Any], Any]]:
    """(metric directive, document) for every document that carries metric `name`."""
    out = []
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                if metric["Name"] == name:
                    out.append(({**directive, "Metric": metric}, doc))
    return out


def error_fields(response: dict[str, Any]) -> set[str]:
    return {f["field"] for f in response["error"]["fields"]}


def invoke_handler(app: ModuleType, event: Any, context: Any) -> dict[str, Any]:
    """The handler's answer to `event`, checked to be JSON-serializable (a Lambda response must
    be)."""
    response = app.lambda_handler(event, context)
    json.dumps(response)
    return response


def changed(event: Mapping[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of `event` with the field at `path` (keys and list indexes) set to `value`."""
    out = copy.deepcopy(dict(event))
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def without(event: Mapping[str, Any], *path: Any) -> dict[str, Any]:
    """A copy of `event` without the field at `path`."""
    out = copy.deepcopy(dict(event))
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return out


def assert_invalid_event(
    response: dict[str, Any], field_name: str, dynamodb_client: Any, table: str
) -> None:
    """A bad event's answer: only a structured `invalid_event` error naming `field_name` (in
    its fields and its message), and nothing written to the call table."""
    assert set(response) == {"error"}
    assert response["error"]["type"] == "invalid_event"
    assert error_fields(response) == {field_name}
    assert field_name in response["error"]["message"]
    assert table_items(dynamodb_client, table) == []


def heavy_modules_on_import(function: str, heavy: tuple[str, ...], then: str) -> list[str]:
    """Import functions/<function>/app.py in a clean process (no AWS_, POWERTOOLS_ or MIRROR_
    settings of the caller) and return the lines it prints: which of `heavy` the import loaded,
    then what the expression `then` (on the module `app`) is."""
    code = (
        f"import sys; sys.path[:0]=['functions/{function}','shared']; import app; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules)); "
        f"print({then})"
    )
    result = clean_python(
        ["-W", "ignore::DeprecationWarning", "-c", code],
        strip=("AWS_", "POWERTOOLS_", "MIRROR_"),
        CALL_TABLE="mirror-call-state",
        POWERTOOLS_TRACE_DISABLED="1",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()
