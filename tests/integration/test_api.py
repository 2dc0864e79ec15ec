"""The Api function (FastAPI via Mangum) against in-process moto DynamoDB.

Every route is driven two ways: through the Lambda entry (`lambda_handler`, Mangum) with API
Gateway HTTP API v2 events shaped like `sam local generate-event apigateway http-api-proxy`
(events/api_*.json), and through the ASGI app itself (httpx's ASGITransport). Each test imports
functions/api/app.py afresh, so its lazily built services belong to this test's moto.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from mirror.calls import ENDED_AT_FIELD, CallsService
from mirror.correction import CorrectionResult
from mirror.gate import GateResult
from mirror.models import CallContext, Verdict
from mirror.state import DynamoDBStateStore
from mirror.state.base import PK
from mirror_dev.local import load_template
from scripts.export_openapi import OPENAPI_PATH, render
from tests.conftest import REPO_ROOT, TEMPLATE_PATH
from tests.fakes.lambda_context import FakeContext
from tests.fakes.tiers import FakeTier
from tests.support.api import (
    API_PATH,
    CORRECTION_PATH,
    GATE_TOOL_PATH,
    NAMESPACE,
    SCORE_TURN_PATH,
    asgi,
    error_of,
    http_event,
    invoke,
)
from tests.support.handlers import (
    PII_TEXT,
    PII_VALUES,
    ctx_of,
    emf_documents,
    emf_metric,
    load_event,
)

pytestmark = [
    pytest.mark.integration,
    # Mangum 0.22 asks asyncio for the current loop the pre-3.12 way; harmless (aws-local §8).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mangum"),
    # a response that adds no batched metric makes Powertools warn on flush; not under test
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def api(load_module: Callable[..., ModuleType]) -> ModuleType:
    return load_module()


@pytest.fixture
def swaps() -> Iterator[ExitStack]:
    """Dependencies swapped in a test (`deps.using`) are back as they were after it."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def store(call_state_table: str, dynamodb_client: Any) -> DynamoDBStateStore:
    """A reader of what the app wrote (its own client on the same moto backend)."""
    return DynamoDBStateStore(call_state_table, client=dynamodb_client)


# --- the two ways in --------------------------------------------------------------------------


def fields_of(body: Any) -> set[str]:
    error = error_of(body, "invalid_event")
    for f in error["fields"]:
        assert set(f) == {"field", "message"} and f["message"]
    return {f["field"] for f in error["fields"]}


def partition(dynamodb_client: Any, table: str, ctx: CallContext) -> list[dict[str, Any]]:
    items = dynamodb_client.scan(TableName=table)["Items"]
    return [i for i in items if i[PK]["S"] == f"{ctx.tenant_id}#{ctx.call_id}"]


def without_latency(verdict: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in verdict.items() if k != "latency_us"}


# --- the contract: OpenAPI document, routes, template ---------------------------------------


