"""Campaign: generated hostile events at every direct handler, on moto.

Each target takes its sample event from events/ and hypothesis breaks one thing about it
(tests/fakes/hostile.py: odd unicode, huge strings, numbers at the limits, wrong types, extra and
PII-looking keys, long and duplicated ids). For every case:
- the handler returns, never raises (PostCallReport's documented raise is for an outage, and there
  is none here: moto is up, so its raise is a crash too);
- what it returns is either its success shape or the documented `{"error": {...}}`, never
  `internal_error`;
- the call's stored state still reads back through the store (history, verdicts, metadata) for
  the call the sample names, which every case shares, so one poisoned case breaks the rest.

Deep nesting (issue 13 item 1) is its own test: args 200 deep, recorded by ScoreTurn, used to
poison the call for every handler (it was a strict xfail until the bound at the boundary models
landed); args 20 deep are its allow twin.
Profiles: tests/conftest.py (`ci` in `make test`, `campaign` in `make campaign`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.models import CallContext
from mirror.state import DynamoDBStateStore
from mirror_dev.reports_local import create_reports_table, reports_table_properties
from tests.conftest import REPO_ROOT, TEMPLATE_PATH
from tests.fakes.hostile import FAMILIES, hostile_event, nested
from tests.fakes.lambda_context import FakeContext
from tests.support.api import CORRECTION_PATH, GATE_TOOL_PATH, SCORE_TURN_PATH
from tests.support.campaign import Tally, outcome_of
from tests.support.handlers import load_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

POST_CALL_PATH = REPO_ROOT / "functions" / "post_call_report" / "app.py"
REPORTS_TABLE = "mirror-reports-campaign"

TARGETS: dict[str, tuple[Any, str]] = {
    "score_turn": (SCORE_TURN_PATH, "score_turn_allow.json"),
    "gate_tool": (GATE_TOOL_PATH, "gate_tool_allow.json"),
    "generate_correction": (CORRECTION_PATH, "generate_correction.json"),
}


def _readable(table: str, call_id: str, tenant_id: str) -> None:
    """The call's state reads back: what GET /v1/calls/{id} reads, straight from the store."""
    store = DynamoDBStateStore(table)
    ctx = CallContext(call_id=call_id, tenant_id=tenant_id)
    store.get_call_meta(ctx, 0.0)
    store.get_history(ctx, 0.0, 100)
    store.list_verdicts(ctx, 0.0)


@pytest.fixture
def target(
    request: pytest.FixtureRequest,
    load_module: Callable[..., ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ModuleType, dict[str, Any], Tally]]:
    path, name = TARGETS[request.param]
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")  # thousands of cases: keep it quiet
    module = load_module(path)
    sample = load_event(name)
    sample.pop("turn_id", None)  # else every case is a replay of the sample's turn
    tally = Tally(request.param)
    yield module, sample, tally
    tally.write()


def _invoke(module: ModuleType, event: Any, tally: Tally) -> Any:
    try:
        body = module.lambda_handler(event, FakeContext(function_name="campaign"))
    except Exception as e:  # a raise is a crash: the caller gets no answer
        tally.crashes += 1
        raise AssertionError(f"handler raised {type(e).__name__}: {e!s:.300}") from e
    json.dumps(body)  # a Lambda result is JSON
    outcome = outcome_of(body)
    tally.saw(outcome)
    if outcome == "error:internal_error":
        tally.server_errors += 1
    assert outcome != "error:internal_error", body
    return body


@pytest.mark.parametrize("target", list(TARGETS), indirect=True)
@given(data=st.data())
def test_hostile_events_get_an_answer_and_leave_the_call_readable(
    target: tuple[ModuleType, dict[str, Any], Tally], api_env: str, data: st.DataObject
) -> None:
    module, sample, tally = target
    event = data.draw(hostile_event(sample), label="event")
    _invoke(module, event, tally)
    _readable(api_env, sample["call_id"], sample.get("tenant_id") or "default")
    # and the sample itself still gets a real answer afterwards
    assert "error" not in _invoke(module, sample, tally)


def _poison_then_use(
    load_module: Callable[..., ModuleType], table: str, depth: int
) -> dict[str, Any]:
    """ScoreTurn records a turn whose tool call's args are nested `depth` deep; then every
    handler is asked about the same call. Returns each one's answer."""
    modules = {name: load_module(path) for name, (path, _) in TARGETS.items()}
    samples = {name: load_event(sample) for name, (_, sample) in TARGETS.items()}
    call = {"call_id": "CA-campaign-deep", "tenant_id": "pizzeria"}
    poison = {
        **samples["score_turn"],
        **call,
        "turn_id": "t-deep",
        "tool_calls": [{"id": "deep", "name": "lookup", "args": {"q": nested(depth)}}],
    }
    tally = Tally("nesting")
    _invoke(modules["score_turn"], poison, tally)
    answers = {}
    for name, module in modules.items():
        event = {**samples[name], **call}
        event.pop("turn_id", None)
        answers[name] = _invoke(module, event, tally)
    _readable(table, call["call_id"], call["tenant_id"])
    tally.write()
    return answers


def test_moderately_nested_args_leave_the_call_usable(
    load_module: Callable[..., ModuleType], api_env: str
) -> None:
    """The allow twin of the next test: args 20 deep are an ordinary turn."""
    answers = _poison_then_use(load_module, api_env, 20)
    assert all("error" not in a for a in answers.values()), answers
    assert answers["gate_tool"]["decisions"][0]["decision"] == "allow", answers["gate_tool"]


def test_deeply_nested_args_do_not_poison_the_call(
    load_module: Callable[..., ModuleType], api_env: str
) -> None:
    """Issue 13 item 1: one 1 KB event used to be stored, then ScoreTurn and GateTool failed
    for the call; now the event is refused (`invalid_event`) and the call stays usable."""
    answers = _poison_then_use(load_module, api_env, 200)
    assert all("error" not in a for a in answers.values()), answers
    assert answers["gate_tool"]["decisions"][0]["decision"] == "allow", answers["gate_tool"]


# --- PostCallReport -----------------------------------------------------------------------------


@pytest.fixture
def post_call(
    load_module: Callable[..., ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    dynamodb_client: Any,
) -> Iterator[tuple[ModuleType, Tally]]:
    create_reports_table(dynamodb_client, REPORTS_TABLE, reports_table_properties(TEMPLATE_PATH))
    monkeypatch.setenv("REPORTS_TABLE", REPORTS_TABLE)
    for name in ("REPORTS_BUCKET", "FIX_STATE_MACHINE_ARN", "FIX_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    module = load_module(POST_CALL_PATH)
    tally = Tally("post_call_report")
    yield module, tally
    tally.write()


@given(data=st.data())
def test_hostile_call_ended_events_get_an_answer(
    post_call: tuple[ModuleType, Tally], data: st.DataObject
) -> None:
    """Bad envelopes and details are structured errors; nothing raises without an outage."""
    module, tally = post_call
    sample = load_event("post_call_report.json")
    event = data.draw(
        st.one_of(
            hostile_event(sample, (*FAMILIES, "nesting")),
            hostile_event(sample["detail"]).map(lambda d: {**sample, "detail": d}),
        ),
        label="event",
    )
    _invoke(module, event, tally)
