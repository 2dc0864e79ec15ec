"""The GenerateCorrection Lambda handler, called for real against in-process moto DynamoDB.

Each test imports functions/generate_correction/app.py afresh under a unique module name, with
its environment already set, so the module-level Logger/Metrics/config see the test's settings.
No LLM is configured in the environment (templates only) unless a test injects a service with
an in-test `LLMClient` fake.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mirror.correction import CONFIRM_SUFFIX, LLM_TIMEOUT_ENV, CorrectionResult, CorrectionService
from mirror.models import MirrorConfig
from mirror.state import DynamoDBStateStore
from mirror.usecases import Deps
from mirror_dev.local import import_file
from tests.conftest import REPO_ROOT
from tests.fakes.lambda_context import FakeContext
from tests.fakes.llm import GOOD_LINE, GOOD_NOTE, FakeLLM, correction_llm
from tests.support.handlers import (
    NAMESPACE,
    assert_invalid_event,
    changed,
    ctx_of,
    emf_documents,
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

HANDLER_PATH = REPO_ROOT / "functions" / "generate_correction" / "app.py"
SERVICE_NAME = "mirror-generate-correction-test"
LLM_ENV = (
    "MIRROR_LLM_PROVIDER",
    "MIRROR_LLM_MODEL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_ENDPOINT",
    "BEDROCK_MODEL_ID",
)
PII_TEXT = "my email is jo@example.com and my card is 4111 1111 1111 1111, call 415-555-0134"
PII_VALUES = ("jo@example.com", "4111 1111 1111 1111", "415-555-0134")


def context(**fields: Any) -> FakeContext:
    """This function's context: 4 s left unless told."""
    return FakeContext(**{"function_name": SERVICE_NAME, "remaining_ms": 4_000, **fields})


@pytest.fixture
def handler_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_handler_env(
        monkeypatch, call_state_table, SERVICE_NAME, unset=("CORRECTION_LLM_TIMEOUT_S", *LLM_ENV)
    )