def test_committed_openapi_document_is_the_apps_schema(api: ModuleType) -> None:
    committed = OPENAPI_PATH.read_text(encoding="utf-8")
    assert committed == render(api.app.openapi()), "run scripts/export_openapi.py"

    served = asgi(api, "GET", "/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(committed)


def test_openapi_document_is_served_through_the_lambda_entry(api: ModuleType) -> None:
    status, _, body = invoke(api, http_event("GET", "/openapi.json"))
    assert status == 200
    assert body == json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


def test_export_script_check_mode_detects_staleness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scripts.export_openapi as export

    assert export.main(["--check"]) == 0
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(export, "OPENAPI_PATH", stale)
    assert export.main(["--check"]) == 1
    assert export.main([]) == 0
    assert stale.read_text(encoding="utf-8") == OPENAPI_PATH.read_text(encoding="utf-8")


API_ROUTES = {
    ("POST", "/v1/turns:score"),
    ("POST", "/v1/tools:gate"),
    ("POST", "/v1/corrections"),
    ("GET", "/v1/calls/{call_id}"),
    ("POST", "/v1/calls/{call_id}/end"),
    ("POST", "/v1/calls/{call_id}/override:take"),
    ("POST", "/v1/fixes/{fix_id}/approve"),
    ("POST", "/v1/fixes/{fix_id}/reject"),
}


def test_routes_of_the_app_the_document_and_the_template_agree() -> None:
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == API_ROUTES

    resources = load_template(TEMPLATE_PATH)["Resources"]
    function = resources["ApiFunction"]["Properties"]
    assert function["CodeUri"] == "functions/api/"
    assert function["Handler"] == "app.lambda_handler"
    events = function["Events"].values()
    assert all(e["Type"] == "HttpApi" for e in events)
    assert all(e["Properties"]["ApiId"] == {"Ref": "MirrorHttpApi"} for e in events)
    routed = {(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events}
    assert routed == API_ROUTES | {("GET", "/openapi.json")}

    http_api = resources["MirrorHttpApi"]
    assert http_api["Type"] == "AWS::Serverless::HttpApi"
    assert http_api["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    assert http_api["Properties"]["Auth"]["EnableIamAuthorizer"] is True


def test_module_imports_no_sdk_and_no_aws_client() -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "MIRROR_"))
    }
    env.update(CALL_TABLE="mirror-call-state", POWERTOOLS_TRACE_DISABLED="1")
    heavy = ("openai", "plivo", "boto3", "aws_lambda_powertools.utilities.idempotency")
    code = (
        "import sys; sys.path[:0]=['functions/api','shared']; import app; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules)); "
        "print(app.deps.built() == ())"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]


# --- POST /v1/turns:score ----------------------------------------------------------------------


def test_score_through_the_lambda_entry_uses_the_request_id_as_turn_id(
    api: ModuleType, store: DynamoDBStateStore
) -> None:
    event = load_event("api_score_turn.json")
    body = json.loads(event["body"])
    assert "turn_id" not in body

    status, headers, verdict = invoke(api, event)

    assert status == 200
    assert verdict["decision"] == "block"
    assert verdict["blocked_tool_call_ids"] == ["c2"]
    assert verdict["reasons"][0]["code"] == "ungrounded_value"
    request_id = event["requestContext"]["requestId"]
    assert headers["mirror-turn-id"] == request_id
    assert headers["mirror-replayed"] == "false"
    stored = store.get_verdict(ctx_of(body), request_id, time.time())
    assert stored == Verdict.model_validate(verdict)


def test_score_through_asgi_records_under_the_events_turn_id(
    api: ModuleType, store: DynamoDBStateStore
) -> None:
    event = load_event("score_turn_block.json")
    response = asgi(api, "POST", "/v1/turns:score", json_body=event)

    assert response.status_code == 200
    assert response.headers["mirror-turn-id"] == event["turn_id"]
    verdict = Verdict.model_validate(response.json())
    assert verdict.decision == "block" and verdict.blocked_tool_call_ids == ["c2"]
    assert store.get_verdict(ctx_of(event), event["turn_id"], time.time()) == verdict


def test_score_retry_with_the_same_turn_id_replays_and_records_once(
    api: ModuleType, store: DynamoDBStateStore
) -> None:
    event = load_event("score_turn_intervene.json")
    first = asgi(api, "POST", "/v1/turns:score", json_body=event)
    second = asgi(api, "POST", "/v1/turns:score", json_body=event)

    assert first.status_code == second.status_code == 200
    assert first.json()["decision"] == "intervene"
    assert (first.headers["mirror-replayed"], second.headers["mirror-replayed"]) == (
        "false",
        "true",
    )
    assert second.json() == first.json()
    assert [v.turn_id for v in store.list_verdicts(ctx_of(event), time.time())] == [
        event["turn_id"]
    ]


def test_score_without_turn_id_through_asgi_generates_one(api: ModuleType) -> None:
    event = {k: v for k, v in load_event("score_turn_allow.json").items() if k != "turn_id"}
    a = asgi(api, "POST", "/v1/turns:score", json_body=event)
    b = asgi(api, "POST", "/v1/turns:score", json_body=event)
    assert a.status_code == b.status_code == 200
    assert a.headers["mirror-turn-id"] != b.headers["mirror-turn-id"]
    assert b.headers["mirror-replayed"] == "false"  # two requests, two turns


