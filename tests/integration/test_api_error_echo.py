"""Issue 13 item 9 through the Api and the direct handlers: a card number or a phone sent as a
key or a `role` value is neither returned in the 4xx body nor written to the logs; the error
still names the place (`history.0`, `<extra>`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.fakes.lambda_context import FakeContext
from tests.support.api import (
    CORRECTION_PATH,
    GATE_TOOL_PATH,
    SCORE_TURN_PATH,
    asgi,
    http_event,
    invoke,
)
from tests.support.handlers import load_event

pytestmark = pytest.mark.integration

CARD = "4111 1111 1111 1111"
PHONE = "+44 20 7946 0958"
SSN = "123-45-6789"
PII = (CARD, PHONE, SSN, "4111111111111111")

ROUTES = [
    ("/v1/turns:score", "score_turn_block.json"),
    ("/v1/tools:gate", "gate_tool_block.json"),
    ("/v1/corrections", "generate_correction.json"),
]


def _hostile_bodies(sample: str) -> list[tuple[str, dict[str, Any], str]]:
    """(case, body, the field the error must name)."""
    top = {**load_event(sample), CARD: PHONE}
    nested = copy.deepcopy(load_event(sample))
    nested["history"][0][PHONE] = SSN
    role = copy.deepcopy(load_event(sample))
    role["history"][0]["role"] = CARD
    return [("top key", top, "<extra>"), ("nested key", nested, "history.0.customer.<extra>"),
            ("role", role, "history.0")]  # fmt: skip


@pytest.fixture
def api(load_module: Callable[..., ModuleType]) -> ModuleType:
    return load_module()


@pytest.mark.parametrize(("path", "sample"), ROUTES)
def test_api_errors_and_logs_never_echo_keys_or_roles(
    api: ModuleType, capsys: pytest.CaptureFixture[str], path: str, sample: str
) -> None:
    capsys.readouterr()
    for case, body, field in _hostile_bodies(sample):
        response = asgi(api, "POST", path, json_body=body)
        status, _, via_lambda = invoke(api, http_event("POST", path, body=body))
        assert response.status_code == status == 422, case
        assert via_lambda == response.json()
        error = response.json()["error"]
        assert field in {f["field"] for f in error["fields"]}, case
        assert field in error["message"]
        assert not any(p in response.text for p in PII), (case, response.text)
    logged = capsys.readouterr().out
    assert "invalid request" in logged  # the warning is written, without the input
    assert not any(p in logged for p in PII), logged


def test_api_query_errors_name_the_parameter_only(api: ModuleType) -> None:
    response = asgi(api, "GET", "/v1/calls/c1", params={"tenant_id": CARD})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "query.tenant_id"
    assert CARD not in response.text


@pytest.mark.parametrize(
    ("path", "sample"),
    [
        (SCORE_TURN_PATH, "score_turn_block.json"),
        (GATE_TOOL_PATH, "gate_tool_block.json"),
        (CORRECTION_PATH, "generate_correction.json"),
    ],
)
def test_direct_handlers_never_echo_keys_or_roles(
    load_module: Callable[..., ModuleType],
    capsys: pytest.CaptureFixture[str],
    path: Any,
    sample: str,
) -> None:
    handler = load_module(path)
    capsys.readouterr()
    for case, body, field in _hostile_bodies(sample):
        result = handler.lambda_handler(body, FakeContext(function_name=path.parent.name))
        text = json.dumps(result)
        assert result["error"]["type"] == "invalid_event", case
        assert field in {f["field"] for f in result["error"]["fields"]}, case
        assert not any(p in text for p in PII), (case, text)
    logged = capsys.readouterr().out
    assert "invalid" in logged
    assert not any(p in logged for p in PII), logged


def test_an_unknown_call_is_404_without_its_ids(
    api: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    response = asgi(api, "GET", "/v1/calls/4111111111111111", params={"tenant_id": "t-555"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "call_not_found"
    assert "4111111111111111" not in response.text and "t-555" not in response.text
    assert "4111111111111111" not in capsys.readouterr().out
