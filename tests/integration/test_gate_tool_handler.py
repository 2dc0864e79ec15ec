"""The GateTool Lambda handler, called for real against in-process moto DynamoDB.

Each test imports functions/gate_tool/app.py afresh under a unique module name, with its
environment already set, so the module-level Logger/Metrics/config see the test's settings and
the lazily built `_service` (its DynamoDB client, its idempotency layer) belongs to this test's
moto. Remote tiers are injected with `deps.using(remote_tiers=...)`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mirror.gate import DEFAULT_SPOKEN_LINES, IDEMPOTENCY_PK, GateResult
from mirror.models import CallContext, MirrorConfig
from mirror.state import DynamoDBStateStore, tool_fingerprint
from mirror.state.base import PK, SK
from mirror_dev.local import import_file, load_template
from tests.conftest import REPO_ROOT, TEMPLATE_PATH
from tests.fakes.lambda_context import FakeContext
from tests.fakes.tiers import FakeTier
from tests.support.handlers import (
    EVENTS_DIR,
    NAMESPACE,
    PII_TEXT,
    PII_VALUES,
    assert_invalid_event,
    changed,
    ctx_of,
    emf_documents,
    emf_metric,
    error_fields,
    handler_loader,
    heavy_modules_on_import,
    invoke_handler,
    load_event,
    set_handler_env,
    table_items,
    without,
)

pytestmark = pytest.mark.integration

HANDLER_PATH = REPO_ROOT / "functions" / "gate_tool" / "app.py"
SERVICE_NAME = "mirror-gate-tool-test"
FAST_CONFIG = json.dumps({"timeouts": {"tier1_s": 0.05, "tier2_s": 0.05}})


@pytest.fixture
def handler_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_handler_env(
        monkeypatch, call_state_table, SERVICE_NAME, unset=("POWERTOOLS_IDEMPOTENCY_DISABLED",)
    )


@pytest.fixture
def load_app(
    handler_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ModuleType]]:
    """Import the handler fresh: `load_app(tiers=[...], config=json)`; the tiers replace what
    `mirror.llm` would build, so tests never depend on that module's configuration."""
    yield from handler_loader(monkeypatch, SERVICE_NAME, HANDLER_PATH, "gate_tool_app")


@pytest.fixture
def app(load_app: Callable[..., ModuleType]) -> ModuleType:
    return load_app()


@pytest.fixture
def store(call_state_table: str, dynamodb_client: Any) -> DynamoDBStateStore:
    return DynamoDBStateStore(call_state_table, client=dynamodb_client)


def invoke(app: ModuleType, event: Any, context: FakeContext | None = None) -> dict[str, Any]:
    return invoke_handler(app, event, context or FakeContext())


def counted(docs: list[dict[str, Any]], name: str, dimension: str) -> list[str]:
    """The `dimension` value of every `name` metric emitted, in order."""
    out = []
    for directive, doc in emf_metric(docs, name):
        assert directive["Namespace"] == NAMESPACE
        assert any(dimension in dims for dims in directive["Dimensions"])
        out.append(doc[dimension])
    return out


# --- the sample events ------------------------------------------------------------------------

SAMPLE_EVENTS = {
    "gate_tool_allow.json": "allow",
    "gate_tool_block.json": "block",
    "gate_tool_duplicate.json": "block",
    "gate_tool_bad_input.json": "invalid_event",
}


def test_every_sample_event_is_covered() -> None:
    assert {p.name for p in EVENTS_DIR.glob("gate_tool_*.json")} == set(SAMPLE_EVENTS)