def test_a_non_ascii_turn_id_is_recorded_as_sent_and_percent_encoded_in_the_header(
    api: ModuleType, store: DynamoDBStateStore
) -> None:
    """Found by the property test: header values are latin-1, so this used to be a 500."""
    event = {**load_event("score_turn_block.json"), "turn_id": "tür/Ā 1"}
    response = asgi(api, "POST", "/v1/turns:score", json_body=event)

    assert response.status_code == 200
    assert response.headers["mirror-turn-id"] == "t%C3%BCr%2F%C4%80%201"
    assert store.get_verdict(ctx_of(event), "tür/Ā 1", time.time()) is not None


@pytest.mark.parametrize(
    "name", ["score_turn_allow.json", "score_turn_intervene.json", "score_turn_block.json"]
)
def test_score_decides_as_the_direct_invoke_function(
    load_module: Callable[..., ModuleType], name: str
) -> None:
    direct = load_module(SCORE_TURN_PATH)
    api = load_module(API_PATH)
    event = load_event(name)
    direct_verdict = direct.lambda_handler(copy.deepcopy(event), FakeContext())
    via_api = {**copy.deepcopy(event), "call_id": f"{event['call_id']}-api"}  # a fresh call

    status, _, api_verdict = invoke(api, http_event("POST", "/v1/turns:score", body=via_api))

    assert status == 200
    assert "error" not in direct_verdict
    assert without_latency(api_verdict) == without_latency(direct_verdict)


# --- POST /v1/tools:gate -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gate_tool_allow.json", "gate_tool_block.json"])
def test_gate_decides_as_the_direct_invoke_function(
    load_module: Callable[..., ModuleType], name: str
) -> None:
    direct = load_module(GATE_TOOL_PATH)
    api = load_module(API_PATH)
    event = load_event(name)
    direct_result = direct.lambda_handler(copy.deepcopy(event), FakeContext())
    via_api = {**copy.deepcopy(event), "call_id": f"{event['call_id']}-api"}

    status, _, result = invoke(api, http_event("POST", "/v1/tools:gate", body=via_api))

    assert status == 200
    GateResult.model_validate(result)
    assert {**result, "call_id": event["call_id"]} == direct_result


def test_gate_through_asgi_blocks_a_duplicate_and_replays_a_retry(api: ModuleType) -> None:
    event = load_event("gate_tool_allow.json")
    first = asgi(api, "POST", "/v1/tools:gate", json_body=event)
    retry = asgi(api, "POST", "/v1/tools:gate", json_body=event)
    again = copy.deepcopy(event)
    again["tool_calls"][0]["id"] = "c9"  # the same cancellation under a new id
    duplicate = asgi(api, "POST", "/v1/tools:gate", json_body=again)

    assert first.status_code == retry.status_code == duplicate.status_code == 200
    assert first.json()["decision"] == "allow"
    assert retry.json() == first.json()  # the idempotency record, not a duplicate
    result = GateResult.model_validate(duplicate.json())
    assert result.decision == "block"
    assert result.decisions[0].decided_by == "duplicate_check"


def test_gate_with_a_timing_out_tier_holds_through_the_lambda_entry(
    load_module: Callable[..., ModuleType],
) -> None:
    api = load_module(config=json.dumps({"timeouts": {"tier2_s": 0.05}}), tiers=[FakeTier(delay=5)])
    event = load_event("gate_tool_allow.json")  # Tier 0 is silent: the remote tier must decide

    started = time.monotonic()
    status, _, result = invoke(api, http_event("POST", "/v1/tools:gate", body=event))

    assert time.monotonic() - started < 2
    assert status == 200
    assert result["decision"] == "hold"
    assert result["decisions"][0]["failure"] == "tier_timeout"


