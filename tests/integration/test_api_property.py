"""Property test: requests generated from the committed OpenAPI document never get a 5xx.

schemathesis builds hypothesis strategies from functions/api/openapi.json (valid and invalid
bodies, parameters and types) and sends each request to the ASGI app in-process; the state
store is moto, so every example is input, never an outage, and any 5xx is a bug. Each
operation's examples share one app and one table, so later requests meet the state earlier
ones left (recorded turns, allowed tool calls, ended calls). Besides "no 5xx", every response
must be the documented status and body for that operation, and every error the structured one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scripts.export_openapi import OPENAPI_PATH
from tests.support.api import asgi

MAX_EXAMPLES = 120
"""Per operation (five): about a minute for the whole file on a 2-core machine."""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mangum"),
]

EXAMPLES: dict[tuple[str, str], dict[int, int]] = {}
"""(method, path) -> status -> how many generated requests got it."""
OPERATIONS = {
    ("POST", "/v1/turns:score"),
    ("POST", "/v1/tools:gate"),
    ("POST", "/v1/corrections"),
    ("GET", "/v1/calls/{call_id}"),
    ("POST", "/v1/calls/{call_id}/end"),
}


@pytest.fixture(scope="module", autouse=True)
def report_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: every operation's generated requests reached its success path at
    least once (else "no 5xx" would only cover the validation layer), and the counts are
    printed."""
    yield
    seen = {op: statuses for op, statuses in EXAMPLES.items() if op in OPERATIONS}
    total = sum(sum(s.values()) for s in EXAMPLES.values())
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and total:
        counts = {f"{m} {p}": dict(sorted(s.items())) for (m, p), s in sorted(seen.items())}
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nAPI property test: {total} requests, no 5xx: {counts}")
    if set(seen) == OPERATIONS:  # the whole module ran (not a -k selection)
        assert all(any(200 <= code < 300 for code in s) for s in seen.values()), seen


schema = schemathesis.openapi.from_path(OPENAPI_PATH)
"""The committed document: one test per operation. (The app is a fixture, not `schema.app`: it
must be imported inside the test's moto; schemathesis' lazy `from_fixture` loader does not run
under pytest 9.)"""


SEEDED_CALLS = [(c, t) for c in ("0", "1", "00", "A", "a", "0" * 256) for t in (None, "0", "A")]
"""Calls recorded before the examples run, with the ids hypothesis tries first, so the calls
routes meet known calls (200), not only unknown ones (404)."""


@pytest.fixture
def api_app(load_module: Callable[..., ModuleType]) -> Any:
    """A fresh app on this test's moto table, shared by the operation's examples."""
    api = load_module()
    for call_id, tenant_id in SEEDED_CALLS:
        turn = {"call_id": call_id, "customer_text": "Hi.", "agent_text": "Hello!"}
        if tenant_id is not None:
            turn["tenant_id"] = tenant_id
        assert asgi(api, "POST", "/v1/turns:score", json_body=turn).status_code == 200
    return api.app


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    derandomize=True,
    database=None,
)
def test_generated_requests_never_get_a_server_error(case: Any, api_app: Any) -> None:
    response = case.call(app=api_app)
    statuses = EXAMPLES.setdefault((case.method.upper(), case.path), {})
    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    assert response.status_code < 500, (response.status_code, response.text[:2000])
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["type"], str) and body["error"]["message"]
        for field in body["error"].get("fields") or []:
            assert set(field) == {"field", "message"} and field["field"], field
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