def test_sample_allow(
    app: ModuleType, store: DynamoDBStateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    event = load_event("gate_tool_allow.json")
    response = invoke(app, event)

    result = GateResult.model_validate(response)
    assert result.decision == "allow" and result.spoken_line is None
    cancel, lookup = result.decisions
    assert (cancel.tool_call_id, cancel.decision, cancel.decided_by) == ("c2", "allow", "tier0")
    assert (lookup.tool_call_id, lookup.decision, lookup.decided_by) == ("c3", "allow", "not_gated")
    fp = tool_fingerprint("cancel_pending_order", event["tool_calls"][0]["args"])
    holder = store.get_tool_call(ctx_of(event), fp, time.time())
    assert holder is not None and holder.tool_call_id == "c2"
    docs = emf_documents(capsys.readouterr().out)
    assert sorted(counted(docs, "GateDecisions", "decision")) == ["allow", "allow"]
    assert sorted(counted(docs, "GateDecisions", "decided_by")) == ["not_gated", "tier0"]
    assert emf_metric(docs, "GateFailures") == []


def test_sample_block(
    app: ModuleType,
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = invoke(app, load_event("gate_tool_block.json"))

    assert response["decision"] == "block"
    [decision] = response["decisions"]
    assert decision["reasons"][0]["code"] == "ungrounded_value"
    assert decision["spoken_line"] == DEFAULT_SPOKEN_LINES["ungrounded_value"]
    assert response["spoken_line"] == decision["spoken_line"]
    # only the idempotency record: a blocked call is not recorded as allowed
    assert [i[PK]["S"] for i in table_items(dynamodb_client, handler_env)] == [IDEMPOTENCY_PK]
    docs = emf_documents(capsys.readouterr().out)
    assert counted(docs, "GateDecisions", "decision") == ["block"]


def test_sample_duplicate(app: ModuleType) -> None:
    response = invoke(app, load_event("gate_tool_duplicate.json"))
    first, second = response["decisions"]
    assert first["decision"] == "allow"
    assert (second["decision"], second["decided_by"]) == ("block", "duplicate_check")
    assert second["reasons"][0]["code"] == "duplicate_call"
    assert second["spoken_line"] == DEFAULT_SPOKEN_LINES["duplicate_call"]
    assert response["decision"] == "block"


def test_sample_bad_input(
    app: ModuleType,
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = invoke(app, load_event("gate_tool_bad_input.json"))
    assert set(response) == {"error"}
    assert response["error"]["type"] == "invalid_event"
    assert error_fields(response) == {"call_id", "tool_calls.0.<extra>", "tool_calls.1"}
    assert table_items(dynamodb_client, handler_env) == []
    docs = emf_documents(capsys.readouterr().out)
    assert counted(docs, "GateFailures", "kind") == ["invalid_event"]


# --- idempotency --------------------------------------------------------------------------------


def test_retried_request_gets_the_same_decision_and_the_judge_ran_once(
    load_app: Callable[..., ModuleType],
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tier = FakeTier()
    app = load_app(tiers=[tier])
    event = load_event("gate_tool_allow.json")
    first = invoke(app, event, FakeContext(aws_request_id="req-1"))
    items = table_items(dynamodb_client, handler_env)
    capsys.readouterr()

    retry = invoke(app, copy.deepcopy(event), FakeContext(aws_request_id="req-2"))
    assert retry == first
    assert tier.calls == 1
    assert table_items(dynamodb_client, handler_env) == items
    docs = emf_documents(capsys.readouterr().out)
    # the reversible lookup is decided again (no I/O); the cancel is replayed, not recounted
    assert counted(docs, "GateDecisions", "decided_by") == ["not_gated"]
    replays = emf_metric(docs, "GateReplays")
    assert len(replays) == 1 and replays[0][1]["GateReplays"] in (1.0, [1.0])


def test_retry_on_a_new_container_is_replayed_too(load_app: Callable[..., ModuleType]) -> None:
    event = load_event("gate_tool_block.json")
    first_tier, second_tier = FakeTier(), FakeTier()
    first = invoke(load_app(tiers=[first_tier]), event)
    assert invoke(load_app(tiers=[second_tier]), event) == first
    assert first_tier.calls == second_tier.calls == 0  # Tier 0 decided; then a replay


# --- failure modes and their metrics ----------------------------------------------------------


def _raise_build(config: MirrorConfig) -> list[Any]:
    raise RuntimeError("tier configuration is broken")


@pytest.mark.parametrize(
    ("setup", "kind"),
    [
        ({"tiers": [FakeTier(delay=1.0)]}, "tier_timeout"),
        ({"tiers": [FakeTier(error=RuntimeError("HTTP 503"))]}, "tier_error"),
        ({"table": "no-such-table"}, "store_unavailable"),
        ({"build": _raise_build}, "internal_error"),
    ],
    ids=["tier-timeout", "tier-error", "store-unavailable", "service-build-fails"],
)
def test_failures_hold_the_irreversible_call_and_are_counted(
    load_app: Callable[..., ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: dict[str, Any],
    kind: str,
) -> None:
    app = load_app(tiers=setup.get("tiers"), config=FAST_CONFIG)
    if "table" in setup:
        monkeypatch.setenv("CALL_TABLE", setup["table"])  # read when the service is built
    swap = app.deps.using(remote_tiers=setup["build"]) if "build" in setup else nullcontext()
    event = load_event("gate_tool_allow.json")
    with swap:
        response = invoke(app, event)

    cancel, lookup = response["decisions"]
    assert (cancel["decision"], cancel["failure"]) == ("hold", kind)
    assert cancel["spoken_line"] == DEFAULT_SPOKEN_LINES["tier_unavailable"]
    assert lookup["decision"] == "allow"  # reversible: fail open
    assert response["decision"] == "hold"
    docs = emf_documents(capsys.readouterr().out)
    assert counted(docs, "GateFailures", "kind") == [kind]
    assert counted(docs, "GateDecisions", "decision") == ["hold", "allow"]


def test_fail_open_mode_from_the_config(
    load_app: Callable[..., ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.dumps({**json.loads(FAST_CONFIG), "tool_gate_failure_mode": "allow"})
    app = load_app(tiers=[FakeTier(delay=1.0)], config=config)
    response = invoke(app, load_event("gate_tool_allow.json"))
    cancel = response["decisions"][0]
    assert (cancel["decision"], cancel["failure"]) == ("allow", "tier_timeout")
    assert response["decision"] == "allow"
    docs = emf_documents(capsys.readouterr().out)
    assert counted(docs, "GateFailures", "kind") == ["tier_timeout"]


# --- bad input --------------------------------------------------------------------------------

GOOD_EVENT: dict[str, Any] = {
    "call_id": "CA-bad-1",
    "tenant_id": "shop",
    "customer_text": "Yes, please.",
    "history": [
        {"role": "customer", "text": "Cancel order W100 please."},
        {"role": "agent", "text": "Cancel order W100, right?"},
        {"role": "customer", "text": "Yes, please."},
    ],
    "tool_calls": [{"id": "c1", "name": "cancel_order", "args": {"order_id": "W100"}}],
}


def _without(key: str) -> dict[str, Any]:
    return without(GOOD_EVENT, key)


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    return changed(GOOD_EVENT, path, value)


BAD_EVENTS: dict[str, tuple[Any, str]] = {
    "missing call_id": (_without("call_id"), "call_id"),
    "no tool calls": (_with(("tool_calls",), []), "tool_calls"),
    "tool_calls missing": (_without("tool_calls"), "tool_calls"),
    "tool call without name": (
        _with(("tool_calls", 0), {"id": "c1", "args": {}}),
        "tool_calls.0.name",
    ),
    "tool call with unknown key": (
        _with(("tool_calls", 0, "previous_failed"), True),
        "tool_calls.0.<extra>",
    ),
    "retry_of names itself": (_with(("tool_calls", 0, "retry_of"), "c1"), "tool_calls.0"),
    "args not an object": (_with(("tool_calls", 0, "args"), ["W100"]), "tool_calls.0.args"),
    "duplicate tool call ids": (
        _with(("tool_calls",), [GOOD_EVENT["tool_calls"][0]] * 2),
        "tool_calls",
    ),
    "irreversible not a bool": (
        _with(("tool_calls", 0, "irreversible"), "maybe"),
        "tool_calls.0.irreversible",
    ),
    "policy does not parse": (_with(("policies",), ['FORBID "x" WHEN']), "policies"),
    "tenant_id with '#'": (_with(("tenant_id",), "acme#evil"), "tenant_id"),
    "history role unknown": (_with(("history", 0, "role"), "supervisor"), "history.0"),
    "customer_text too long": (_with(("customer_text",), "a" * 8001), "customer_text"),
    "unknown top-level field": (_with(("turn_id",), "t1"), "<extra>"),
    "event is a list": ([GOOD_EVENT], "(event)"),
    "event is a string": (json.dumps(GOOD_EVENT), "(event)"),
    "event is null": (None, "(event)"),
}


def test_the_good_event_is_good(app: ModuleType) -> None:
    """The bad events below differ from this one only in the named field."""
    assert invoke(app, copy.deepcopy(GOOD_EVENT))["decision"] == "allow"


@pytest.mark.parametrize(("event", "field_name"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_input_names_the_field_and_writes_nothing(
    app: ModuleType,
    dynamodb_client: Any,
    handler_env: str,
    capsys: pytest.CaptureFixture[str],
    event: Any,
    field_name: str,
) -> None:
    assert_invalid_event(
        invoke(app, copy.deepcopy(event)), field_name, dynamodb_client, handler_env
    )
    docs = emf_documents(capsys.readouterr().out)
    assert counted(docs, "GateFailures", "kind") == ["invalid_event"]


# --- logs, imports, wiring --------------------------------------------------------------------


def test_logs_never_contain_caller_pii(app: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    event = {
        "call_id": "CA-pii-1",
        "tenant_id": "bank",
        "history": [{"role": "customer", "text": PII_TEXT}],
        "customer_text": PII_TEXT,
        "tool_calls": [
            {
                "id": "c1",
                "name": "update_contact",
                "args": {"email": "jo@example.com", "phone": "415-555-0134"},
            }
        ],
    }
    response = invoke(app, event)
    assert response["decision"] == "block"  # the caller did not confirm
    assert "error" in invoke(app, {**event, "tool_calls": [{"id": "c1", "name": "x", "bad": 1}]})
    invoke(app, {**event, "call_id": 42})

    captured = capsys.readouterr()
    logs = captured.out + captured.err
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    gate_logs = [line for line in lines if line.get("message") == "gate"]
    assert gate_logs, "the DEBUG gate log (the one that would carry the event) was not emitted"
    assert "[email]" in json.dumps(gate_logs) and "[phone]" in json.dumps(gate_logs)
    assert any(line.get("message") == "gate decisions" for line in lines)
    assert any(line.get("message") == "invalid GateTool event" for line in lines)
    for value in PII_VALUES:
        assert value not in logs


def test_remote_tiers_come_from_mirror_llm(app: ModuleType) -> None:
    # a second copy: the real remote tiers, not the fixture's stand-in
    pristine = import_file(HANDLER_PATH, "gate_tool_app_wiring")

    assert pristine.deps.remote_tiers()(MirrorConfig()) == []  # nothing configured: Tier 0 only
    config = MirrorConfig.model_validate(
        {"llm": {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "NO_SUCH_KEY_ENV"}}
    )
    tiers = pristine.deps.remote_tiers()(config)  # builds clients without I/O
    assert [t.tier for t in tiers] == ["tier2"]


def test_handler_module_imports_no_heavy_clients() -> None:
    heavy = ("openai", "plivo", "fastapi", "aws_lambda_powertools.utilities.idempotency")
    loaded, path = heavy_modules_on_import("gate_tool", heavy, then="app.__file__")[-2:]
    assert loaded == "[]"
    assert Path(path).resolve() == HANDLER_PATH.resolve()


def test_template_defines_the_function_with_least_privilege() -> None:
    template = load_template(TEMPLATE_PATH)
    resources = template["Resources"]
    props = resources["GateToolFunction"]["Properties"]
    assert resources["GateToolFunction"]["Type"] == "AWS::Serverless::Function"
    assert props["CodeUri"] == "functions/gate_tool/"
    assert props["Handler"] == "app.lambda_handler"
    assert (REPO_ROOT / props["CodeUri"] / "app.py").is_file()
    log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
    assert resources[log_group]["Properties"]["RetentionInDays"] > 0
    [statement] = props["Policies"][0]["Statement"]
    assert sorted(statement["Action"]) == sorted(
        f"dynamodb:{a}" for a in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query")
    )
    assert statement["Resource"] == {"Fn::GetAtt": "CallStateTable.Arn"}
    outputs = template["Outputs"]
    assert outputs["GateToolFunctionName"]["Value"] == {"Ref": "GateToolFunction"}
    assert "GateToolFunctionArn" in outputs
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.12" and globals_["Architectures"] == ["arm64"]
    assert "Runtime" not in props and "Layers" not in props  # from Globals


def test_idempotency_records_live_outside_every_call_partition(
    app: ModuleType, dynamodb_client: Any, handler_env: str
) -> None:
    invoke(app, load_event("gate_tool_allow.json"))
    items = table_items(dynamodb_client, handler_env)
    keys = {(i[PK]["S"], i[SK]["S"].split("#")[0]) for i in items}
    assert keys == {(IDEMPOTENCY_PK, "gate_tool"), ("retail#CA-demo-0101", "TOOL")}
    with pytest.raises(ValueError):
        CallContext(call_id="gate_tool", tenant_id=IDEMPOTENCY_PK.split("#")[0])