def test_score_runs_remote_tiers_on_the_containers_loop_across_invocations(
    load_module: Callable[..., ModuleType],
) -> None:
    api = load_module(config=json.dumps({"timeouts": {"tier2_s": 0.05}}), tiers=[FakeTier(delay=5)])
    event = load_event("score_turn_allow.json")  # Tier 0 is silent: Tier 2 runs, and times out

    loop = api.deps.loop()
    verdicts = []
    for turn_id in ("t-a", "t-b"):  # the second invocation reuses the first one's event loop
        body = {**event, "turn_id": turn_id}
        status, _, verdict = invoke(api, http_event("POST", SCORE, body=body))
        assert status == 200
        verdicts.append(verdict)

    for verdict in verdicts:
        assert verdict["failed_tiers"] == ["tier2"]
        assert verdict["tiers_run"] == ["tier0", "tier2"]
    assert api.deps.loop() is loop and not loop.is_closed()


@pytest.mark.parametrize("name", ["MIRROR_API_MAX_BODY_BYTES", "CORRECTION_LLM_TIMEOUT_S"])
def test_a_bad_setting_fails_at_cold_start(
    load_module: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "-1")
    with pytest.raises(ValueError, match=name):
        load_module()


# --- POST /v1/corrections ----------------------------------------------------------------------


def test_correction_returns_the_direct_functions_result_and_stores_the_note(
    load_module: Callable[..., ModuleType], store: DynamoDBStateStore
) -> None:
    direct = load_module(CORRECTION_PATH)
    api = load_module(API_PATH)
    event = load_event("generate_correction.json")
    direct_result = direct.lambda_handler(copy.deepcopy(event), FakeContext())
    via_api = {**copy.deepcopy(event), "call_id": f"{event['call_id']}-api"}

    status, _, result = invoke(api, http_event("POST", "/v1/corrections", body=via_api))

    assert status == 200
    parsed = CorrectionResult.model_validate(result)
    assert parsed.note_stored is True and parsed.replayed is False
    assert {**result, "call_id": event["call_id"]} == direct_result
    ctx = ctx_of(via_api)
    assert store.take_override(ctx, time.time()) == parsed.override_note


def test_correction_retry_through_asgi_is_replayed(api: ModuleType) -> None:
    event = load_event("generate_correction.json")
    first = asgi(api, "POST", "/v1/corrections", json_body=event)
    second = asgi(api, "POST", "/v1/corrections", json_body=event)
    assert first.status_code == second.status_code == 200
    assert second.json() == {**first.json(), "replayed": True}


# --- GET /v1/calls/{call_id} and POST /v1/calls/{call_id}/end -----------------------------------


def test_get_call_shows_what_turns_score_recorded(api: ModuleType) -> None:
    scored = load_event("api_score_turn.json")
    status, _, verdict = invoke(api, scored)
    assert status == 200
    second_turn = {
        **json.loads(scored["body"]),
        "turn_id": "t-next",
        "customer_text": "Thanks, bye.",
        "agent_text": "You're welcome, goodbye!",
        "tool_calls": [],
        "history": [],
    }
    assert asgi(api, "POST", "/v1/turns:score", json_body=second_turn).status_code == 200

    status, _, state = invoke(api, load_event("api_get_call.json"))

    assert status == 200
    assert (state["call_id"], state["tenant_id"]) == ("CA-demo-0003", "retail")
    assert state["ended"] is False and state["ended_at"] is None
    assert [v["turn_id"] for v in state["verdicts"]] == [
        scored["requestContext"]["requestId"],
        "t-next",
    ]
    assert state["verdicts"][0]["verdict"] == verdict
    assert state["verdicts"][1]["verdict"]["decision"] == "allow"
    assert state["verdicts"][0]["seq"] < state["verdicts"][1]["seq"]
    assert [m["role"] for m in state["history"]][-2:] == ["customer", "agent"]
    assert state["history"][-2]["text"] == "Thanks, bye."
    assert state["started_at"] is not None
    assert state["last_turn_at"] >= state["started_at"]
    assert state["meta"]["started_at"] == state["started_at"]


