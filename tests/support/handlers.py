"""What the Lambda handler tests share: the sample events of events/, caller PII to look for in
logs, Powertools' logger reset between fresh imports, readers of the EMF lines a handler printed
and of what it wrote to the call table."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from mirror.models import CallContext
from tests.conftest import REPO_ROOT

EVENTS_DIR = REPO_ROOT / "events"


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
