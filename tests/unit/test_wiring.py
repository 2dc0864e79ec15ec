"""Production wiring: the task definition's environment builds the supervised sessions (Lambda,
Polly, DynamoDB, EventBridge); `local` mode builds the in-process ones; a missing or bad setting
fails at start-up naming it; injected collaborators are used as given."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mirror.state import DynamoDBStateStore, InMemoryStateStore
from mirror_bridge.call_end import EventBridgeSink, InMemoryEventSink
from mirror_bridge.relay import CallContext
from mirror_bridge.session import CallSession
from mirror_bridge.settings import Settings, SettingsError
from mirror_bridge.tenants import TenantConfig
from mirror_bridge.transport import LambdaTransport
from mirror_bridge.tts import OfflineTTS, PollyTTS
from mirror_bridge.wiring import LoggedEventSink, build_app, build_session_factory
from mirror_dev.in_process import InProcessTransport
from mirror_dev.local import load_template
from tests.conftest import TEMPLATE_PATH, run
from tests.fakes.session import Wire, start_event, turn, until
from tests.fakes.transport import ALLOW, CORRECTION, INTERVENE, FakeTransport
from tests.fakes.tts import FakeTTS

pytestmark = pytest.mark.unit

REQUIRED_AWS = (
    "SCORE_TURN_FUNCTION",
    "GATE_TOOL_FUNCTION",
    "GENERATE_CORRECTION_FUNCTION",
    "CALL_TABLE",
    "EVENT_BUS_NAME",
)


def task_environment() -> dict[str, str]:
    """The bridge container's environment as template.yaml defines it: each `!Ref X` becomes
    `ref-X` (what CloudFormation resolves it to), secrets get a value, the public URL a host."""
    template = load_template(TEMPLATE_PATH)
    parameters = template["Parameters"]
    resources = template["Resources"]
    (container,) = resources["BridgeTaskDefinition"]["Properties"]["ContainerDefinitions"]
    env: dict[str, str] = {}
    for item in container["Environment"]:
        value = item["Value"]
        if isinstance(value, dict) and "Ref" in value:
            name = value["Ref"]
            value = parameters[name].get("Default", "") if name in parameters else f"ref-{name}"
        elif isinstance(value, dict):
            value = "https://bridge.example.com"  # the public URL (an Fn::If of two hosts)
        env[item["Name"]] = str(value)
    env.update({s["Name"]: "a-token" for s in container.get("Secrets", [])})
    return env


def test_the_task_definition_builds_lambda_polly_dynamodb_and_eventbridge() -> None:
    env = task_environment()
    settings = Settings.from_env(env)
    assert settings.mode == "aws"
    sup = build_session_factory(settings, environ=env)
    assert isinstance(sup.transport, LambdaTransport)
    assert sup.transport.function_names == {
        "score_turn": "ref-ScoreTurnFunction",
        "gate_tool": "ref-GateToolFunction",
        "generate_correction": "ref-GenerateCorrectionFunction",
    }
    assert isinstance(sup.tts, PollyTTS)
    assert isinstance(sup.store, DynamoDBStateStore)
    assert sup.store.table_name == "ref-CallStateTable"
    assert isinstance(sup.events, EventBridgeSink)
    assert sup.events.bus_name == "ref-MirrorEventBus"
    assert sup.buffer_lines.tts is sup.tts
    assert sup.rest is None  # no PLIVO_AUTH_ID: the REST fallback is off
    sup.shutdown()


@pytest.mark.parametrize("name", REQUIRED_AWS)
def test_a_missing_aws_variable_fails_at_start_up_naming_it(name: str) -> None:
    env = task_environment()
    del env[name]
    with pytest.raises(SettingsError) as info:
        build_session_factory(Settings.from_env(env), environ=env)
    message = str(info.value)
    assert name in message and "BRIDGE_MODE=aws" in message
    others = [n for n in REQUIRED_AWS if n != name]
    assert not any(n in message for n in others)


def test_every_missing_variable_is_named_at_once_and_main_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import main

    env = {"PUBLIC_BASE_URL": "https://bridge.example.com", "PLIVO_AUTH_TOKEN": "t"}
    for name in REQUIRED_AWS + ("BRIDGE_MODE", "MIRROR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        main.build_app()
    for name in REQUIRED_AWS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("MIRROR_CONFIG", '{"cooldown_s": "soon"}', "MIRROR_CONFIG"),
        ("HOLD_BUDGET_S", "0", "HOLD_BUDGET_S"),
        ("HOLD_BUDGET_S", "fast", "HOLD_BUDGET_S"),
        ("MAX_CALL_S", "-1", "MAX_CALL_S"),
        ("CALLER_SILENCE_S", "nan", "CALLER_SILENCE_S"),
        ("BRIDGE_MODE", "cloud", "BRIDGE_MODE"),
        ("TTS_ENGINE", "say", "TTS_ENGINE"),
    ],
)
def test_a_bad_setting_fails_at_start_up_naming_it(name: str, value: str, named: str) -> None:
    env = task_environment() | {name: value}
    with pytest.raises(SettingsError) as info:
        build_session_factory(Settings.from_env(env), environ=env)
    assert named in str(info.value)


def test_local_mode_runs_the_functions_in_process_with_offline_speech() -> None:
    env = {
        "PUBLIC_BASE_URL": "http://127.0.0.1:8080",
        "SIGNATURE_MODE": "off",
        "BRIDGE_MODE": "local",
        "CALL_TABLE": "mirror-local",
    }
    sup = build_session_factory(Settings.from_env(env), environ=env)
    assert isinstance(sup.transport, InProcessTransport)
    assert isinstance(sup.tts, OfflineTTS)
    assert isinstance(sup.store, DynamoDBStateStore) and sup.store.table_name == "mirror-local"
    assert isinstance(sup.events, LoggedEventSink)  # no bus: CallEnded is logged
    sup.shutdown()
    with_bus = env | {"EVENT_BUS_NAME": "mirror-local-bus", "TTS_ENGINE": "polly"}
    sup = build_session_factory(Settings.from_env(with_bus), environ=with_bus)
    assert isinstance(sup.events, EventBridgeSink) and sup.events.bus_name == "mirror-local-bus"
    assert isinstance(sup.tts, PollyTTS)
    sup.shutdown()
    no_table = {k: v for k, v in env.items() if k != "CALL_TABLE"}
    with pytest.raises(SettingsError, match="BRIDGE_MODE=local needs CALL_TABLE"):
        build_session_factory(Settings.from_env(no_table), environ=no_table)


def test_local_mode_without_the_development_package_stops_at_start_up_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image ships mirror and mirror_bridge alone: there `BRIDGE_MODE=local` fails when the
    app is built (uvicorn's factory), naming what to install; `aws` mode never needs it."""
    import main

    for name in ("mirror_dev", "mirror_dev.in_process"):  # as in the image: not importable
        monkeypatch.setitem(sys.modules, name, None)
    for name in REQUIRED_AWS + ("MIRROR_CONFIG", "EVENT_BUS_NAME"):
        monkeypatch.delenv(name, raising=False)
    local = {
        "PUBLIC_BASE_URL": "http://127.0.0.1:8080",
        "SIGNATURE_MODE": "off",
        "BRIDGE_MODE": "local",
        "CALL_TABLE": "mirror-local",
    }
    for name, value in local.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        main.build_app()
    message = str(info.value)
    assert "\n" not in message
    assert "BRIDGE_MODE=local" in message and "mirror_dev" in message
    assert "make venv" in message and "pip install -e dev" in message
    env = task_environment()
    sup = build_session_factory(Settings.from_env(env), environ=env)
    assert isinstance(sup.transport, LambdaTransport)
    sup.shutdown()