def test_get_call_is_per_tenant_and_unknown_calls_are_404(api: ModuleType) -> None:
    event = load_event("score_turn_block.json")  # tenant "retail"
    assert asgi(api, "POST", "/v1/turns:score", json_body=event).status_code == 200

    found = asgi(api, "GET", f"/v1/calls/{event['call_id']}", params={"tenant_id": "retail"})
    other_tenant = asgi(api, "GET", f"/v1/calls/{event['call_id']}")
    unknown = asgi(api, "GET", "/v1/calls/CA-never", params={"tenant_id": "retail"})

    assert found.status_code == 200
    assert [v["turn_id"] for v in found.json()["verdicts"]] == [event["turn_id"]]
    for response in (other_tenant, unknown):
        assert response.status_code == 404
        error_of(response.json(), "call_not_found")
    # the ids are not quoted (issue 13 item 9: errors never echo the request)
    assert event["call_id"] not in other_tenant.text and "CA-never" not in unknown.text


def test_end_call_is_idempotent_and_shows_in_the_call_state(
    api: ModuleType, store: DynamoDBStateStore, swaps: ExitStack
) -> None:
    ended_calls: list[tuple[CallContext, dict[str, Any]]] = []
    calls = CallsService(api.deps.store(), on_ended=lambda c, m: ended_calls.append((c, dict(m))))
    swaps.enter_context(api.deps.using(store=api.deps.store(), calls=calls))
    event = load_event("score_turn_block.json")
    ctx = ctx_of(event)
    assert asgi(api, "POST", "/v1/turns:score", json_body=event).status_code == 200
    url = f"/v1/calls/{ctx.call_id}/end"

    before = time.time()
    first = asgi(api, "POST", url, params={"tenant_id": ctx.tenant_id})
    second = invoke(api, http_event("POST", url, route="/v1/calls/{call_id}/end",
                                    query={"tenant_id": ctx.tenant_id}))  # fmt: skip

    assert first.status_code == 200 and second[0] == 200
    body = first.json()
    assert second[2] == body
    assert (body["call_id"], body["tenant_id"], body["ended"]) == (ctx.call_id, "retail", True)
    assert before <= body["ended_at"] <= time.time()
    meta = store.get_call_meta(ctx, time.time())
    assert meta is not None and meta[ENDED_AT_FIELD] == body["ended_at"]
    assert len(ended_calls) == 1  # the seam runs for the end that recorded it, not the retry
    assert ended_calls[0][0] == ctx and ended_calls[0][1][ENDED_AT_FIELD] == body["ended_at"]

    state = asgi(api, "GET", f"/v1/calls/{ctx.call_id}", params={"tenant_id": "retail"}).json()
    assert state["ended"] is True and state["ended_at"] == body["ended_at"]
    assert len(state["verdicts"]) == 1


def test_ending_an_unknown_call_is_404_and_creates_nothing(
    api: ModuleType, dynamodb_client: Any, call_state_table: str
) -> None:
    ctx = CallContext(call_id="CA-never", tenant_id="retail")
    response = asgi(api, "POST", "/v1/calls/CA-never/end", params={"tenant_id": "retail"})
    status, _, body = invoke(
        api,
        http_event("POST", "/v1/calls/CA-never/end", route="/v1/calls/{call_id}/end",
                   query={"tenant_id": "retail"}),
    )  # fmt: skip

    assert response.status_code == status == 404
    error_of(response.json(), "call_not_found")
    assert body == response.json()
    assert partition(dynamodb_client, call_state_table, ctx) == []


