"""Campaign: hostile requests at the Api through its Lambda entry (Mangum, HTTP API v2 events).

test_api_property.py already sends schemathesis' requests (built from the OpenAPI document) to
the ASGI app; this module covers what that cannot generate: raw bodies that are not what the
document describes (NaN and Infinity literals, JSON nested thousands deep, duplicate keys,
truncated JSON, invalid UTF-8 in a base64 body, huge bodies), and the sample events of events/
broken one thing at a time (tests/fakes/hostile.py), every one through API Gateway's event
shape. For every case: the answer is the documented status and `{"error": ...}` shape (no 5xx
but the documented 503s), and the seeded call still reads back through `GET /v1/calls/{id}`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.hostile import hostile_event, long_ids, strings
from tests.support.api import http_event, invoke
from tests.support.campaign import Tally, assert_error_shape
from tests.support.handlers import load_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mangum"),
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

SEEDED = {"call_id": "CA-campaign-api", "tenant_id": "pizzeria"}
ROUTES = {
    "/v1/turns:score": "score_turn_allow.json",
    "/v1/tools:gate": "gate_tool_allow.json",
    "/v1/corrections": "generate_correction.json",
}
DOCUMENTED_5XX = {503}
"""state_unavailable / event_unavailable / fix_unavailable: an outage, never input."""


@pytest.fixture
def api(
    load_module: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, Tally]]:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    module = load_module()
    turn = {**SEEDED, "customer_text": "Hi.", "agent_text": "Hello!"}
    status, _, _ = invoke(module, http_event("POST", "/v1/turns:score", body=turn))
    assert status == 200
    tally = Tally("api")
    yield module, tally
    tally.write()


def _send(module: ModuleType, tally: Tally, event: dict[str, Any]) -> tuple[int, Any]:
    try:
        status, _, body = invoke(module, event)
    except Exception as e:
        tally.crashes += 1
        raise AssertionError(f"the Lambda entry raised {type(e).__name__}: {e!s:.300}") from e
    tally.saw(str(status))
    if status >= 500 and status not in DOCUMENTED_5XX:
        tally.server_errors += 1
        raise AssertionError((status, body))
    if status >= 400:
        assert_error_shape(body)
    return status, body


def _still_readable(module: ModuleType, tally: Tally) -> None:
    path = f"/v1/calls/{SEEDED['call_id']}"
    event = http_event(
        "GET", path, route="/v1/calls/{call_id}", query={"tenant_id": SEEDED["tenant_id"]}
    )
    status, body = _send(module, tally, event)
    assert status == 200, (status, body)


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


RAW_BODIES = st.one_of(
    st.integers(100, 100_000).map(_deep_json),
    st.integers(100, 20_000).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.sampled_from(
        [
            '{"call_id": NaN}',
            '{"call_id": "x", "customer_text": Infinity}',
            '{"call_id": "a", "call_id": "b", "customer_text": "", "agent_text": ""}',
            '{"call_id": "x", "customer_text": "unterminated',
            "",
            "null",
            "[]",
            '"a string"',
            "1e999999",
            '{"call_id": "\\ud800", "customer_text": "", "agent_text": ""}',
            "\ufeff{}",
        ]
    ),
    st.integers(1_000_000, 8_000_000).map(lambda n: json.dumps({"customer_text": "x" * n})),
)


@given(data=st.data())
def test_raw_hostile_bodies_get_a_structured_answer(
    api: tuple[ModuleType, Tally], data: st.DataObject
) -> None:
    module, tally = api
    route = data.draw(st.sampled_from(sorted(ROUTES)), label="route")
    body = data.draw(RAW_BODIES, label="body")
    as_base64 = data.draw(st.booleans(), label="base64")
    event = http_event("POST", route, raw_body=body, base64_body=as_base64)
    status, _ = _send(module, tally, event)
    assert status < 300 or status in {400, 413, 415, 422, *DOCUMENTED_5XX}, status
    _still_readable(module, tally)


def test_invalid_utf8_in_a_base64_body_is_a_client_error(api: tuple[ModuleType, Tally]) -> None:
    module, tally = api
    event = http_event("POST", "/v1/turns:score", raw_body="{}", base64_body=True)
    event["body"] = base64.b64encode(b'{"call_id": "\xff\xfe", "customer_text": ""}').decode()
    status, _ = _send(module, tally, event)
    assert 400 <= status < 500, status


@given(data=st.data())
def test_hostile_events_through_the_lambda_entry(
    api: tuple[ModuleType, Tally], data: st.DataObject
) -> None:
    """The sample events broken one thing at a time, about the seeded call (so a poisoning
    case would show on the read-back)."""
    module, tally = api
    route = data.draw(st.sampled_from(sorted(ROUTES)), label="route")
    sample = {**load_event(ROUTES[route]), **SEEDED}
    sample.pop("turn_id", None)
    event = data.draw(hostile_event(sample), label="event")
    try:
        raw = json.dumps(event)  # NaN/Infinity literals included: Python's json writes them
    except (ValueError, RecursionError):
        return
    _send(module, tally, http_event("POST", route, raw_body=raw))
    _still_readable(module, tally)


@given(call_id=long_ids(), tenant_id=st.one_of(st.none(), strings(), long_ids()))
def test_hostile_ids_on_the_calls_routes(
    api: tuple[ModuleType, Tally], call_id: str, tenant_id: str | None
) -> None:
    """Path and query ids: 256+ characters, separators, zero-width and lone surrogates (as
    API Gateway would pass them, percent-decoded)."""
    module, tally = api
    query = {} if tenant_id is None else {"tenant_id": tenant_id}
    for method, suffix in (("GET", ""), ("POST", "/end"), ("POST", "/override:take")):
        try:
            path = f"/v1/calls/{call_id}{suffix}"
            event = http_event(method, path, route=f"/v1/calls/{{call_id}}{suffix}", query=query)
        except UnicodeEncodeError:  # httpx cannot put a lone surrogate in a query string
            return
        status, _ = _send(module, tally, event)
        assert status in {200, 202, 400, 403, 404, 409, 422, *DOCUMENTED_5XX}, status
    _still_readable(module, tally)
