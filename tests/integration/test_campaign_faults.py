"""Campaign: faults injected into DynamoDB, EventBridge, the bridge's function transport and the
LLM, and the failure rules checked under each:
- ScoreTurn answers (a verdict, or `state_unavailable`), never raises, never `internal_error`;
- GateTool never allows an irreversible call it could not decide with the store (it holds);
- GenerateCorrection always returns a correction line (the template one if it must), with
  `note_stored: false` when the note could not be stored;
- the Api answers 200 or a documented 503, never a 500;
- PostCallReport raises (its documented retryable raise) only when a fault fired;
- CallEnded is not lost to one refused PutEvents entry;
- afterwards, with the faults off, the call's state reads back and the sample turn scores.

DynamoDB and EventBridge faults are a botocore `before-send` hook under moto
(tests/fakes/aws_faults.py), inside botocore's own retries. Profiles: tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.correction import CorrectionService
from mirror.llm.base import LLMError
from mirror.models import CallContext
from mirror.state import DynamoDBStateStore
from mirror_bridge.transport import FunctionError
from tests.conftest import TEST_REGION, boto_session, run
from tests.fakes.aws_faults import FAULT_KINDS, AwsFaults
from tests.fakes.lambda_context import FakeContext
from tests.fakes.llm import correction_llm
from tests.fakes.session import gate_request, make_session, start_event
from tests.fakes.transport import FakeTransport
from tests.support.api import CORRECTION_PATH, GATE_TOOL_PATH, SCORE_TURN_PATH, http_event, invoke
from tests.support.campaign import Tally, outcome_of
from tests.support.handlers import load_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mangum"),
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

_CALLS = itertools.count()
FEWER = settings(max_examples=max(2, settings.default.max_examples // 3))
"""Each example is a dozen requests through moto (~30 ms each) and botocore's retries: a third
as many examples as the profile's."""
DDB_OPERATIONS = ["GetItem", "Query", "PutItem", "UpdateItem", "TransactWriteItems",
                  "BatchGetItem", "DeleteItem"]  # fmt: skip


def _ctx(event: dict[str, Any]) -> CallContext:
    return CallContext(call_id=event["call_id"], tenant_id=event.get("tenant_id") or "default")


def _readable(table: str, ctx: CallContext) -> None:
    store = DynamoDBStateStore(table)
    store.get_call_meta(ctx, 0.0)
    store.get_history(ctx, 0.0, 100)
    store.list_verdicts(ctx, 0.0)