def test_the_override_note_is_taken_once(api: ModuleType, store: DynamoDBStateStore) -> None:
    event = load_event("score_turn_block.json")
    ctx = ctx_of(event)
    assert asgi(api, "POST", "/v1/turns:score", json_body=event).status_code == 200
    store.put_override(ctx, "Confirm the medium before ordering.", time.time(), 600)
    url = f"/v1/calls/{ctx.call_id}/override:take"
    route = "/v1/calls/{call_id}/override:take"

    first = asgi(api, "POST", url, params={"tenant_id": ctx.tenant_id})
    status, _, second = invoke(
        api, http_event("POST", url, route=route, query={"tenant_id": ctx.tenant_id})
    )

    assert first.status_code == 200 and status == 200
    assert first.json() == {"call_id": ctx.call_id, "tenant_id": "retail",
                            "note": "Confirm the medium before ordering."}  # fmt: skip
    assert second["note"] is None  # read once
    assert store.take_override(ctx, time.time()) is None
    unknown = asgi(api, "POST", "/v1/calls/CA-never/override:take", params={"tenant_id": "retail"})
    assert unknown.status_code == 404
    error_of(unknown.json(), "call_not_found")
    other_tenant = asgi(api, "POST", url, params={"tenant_id": "pizzeria"})
    assert other_tenant.status_code == 404  # keys are per tenant


# --- bad input ---------------------------------------------------------------------------------

SCORE = "/v1/turns:score"
GATE = "/v1/tools:gate"
CORRECTIONS = "/v1/corrections"


def _score(**changes: Any) -> dict[str, Any]:
    return {**load_event("score_turn_block.json"), **changes}


def _gate(**changes: Any) -> dict[str, Any]:
    return {**load_event("gate_tool_block.json"), **changes}


def _correction(**changes: Any) -> dict[str, Any]:
    return {**load_event("generate_correction.json"), **changes}


BAD_BODIES: list[tuple[str, str, Callable[[], Any], set[str]]] = [
    ("score: no call_id", SCORE, lambda: {"customer_text": "hi"}, {"call_id"}),
    ("score: empty call_id", SCORE, lambda: _score(call_id=""), {"call_id"}),
    (
        "score: tool call id not a string",
        SCORE,
        lambda: _score(tool_calls=[{"id": 7, "name": "cancel_order"}]),
        {"tool_calls.0.id"},
    ),
    ("score: unknown field", SCORE, lambda: _score(surprise=True), {"<extra>"}),
    (
        "score: bad role in history",
        SCORE,
        lambda: _score(history=[{"role": "robot", "text": "x"}]),
        {"history.0"},
    ),
    (
        "score: tenant with '#'",
        SCORE,
        lambda: _score(tenant_id="a#b"),
        {"tenant_id"},
    ),
    (
        "score: a directive that does not parse",
        SCORE,
        lambda: _score(policies=["FORBID"]),
        {"policies"},
    ),
    (
        "score: duplicate tool call ids",
        SCORE,
        lambda: _score(tool_calls=[{"id": "a", "name": "x"}, {"id": "a", "name": "y"}]),
        {"tool_calls"},
    ),
    ("score: body is a list", SCORE, lambda: [1, 2], {"body"}),
    ("gate: no tool calls", GATE, lambda: _gate(tool_calls=[]), {"tool_calls"}),
    (
        "gate: retry_of names itself",
        GATE,
        lambda: _gate(tool_calls=[{"id": "c1", "name": "cancel_order", "retry_of": "c1"}]),
        {"tool_calls.0"},
    ),
    (
        "corrections: nothing to correct",
        CORRECTIONS,
        lambda: _correction(verdict={"decision": "allow", "score": 0.0}),
        {"verdict.decision"},
    ),
    ("corrections: no verdict", CORRECTIONS, lambda: _correction(verdict=None), {"verdict"}),
]