def test_injected_collaborators_are_used_and_need_no_environment() -> None:
    settings = Settings(auth_token="t", public_base_url="http://127.0.0.1:1")  # mode aws
    transport, tts = FakeTransport(), FakeTTS()
    store, sink = InMemoryStateStore(), InMemoryEventSink()
    sup = build_session_factory(
        settings, transport=transport, tts=tts, store=store, events=sink, environ={}
    )
    assert (sup.transport, sup.tts, sup.store, sup.events) == (transport, tts, store, sink)
    assert sup.state is not None and sup.state.store is store  # the final state goes there


def _relay_ctx(tenant: TenantConfig) -> CallContext:
    from mirror_bridge.plivo_protocol import parse_event

    start = parse_event(start_event())
    return CallContext("CA-1", "st-1", "14155550199", tenant, start.media_format, start)  # type: ignore[union-attr,arg-type]


def test_sessions_carry_the_tenants_voice_policies_and_tools_to_the_functions() -> None:
    tenant = TenantConfig(
        tenant_id="acme",
        agent_url="ws://agent.test/ws",
        policies=['FORBID "free delivery"'],
        irreversible_tools=["place_order"],
        voice="Matthew",
        buffer_text="One second, please.",
    )
    transport = FakeTransport(
        {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)],
         "gate_tool": [(0.0, ALLOW)]}
    )  # fmt: skip
    tts = FakeTTS()
    settings = Settings(auth_token="t", public_base_url="http://127.0.0.1:1", hold_budget_s=0.3)
    sup = build_session_factory(
        settings, transport=transport, tts=tts, store=InMemoryStateStore(),
        events=InMemoryEventSink(), environ={},
    )  # fmt: skip

    async def scenario() -> None:
        wire = Wire()
        session = sup(_relay_ctx(tenant), wire.io())
        assert isinstance(session, CallSession) and list(sup.sessions) == [session]
        assert session.ctx.tenant_id == "acme" and session.ctx.call_id == "CA-1"
        assert session.config.hold_budget_s == 0.3
        assert session.config.mirror.irreversible_tools == ["place_order"]
        await session.on_start(start_event())
        await session.on_mirror_message(turn("t1"))
        await session.on_mirror_message(
            {"event": "mirror.tool_gate", "request_id": "g1",
             "tool_calls": [{"id": "c1", "name": "place_order", "args": {}}]}
        )  # fmt: skip
        await until(lambda: len(transport.named("generate_correction")) == 1)
        await until(lambda: len(transport.named("gate_tool")) == 1)
        score = transport.named("score_turn")[0].payload
        gate = transport.named("gate_tool")[0].payload
        correction = transport.named("generate_correction")[0].payload
        for payload in (score, gate):
            assert payload["policies"] == ['FORBID "free delivery"']
            assert payload["irreversible_tools"] == ["place_order"]
        assert correction["policies"] == ['FORBID "free delivery"']
        assert "irreversible_tools" not in correction  # not a GenerateCorrection field
        await until(lambda: bool(tts.calls))
        assert tts.calls[0] == ("One second, please.", "Matthew")  # the tenant's line and voice
        await session.close("stop")

    run(scenario())