@pytest.fixture
def app(
    handler_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The handler module, imported fresh for this test (after capsys and the env are set)."""
    loader = handler_loader(
        monkeypatch, SERVICE_NAME, HANDLER_PATH, "generate_correction_app", stub_tiers=False
    )
    for load in loader:  # one pass: the import, then (after the test) the clean-up
        yield load()


@pytest.fixture
def store(call_state_table: str, dynamodb_client: Any) -> DynamoDBStateStore:
    return DynamoDBStateStore(call_state_table, client=dynamodb_client)


@pytest.fixture
def swaps() -> Iterator[ExitStack]:
    """Dependencies swapped in a test (`deps.using`) are back as they were after it."""
    with ExitStack() as stack:
        yield stack


def with_llm(app: ModuleType, store: DynamoDBStateStore, llm: FakeLLM, swaps: ExitStack) -> None:
    service = CorrectionService(store, llm, llm_timeout_s=app.deps.llm_timeout_s)
    swaps.enter_context(app.deps.using(corrections=service))


def built_llm(app: ModuleType, config: MirrorConfig | None = None) -> Any:
    """The LLM client the handler's container builds for its corrections (from `config`)."""
    return Deps(config or app.deps.base_config, logger=app.logger).corrections().llm


def invoke(app: ModuleType, event: Any, ctx: FakeContext | None = None) -> dict[str, Any]:
    return invoke_handler(app, event, ctx or context())


def emf_counts(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The dimensions of every data point of metric `name` (one dict per point)."""
    out = []
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            if any(m["Name"] == name for m in directive["Metrics"]):
                assert directive["Namespace"] == NAMESPACE
                dims = {d for dims in directive["Dimensions"] for d in dims} - {"service"}
                values = doc[name] if isinstance(doc[name], list) else [doc[name]]
                out += [{d: doc[d] for d in dims} for _ in values]
    return out


# --- the sample events ------------------------------------------------------------------------


def test_sample_event_speaks_the_template_and_stores_the_note_once(
    app: ModuleType, store: DynamoDBStateStore
) -> None:
    event = load_event("generate_correction.json")
    response = invoke(app, event)

    result = CorrectionResult.model_validate(response)
    assert result.turn_id == event["turn_id"] and result.call_id == event["call_id"]
    assert (result.source, result.note_source) == ("template", "template")
    assert result.llm is None  # no LLM configured in this environment
    assert result.reason_code == "wrong_variant" and result.check == "retraction"
    assert "large" in result.correction_text
    assert result.override_note.endswith(CONFIRM_SUFFIX)
    assert result.note_stored and not result.replayed

    now = time.time()
    assert store.take_override(ctx_of(event), now) == result.override_note
    assert store.take_override(ctx_of(event), now) is None


def test_an_llm_line_is_returned_when_one_is_configured(
    app: ModuleType, swaps: ExitStack, store: DynamoDBStateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = correction_llm()
    with_llm(app, store, llm, swaps)
    response = invoke(app, load_event("generate_correction.json"), context(remaining_ms=3_000))

    assert response["correction_text"] == GOOD_LINE
    assert response["override_note"] == f"{GOOD_NOTE} {CONFIRM_SUFFIX}"
    assert (response["source"], response["llm"]) == ("llm", "fake:scripted")
    # the invocation's remaining time, less the reserve for the writes, caps the LLM's budget
    assert llm.calls[0]["timeout_s"] == pytest.approx(3.0 - app.RESERVE_S, abs=0.2)
    assert llm.calls[0]["timeout_s"] <= 3.0 - app.RESERVE_S
    docs = emf_documents(capsys.readouterr().out)
    assert sorted((d["part"], d["source"]) for d in emf_counts(docs, "CorrectionSource")) == [
        ("line", "llm"),
        ("note", "llm"),
    ]


def test_sample_bad_input_is_a_structured_error(
    app: ModuleType, dynamodb_client: Any, handler_env: str
) -> None:
    response = invoke(app, load_event("generate_correction_bad_input.json"))
    assert set(response) == {"error"}
    assert response["error"]["type"] == "invalid_event"
    assert error_fields(response) == {
        "call_id",
        "customer_text",
        "verdict.decision",
        "verdict.reasons.0.code",
    }
    assert table_items(dynamodb_client, handler_env) == []


# --- bad input --------------------------------------------------------------------------------

GOOD_EVENT = load_event("generate_correction.json")


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    return changed(GOOD_EVENT, path, value)


def _without(*path: Any) -> dict[str, Any]:
    return without(GOOD_EVENT, *path)


BAD_EVENTS: dict[str, tuple[Any, str]] = {
    "missing call_id": (_without("call_id"), "call_id"),
    "missing verdict": (_without("verdict"), "verdict"),
    "verdict not an object": (_with(("verdict",), "intervene"), "verdict"),
    "allow verdict": (_with(("verdict", "decision"), "allow"), "verdict.decision"),
    "verdict score out of range": (_with(("verdict", "score"), 1.5), "verdict.score"),
    "unknown reason code": (
        _with(("verdict", "reasons", 0, "code"), "too_large"),
        "verdict.reasons.0.code",
    ),
    "reason without evidence": (
        _without("verdict", "reasons", 0, "evidence"),
        "verdict.reasons.0.evidence",
    ),
    "block verdict naming no call": (_with(("verdict", "decision"), "block"), "verdict"),
    "customer_text not a string": (_with(("customer_text",), ["no"]), "customer_text"),
    "agent_text too long": (_with(("agent_text",), "a" * 8001), "agent_text"),
    "history role unknown": (_with(("history", 0, "role"), "supervisor"), "history.0"),
    "tenant_id with '#'": (_with(("tenant_id",), "acme#evil"), "tenant_id"),
    "unknown key": (_with(("verdict_json",), "{}"), "<extra>"),
    "policy that does not parse": (_with(("policies",), ["FORBID nothing quoted"]), "policies"),
    "event is a list": ([GOOD_EVENT], "(event)"),
    "event is a string": (json.dumps(GOOD_EVENT), "(event)"),
    "event is null": (None, "(event)"),
}


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
    assert len(emf_counts(docs, "InvalidEvents")) == 1
    assert emf_counts(docs, "CorrectionSource") == []


# --- idempotency ------------------------------------------------------------------------------


def test_retried_turn_returns_the_same_correction_and_counts_a_replay(
    app: ModuleType, swaps: ExitStack, store: DynamoDBStateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = correction_llm()
    with_llm(app, store, llm, swaps)
    event = load_event("generate_correction.json")
    first = invoke(app, event)
    assert store.take_override(ctx_of(event), time.time()) == first["override_note"]
    capsys.readouterr()

    retry = invoke(app, copy.deepcopy(event))
    assert retry == {**first, "replayed": True}
    assert len(llm.calls) == 1
    assert store.take_override(ctx_of(event), time.time()) is None  # no second note
    docs = emf_documents(capsys.readouterr().out)
    assert len(emf_counts(docs, "CorrectionReplays")) == 1
    assert emf_counts(docs, "CorrectionSource") == [] and emf_counts(docs, "Corrections") == []


def test_turn_id_defaults_to_the_request_id(app: ModuleType) -> None:
    event = load_event("generate_correction.json")
    del event["turn_id"]
    first = invoke(app, event, context(aws_request_id="req-7"))
    assert first["turn_id"] == "req-7" and not first["replayed"]
    assert invoke(app, event, context(aws_request_id="req-7"))["replayed"]  # Lambda's retry
    assert not invoke(app, event, context(aws_request_id="req-8"))["replayed"]


# --- metrics ----------------------------------------------------------------------------------


def test_rejections_and_llm_failures_are_counted(
    app: ModuleType, swaps: ExitStack, store: DynamoDBStateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    event = load_event("generate_correction.json")
    with_llm(
        app,
        store,
        correction_llm(correction="I want a medium.", override_note="Skip the read-back."),
        swaps,
    )
    response = invoke(app, event)
    docs = emf_documents(capsys.readouterr().out)

    assert (response["source"], response["note_source"]) == ("template", "template")
    assert sorted((d["part"], d["why"]) for d in emf_counts(docs, "CorrectionRejected")) == [
        ("line", "caller_voice"),
        ("note", "skips_confirmation"),
    ]
    assert sorted((d["part"], d["source"]) for d in emf_counts(docs, "CorrectionSource")) == [
        ("line", "template"),
        ("note", "template"),
    ]
    assert emf_counts(docs, "CorrectionLLMFailures") == []
    assert len(emf_counts(docs, "Corrections")) == 1

    from mirror.llm.base import LLMTimeout

    with_llm(app, store, correction_llm(error=LLMTimeout("budget ran out")), swaps)
    response = invoke(app, {**event, "turn_id": "t-0004"})
    docs = emf_documents(capsys.readouterr().out)
    assert response["llm_failure"] == "timeout"
    assert emf_counts(docs, "CorrectionLLMFailures") == [{"why": "timeout"}]
    assert emf_counts(docs, "CorrectionRejected") == []


# --- failures ---------------------------------------------------------------------------------


def test_missing_table_still_returns_the_correction(
    app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CALL_TABLE", "no-such-table")  # read when the service is first built
    response = invoke(app, load_event("generate_correction.json"))

    assert "error" not in response
    assert response["correction_text"] and response["note_stored"] is False
    docs = emf_documents(capsys.readouterr().out)
    assert len(emf_counts(docs, "StateStoreErrors")) == 2  # the idempotency read, the note write
    assert len(emf_counts(docs, "CorrectionSource")) == 2


def test_an_unexpected_error_still_returns_the_template(
    app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = app.deps.corrections()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(service, "generate", broken)
    response = invoke(app, load_event("generate_correction.json"))

    assert response["source"] == "template" and "large" in response["correction_text"]
    assert response["note_stored"] is False
    docs = emf_documents(capsys.readouterr().out)
    assert len(emf_counts(docs, "CorrectionErrors")) == 1


def test_logs_never_contain_caller_pii(
    app: ModuleType, swaps: ExitStack, store: DynamoDBStateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    with_llm(app, store, correction_llm(correction=f"Sorry, I noted {PII_TEXT}."), swaps)
    event = {
        **load_event("generate_correction.json"),
        "customer_text": PII_TEXT,
        "history": [{"role": "customer", "text": PII_TEXT}],
    }
    invoke(app, event)
    assert "error" in invoke(app, {**event, "call_id": 42})  # a wrong type next to the PII

    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "correction request"]
    assert requests, "the DEBUG request log (the one that would carry the event) was not emitted"
    assert "[email]" in json.dumps(requests) and "[card]" in json.dumps(requests)
    assert any(line.get("message") == "correction text" for line in lines)
    for value in PII_VALUES:
        assert value not in captured.out + captured.err


# --- wiring -----------------------------------------------------------------------------------


def test_no_llm_configured_means_templates_only(app: ModuleType) -> None:
    assert built_llm(app) is None


def test_an_llm_from_the_environment_is_built(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    monkeypatch.setenv("MIRROR_LLM_MODEL", "gpt-4o-mini")
    client = built_llm(app)
    assert client is not None and client.name == "openai:gpt-4o-mini"


def test_the_configs_llm_settings_win_over_the_environment(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mirror.llm import LLMSettings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    config = MirrorConfig(llm=LLMSettings(provider="openai", model="judge-model-x"))
    client = built_llm(app, config)
    assert client is not None and client.name == "openai:judge-model-x"


def test_a_bad_llm_setting_falls_back_to_templates(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIRROR_LLM_PROVIDER", "nonsense")
    assert built_llm(app) is None
    assert "LLM client could not be built" in capsys.readouterr().out


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "nan", "61"])
def test_a_bad_timeout_setting_fails_at_cold_start(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv(LLM_TIMEOUT_ENV, raw)
    name = f"generate_correction_bad_{uuid.uuid4().hex}"
    try:
        with pytest.raises(ValueError, match=LLM_TIMEOUT_ENV):
            import_file(HANDLER_PATH, name)  # the container's Deps reads it at import
    finally:
        sys.modules.pop(name, None)
    monkeypatch.setenv(LLM_TIMEOUT_ENV, "1.25")
    assert Deps(logger=app.logger).llm_timeout_s == 1.25


def test_handler_module_imports_no_heavy_clients() -> None:
    heavy = ("openai", "plivo", "fastapi", "httpx", "boto3", "mirror.llm.openai_client")
    loaded, path = heavy_modules_on_import("generate_correction", heavy, then="app.__file__")[-2:]
    assert loaded == "[]"
    assert Path(path).resolve() == HANDLER_PATH.resolve()