@pytest.mark.parametrize(
    ("path", "make", "fields"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_bodies_are_422_naming_the_field(
    api: ModuleType,
    dynamodb_client: Any,
    call_state_table: str,
    path: str,
    make: Callable[[], Any],
    fields: set[str],
) -> None:
    body = make()
    response = asgi(api, "POST", path, json_body=body)
    status, _, via_lambda = invoke(api, http_event("POST", path, body=body))

    assert response.status_code == status == 422
    assert fields <= fields_of(response.json())
    assert via_lambda == response.json()
    assert response.json()["error"]["message"].startswith("invalid event: ")
    assert dynamodb_client.scan(TableName=call_state_table)["Items"] == []  # nothing recorded


def test_field_errors_never_echo_the_input(api: ModuleType) -> None:
    body = _score(customer_text=PII_TEXT * 200)  # over the 8000-character limit
    response = asgi(api, "POST", SCORE, json_body=body)
    assert response.status_code == 422
    assert fields_of(response.json()) == {"customer_text"}
    assert not any(value in response.text for value in PII_VALUES)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("{not json", "JSON decode error"), ('{"call_id": "x",}', "JSON decode error")],
)
def test_malformed_json_is_400_naming_the_body(api: ModuleType, raw: str, message: str) -> None:
    response = asgi(
        api, "POST", SCORE, content=raw.encode(), headers={"content-type": "application/json"}
    )
    status, _, via_lambda = invoke(api, http_event("POST", SCORE, raw_body=raw))

    assert response.status_code == status == 400
    error = error_of(response.json(), "invalid_event")
    assert [f["field"] for f in error["fields"]] == ["body"]
    assert error["fields"][0]["message"].startswith(message)
    assert via_lambda == response.json()


def test_missing_body_is_422_naming_the_body(api: ModuleType) -> None:
    response = asgi(api, "POST", GATE)
    assert response.status_code == 422
    assert fields_of(response.json()) == {"body"}


def test_a_body_without_content_type_is_read_as_json(api: ModuleType) -> None:
    event = load_event("score_turn_block.json")
    status, _, verdict = invoke(
        api, http_event("POST", SCORE, body=event, content_type=None, base64_body=True)
    )
    assert status == 200 and verdict["decision"] == "block"


def test_a_non_json_content_type_is_415(api: ModuleType) -> None:
    response = asgi(
        api,
        "POST",
        SCORE,
        content=json.dumps(load_event("score_turn_block.json")).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert "application/json" in error_of(response.json(), "unsupported_media_type")["message"]


def test_an_oversized_body_is_413_before_and_while_reading(
    load_module: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIRROR_API_MAX_BODY_BYTES", "2048")
    api = load_module()
    big = _score(agent_text="x" * 3000)
    declared = asgi(api, "POST", SCORE, json_body=big)  # Content-Length says so

    async def chunks() -> Any:  # no Content-Length: counted as it arrives
        text = json.dumps(big).encode()
        for i in range(0, len(text), 512):
            yield text[i : i + 512]

    async def streamed() -> httpx.Response:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                SCORE, content=chunks(), headers={"content-type": "application/json"}
            )

    loop = asyncio.new_event_loop()
    try:
        chunked = loop.run_until_complete(streamed())
    finally:
        loop.close()
    status, _, via_lambda = invoke(api, http_event("POST", SCORE, body=big))
    small = asgi(api, "POST", SCORE, json_body=_score())

    assert "content-length" not in chunked.request.headers
    for response in (declared, chunked):
        assert response.status_code == 413
        assert "2048" in error_of(response.json(), "payload_too_large")["message"]
    assert status == 413 and via_lambda == declared.json()
    assert small.status_code == 200


def test_a_turn_with_a_tool_output_over_an_item_is_scored_and_stored_cut(api: ModuleType) -> None:
    """Issue 13 item 5: the output is stored cut to MAX_STORED_TOOL_OUTPUT_BYTES, so the turn
    is recorded and gets its verdict (it used to be a 422, the turn unsupervised)."""
    huge_output = "€" * 150_000  # 450 KB as UTF-8: over one DynamoDB item
    body = _score(
        history=[],
        tool_results=[{"role": "tool", "name": "get_order_details", "text": huge_output}],
    )
    response = asgi(api, "POST", SCORE, json_body=body)
    assert response.status_code == 200, response.json()
    assert response.json()["recorded"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [({"tenant_id": "a#b"}, "query.tenant_id"), ({"tenant_id": ""}, "query.tenant_id")],
)
def test_bad_query_parameters_are_422_naming_them(
    api: ModuleType, params: dict[str, str], field: str
) -> None:
    for method, url in (("GET", "/v1/calls/CA-1"), ("POST", "/v1/calls/CA-1/end")):
        response = asgi(api, method, url, params=params)
        assert response.status_code == 422
        assert fields_of(response.json()) == {field}


def test_a_call_id_over_256_characters_is_422(api: ModuleType) -> None:
    response = asgi(api, "GET", "/v1/calls/" + "c" * 257)
    assert response.status_code == 422
    assert fields_of(response.json()) == {"path.call_id"}


def test_unknown_routes_and_methods_are_structured(api: ModuleType) -> None:
    missing = asgi(api, "GET", "/v1/nothing")
    wrong_method = asgi(api, "GET", SCORE)
    status, headers, via_lambda = invoke(api, http_event("DELETE", "/v1/tools:gate"))

    assert missing.status_code == 404
    error_of(missing.json(), "not_found")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    error_of(wrong_method.json(), "method_not_allowed")
    assert status == 405 and error_of(via_lambda, "method_not_allowed")


# --- the state store is down -------------------------------------------------------------------


@pytest.fixture
def api_without_table(api: ModuleType, dynamodb_client: Any) -> Iterator[ModuleType]:
    """The app on a table that does not exist: every store call fails as an outage does."""
    with api.deps.using(store=DynamoDBStateStore("no-such-table", client=dynamodb_client)):
        yield api


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", SCORE, lambda: load_event("score_turn_block.json")),
        ("GET", "/v1/calls/CA-demo-0003", lambda: None),
        ("POST", "/v1/calls/CA-demo-0003/end", lambda: None),
    ],
    ids=["score", "get_call", "end_call"],
)
def test_store_outage_is_503_structured(
    api_without_table: ModuleType,
    capsys: pytest.CaptureFixture[str],
    method: str,
    path: str,
    body: Callable[[], Any],
) -> None:
    response = asgi(api_without_table, method, path, json_body=body())
    status, _, via_lambda = invoke(api_without_table, http_event(method, path, body=body()))

    assert response.status_code == status == 503
    for payload in (response.json(), via_lambda):
        error = error_of(payload, "state_unavailable")
        assert "ResourceNotFoundException" in error["message"]
    docs = emf_documents(capsys.readouterr().out)
    assert len(emf_metric(docs, "StateStoreErrors")) == 2