def test_the_lifespan_warms_the_buffer_line_and_shuts_the_pools() -> None:
    class ClosableTransport(FakeTransport):
        closed = False

        def shutdown(self) -> None:
            self.closed = True

    from mirror_bridge.app import create_app

    settings = Settings(auth_token="t", public_base_url="http://127.0.0.1:1")
    transport, tts = ClosableTransport(), FakeTTS()
    sup = build_session_factory(
        settings, transport=transport, tts=tts, store=InMemoryStateStore(),
        events=InMemoryEventSink(), environ={},
    )  # fmt: skip
    app = create_app(settings, session_factory=sup, lifespan=sup.lifespan)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert tts.calls == [(sup.mirror.buffer_text, "Joanna")]
        assert not transport.closed
    assert transport.closed
    assert sup.buffer_lines.renders == 1


def test_build_app_serves_the_supervised_sessions_and_records_stream_status() -> None:
    env = task_environment()
    app = build_app(Settings.from_env(env), environ=env)
    sup: Any = app.state.supervision
    assert isinstance(sup.transport, LambdaTransport)
    assert app.state.session_factory is sup  # every call gets a supervised session
    assert app.state.store is sup.store  # stream-status callbacks are recorded in the table
    assert app.state.settings.signature_mode == "enforce"
    sup.shutdown()
