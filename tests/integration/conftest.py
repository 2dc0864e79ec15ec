"""Fixtures of the integration tests that drive the functions through their Lambda entries:
the functions' environment on the moto call table, and handler modules imported afresh."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mirror_dev.local import import_file
from tests.support.api import API_PATH, NAMESPACE, SERVICE_NAME, unload
from tests.support.handlers import CurrentStdout, reset_logger


@pytest.fixture
def api_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CALL_TABLE", call_state_table)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE_NAME)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    for name in (
        "MIRROR_CONFIG",
        "MIRROR_API_MAX_BODY_BYTES",
        "CORRECTION_LLM_TIMEOUT_S",
        "POWERTOOLS_METRICS_DISABLED",
        "POWERTOOLS_DEV",
        "POWERTOOLS_LOGGER_LOG_EVENT",
        "POWERTOOLS_IDEMPOTENCY_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    return call_state_table


@pytest.fixture
def load_module(
    api_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ModuleType]]:
    """Import a handler fresh: `load_module(path, config=json, tiers=[...])`. `tiers` replaces
    what `mirror.llm` would build (`deps.using(remote_tiers=...)`)."""
    loaded: list[ModuleType] = []
    swaps = ExitStack()

    def load(path: Path = API_PATH, config: str | None = None, tiers: Any = None) -> ModuleType:
        if config is not None:
            monkeypatch.setenv("MIRROR_CONFIG", config)
        reset_logger(SERVICE_NAME)
        module = import_file(path, path.parent.name)
        if hasattr(module, "deps"):
            swaps.enter_context(module.deps.using(remote_tiers=lambda config: list(tiers or [])))
        module.metrics.clear_metrics()
        for handler in logging.getLogger(SERVICE_NAME).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(CurrentStdout())
        loaded.append(module)
        return module

    with swaps:
        yield load
    for module in loaded:
        unload(module)
    reset_logger(SERVICE_NAME)