def test_store_outage_holds_the_gate_and_still_corrects(api_without_table: ModuleType) -> None:
    gate = asgi(api_without_table, "POST", GATE, json_body=load_event("gate_tool_block.json"))
    correction = asgi(
        api_without_table, "POST", CORRECTIONS, json_body=load_event("generate_correction.json")
    )

    assert gate.status_code == 200  # the gate's failure rule, as GateTool answers
    result = GateResult.model_validate(gate.json())
    assert result.decision == "hold"
    assert result.decisions[0].failure == "store_unavailable"
    assert correction.status_code == 200  # the caller must hear something
    parsed = CorrectionResult.model_validate(correction.json())
    assert parsed.note_stored is False and parsed.source == "template"


# --- the Lambda entry: metrics, logs ------------------------------------------------------------


def test_lambda_entry_emits_metrics_and_logs_no_caller_pii(
    api: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    scored = _score(turn_id="t-pii", customer_text=PII_TEXT, history=[])
    status, _, _ = invoke(api, http_event("POST", SCORE, body=scored))
    bad = invoke(api, http_event("POST", SCORE, body=_score(call_id="")))

    assert status == 200 and bad[0] == 422
    out = capsys.readouterr().out
    assert not any(value in out for value in PII_VALUES)
    docs = emf_documents(out)
    assert len(emf_metric(docs, "ApiRequests")) == 2
    assert len(emf_metric(docs, "InvalidEvents")) == 1
    [(directive, doc)] = emf_metric(docs, "Verdicts")
    assert directive["Namespace"] == NAMESPACE and doc["decision"] == "block"
    logs = [json.loads(line) for line in out.splitlines() if line.startswith('{"level"')]
    verdict_logs = [r for r in logs if r["message"] == "verdict"]
    assert [(r["call_id"], r["turn_id"]) for r in verdict_logs] == [("CA-demo-0003", "t-pii")]
    assert verdict_logs[0]["function_name"] == "mirror-api-test"
