"""Fixtures of the integration tests that drive the functions through their Lambda entries:
the functions' environment on the moto call table, and handler modules imported afresh."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from tests.support.api import API_PATH, SERVICE_NAME
from tests.support.handlers import handler_loader, set_handler_env

API_UNSET = (
    "MIRROR_API_MAX_BODY_BYTES",
    "CORRECTION_LLM_TIMEOUT_S",
    "POWERTOOLS_IDEMPOTENCY_DISABLED",
    "MIRROR_TENANT_PRINCIPALS",
    "MIRROR_FIX_REVIEWERS",
)


@pytest.fixture
def api_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Api in local mode (MIRROR_API_LOCAL): requests without an IAM context (the ASGI
    app's) are trusted and no tenant mapping is set. test_api_tenants.py sets its own."""
    monkeypatch.setenv("MIRROR_API_LOCAL", "true")
    return set_handler_env(monkeypatch, call_state_table, SERVICE_NAME, unset=API_UNSET)


@pytest.fixture
def load_module(
    api_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ModuleType]]:
    """Import a handler fresh: `load_module(path, config=json, tiers=[...])`. `tiers` replaces
    what `mirror.llm` would build (`deps.using(remote_tiers=...)`)."""
    yield from handler_loader(monkeypatch, SERVICE_NAME, API_PATH)