@FEWER
@given(
    operations=st.sets(st.sampled_from(DDB_OPERATIONS), min_size=1),
    kind=st.sampled_from(FAULT_KINDS),
    times=st.one_of(st.none(), st.integers(1, 4)),
)
def test_dynamodb_faults_keep_the_failure_rules(
    load_module: Callable[..., ModuleType],
    api_env: str,
    monkeypatch: pytest.MonkeyPatch,
    operations: set[str],
    kind: str,
    times: int | None,
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    faults = AwsFaults(operations, kind=kind, times=times)
    faults.install(monkeypatch)
    tally = Tally("faults_dynamodb")
    score, gate, correct = (load_module(p) for p in (SCORE_TURN_PATH, GATE_TOOL_PATH,
                                                      CORRECTION_PATH))  # fmt: skip
    call = {"call_id": f"CA-fault-{next(_CALLS)}"}  # examples share the table: one call each
    turn = {**load_event("score_turn_allow.json"), **call}
    turn.pop("turn_id")
    gate_event = {**load_event("gate_tool_allow.json"), **call}
    correction = {**load_event("generate_correction.json"), **call}
    try:
        verdict = score.lambda_handler(turn, FakeContext())
        tally.saw(outcome_of(verdict))
        assert outcome_of(verdict) in {"ok", "error:state_unavailable"}, verdict

        fired = faults.fired
        decided = gate.lambda_handler(gate_event, FakeContext())
        tally.saw(outcome_of(decided))
        assert outcome_of(decided) == "ok", decided
        irreversible = {"cancel_pending_order"}
        # a persistent fault (times None) outlasts botocore's retries: the operation failed;
        # a fault `times` long may be absorbed by a retry, and then an allow is right
        for d in decided["decisions"]:
            if d["name"] in irreversible and faults.fired > fired and times is None:
                assert d["decision"] != "allow", (operations, kind, faults.seen, decided)

        fired = faults.fired
        corrected = correct.lambda_handler(correction, FakeContext())
        tally.saw(outcome_of(corrected))
        assert outcome_of(corrected) == "ok" and corrected["correction_text"], corrected
        if corrected["note_stored"]:
            ctx = _ctx(correction)
            faults.enabled = False
            assert DynamoDBStateStore(api_env).take_override(ctx, 0.0) is not None
            faults.enabled = True
    except Exception:
        tally.crashes += 1
        raise
    finally:
        tally.write()
    faults.enabled = False
    _readable(api_env, _ctx(turn))
    again = score.lambda_handler(turn, FakeContext())
    assert outcome_of(again) == "ok", again


@FEWER
@given(
    operations=st.sets(st.sampled_from(DDB_OPERATIONS), min_size=1),
    kind=st.sampled_from(FAULT_KINDS),
)
def test_dynamodb_faults_at_the_api_are_503_never_500(
    load_module: Callable[..., ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    operations: set[str],
    kind: str,
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    faults = AwsFaults(operations, kind=kind)
    faults.install(monkeypatch)
    api = load_module()
    tally = Tally("faults_api")
    call = {"call_id": "CA-fault-api", "tenant_id": "pizzeria"}
    requests = [
        http_event("POST", "/v1/turns:score",
                   body={**call, "customer_text": "Hi.", "agent_text": "Hello!"}),
        http_event("POST", "/v1/tools:gate", body={**load_event("gate_tool_allow.json"), **call}),
        http_event("GET", "/v1/calls/CA-fault-api", route="/v1/calls/{call_id}",
                   query={"tenant_id": "pizzeria"}),
        http_event("POST", "/v1/calls/CA-fault-api/end", route="/v1/calls/{call_id}/end",
                   query={"tenant_id": "pizzeria"}),
    ]  # fmt: skip
    try:
        for event in requests:
            status, _, body = invoke(api, event)
            tally.saw(str(status))
            if status >= 500:
                assert status == 503, (status, body)
                assert body["error"]["type"] in {"state_unavailable", "event_unavailable"}, body
            else:
                assert status in {200, 202, 404}, (status, body)
    except AssertionError:
        tally.server_errors += 1
        raise
    finally:
        tally.write()


# --- EventBridge: CallEnded ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["failed_entry", "throttle", "connection"])
def test_one_refused_put_events_does_not_lose_call_ended(aws_credentials: None, kind: str) -> None:
    """Issue 13 item 3: one transient PutEvents failure and CallEnded was gone for good."""
    from moto import mock_aws

    from mirror_bridge.call_end import EventBridgeSink

    with mock_aws():
        client = boto_session().client("events", region_name=TEST_REGION)
        faults = AwsFaults({"PutEvents"}, kind=kind, times=1)
        faults.attach(client)
        sink = EventBridgeSink(client, bus_name="default")
        tally = Tally("faults_events")
        try:
            run(sink.put_event("CallEnded", {"call_id": "c", "tenant_id": "t"}))
            tally.saw("put")
            sent = [op for op in faults.seen if op == "PutEvents"]
            if len(sent) < 2:
                tally.lost_events += 1
            assert faults.fired == 1 and len(sent) == 2, faults.seen  # failed once, then sent
        finally:
            tally.write()


# --- the bridge's function transport and the LLM -------------------------------------------------


TRANSPORT_ERRORS: list[BaseException] = [
    FunctionError("gate_tool", "transport", "injected"),
    FunctionError("gate_tool", "timeout", "injected"),
    FunctionError("gate_tool", "function_error", "injected"),
    OSError("connection reset"),
    RuntimeError("response body read failed"),
    TimeoutError(),
    ValueError("not JSON"),
]


@pytest.mark.parametrize("error", TRANSPORT_ERRORS, ids=lambda e: type(e).__name__)
def test_any_transport_failure_holds_an_irreversible_tool_call(error: BaseException) -> None:
    """Issue 13 item 4's rule, for every exception a transport may raise: the agent gets a
    decision, and it is not `allow`."""

    def fail(_: dict[str, Any]) -> Any:
        raise error

    async def scenario() -> list[dict[str, Any]]:
        session, wire, _ = make_session(FakeTransport({"gate_tool": [(0.0, fail)]}))
        await session.on_start(start_event())
        await session.on_mirror_message(
            gate_request({"id": "c1", "name": "cancel_order", "args": {"order_id": "W1"}})
        )
        for _ in range(200):
            decisions = [m for m in wire.agent if m.get("event") == "mirror.tool_decision"]
            if decisions:
                break
            await asyncio.sleep(0.01)
        await session.close("stop")
        return decisions

    decisions = run(scenario())
    assert len(decisions) == 1, decisions
    assert decisions[0]["result"]["decision"] != "allow", decisions


@pytest.mark.parametrize(
    "error",
    [LLMError("injected"), TimeoutError(), RuntimeError("boom"), ValueError("bad JSON")],
    ids=lambda e: type(e).__name__,
)
def test_an_llm_failure_still_gives_a_correction(
    load_module: Callable[..., ModuleType],
    api_env: str,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
) -> None:
    """The bridge is waiting to speak: a failing LLM falls back to the template line."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    module = load_module(CORRECTION_PATH)
    service = CorrectionService(
        DynamoDBStateStore(api_env), correction_llm(error=error), llm_timeout_s=1.0
    )
    with module.deps.using(corrections=service):
        out = module.lambda_handler(load_event("generate_correction.json"), FakeContext())
    assert outcome_of(out) == "ok" and out["correction_text"], out
    assert out["source"] == "template", out
