"""The bridge's EMF metrics for a scripted call (issue 13, item 13: the bridge emitted none).

The supervised bridge on loopback (`tests.support.harness.SupervisedBridge`) with scripted
functions: the first turn's ScoreTurn fails (the turn fails open), the second intervenes, and a
tool-gate request meets a failing GateTool (held). When the stream closes, the call's EMF
documents must carry exactly what the session counted, in the namespace and dimensions the
template's alarms read (`mirror_bridge.metrics`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mirror_bridge import metrics
from mirror_bridge.metrics import BridgeMetrics
from mirror_bridge.transport import FunctionError
from mirror_dev.scripted_agent import AgentCall, ScriptedAgent
from tests.conftest import run
from tests.fakes.transport import CORRECTION, INTERVENE, FakeTransport
from tests.support.harness import TENANT, SupervisedBridge

pytestmark = pytest.mark.integration

PLACE_ORDER = [{"id": "c1", "name": "place_order", "args": {"item": "large pizza"}}]


async def script(call: AgentCall) -> None:
    await call.turn("t1", "Two pizzas please.", "Two pizzas, got it.")
    await call.say(3, checkpoint="t1-said")
    await asyncio.sleep(0.3)  # ScoreTurn fails at once: the turn is let through unscored
    await call.turn("t2", "Actually, just one.", "Great, two pizzas.")
    await call.say(3, checkpoint="t2-said")
    await call.wait_event("mirror.verdict", timeout=5)
    await call.tool_gate("g1", PLACE_ORDER, "Just one.", "Placing the order.")
    await call.wait_event("mirror.tool_decision", timeout=5)
    await call.closed.wait()


def directive(doc: dict[str, Any]) -> dict[str, Any]:
    (cw,) = doc["_aws"]["CloudWatchMetrics"]
    return dict(cw)


def assert_emf(doc: dict[str, Any]) -> None:
    """The EMF specification's rules CloudWatch enforces (a violating document is stored as a
    log line and yields no metric)."""
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000
    cw = directive(doc)
    assert cw["Namespace"] == metrics.NAMESPACE
    for dims in cw["Dimensions"]:
        assert 1 <= len(dims) <= 30
        assert all(isinstance(doc[d], str) and doc[d] for d in dims)
    assert 1 <= len(cw["Metrics"]) <= 100
    for m in cw["Metrics"]:
        assert set(m) == {"Name", "Unit"} and m["Unit"] in ("Count", "Milliseconds")
        assert isinstance(doc[m["Name"]], int | float) and not isinstance(doc[m["Name"]], bool)


def test_a_scripted_call_emits_its_counts_as_emf() -> None:
    transport = FakeTransport(
        script={
            "score_turn": [(0.0, FunctionError("score_turn", "transport", "refused")),
                           (0.0, INTERVENE)],
            "generate_correction": [(0.0, CORRECTION)],
            "gate_tool": [(0.0, FunctionError("gate_tool", "transport", "refused"))],
        }
    )  # fmt: skip
    lines: list[str] = []

    async def main() -> tuple[Any, str]:
        async with ScriptedAgent(script) as agent:
            bridge = SupervisedBridge(agent.url, transport=transport, hold_budget_s=1.0)
            sink = BridgeMetrics(write=lines.append)
            bridge.app.state.metrics = sink
            with bridge.server:
                async with bridge.peer() as peer:
                    await peer.start()
                    await peer.media(5)
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    call = agent.calls[0]
                    await call.wait_event("mirror.tool_decision", timeout=15)
                    await asyncio.sleep(0.5)  # the intervention plays out
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                for _ in range(200):  # the route's metrics run once the relay returned
                    if any(metrics.CALLS in json.loads(line) for line in lines):
                        break
                    await asyncio.sleep(0.02)
                assert sink.active == 0
                (session,) = bridge.sessions
                return session, peer.call_id

    session, call_id = run(main(), timeout=40)
    docs = [json.loads(line) for line in lines]
    for doc in docs:
        assert_emf(doc)
    counts = session.counts
    (call_doc,) = [d for d in docs if metrics.CALLS in d]
    assert call_doc[metrics.SERVICE_DIMENSION] == metrics.SERVICE
    assert directive(call_doc)["Dimensions"] == [[metrics.SERVICE_DIMENSION]]
    assert (call_doc["call_id"], call_doc["tenant_id"]) == (call_id, TENANT)
    assert call_doc["end_reason"] == "stop"
    expected = {
        metrics.CALLS: 1,
        metrics.TURNS: 2,
        metrics.FAIL_OPENS: 1,
        metrics.INTERVENTIONS: 1,
        metrics.GATE_REQUESTS: 1,
        metrics.GATE_FAILURES: 1,
        metrics.GATE_HOLDS: 1,
        metrics.CALL_ENDED_LOST: 0,
        metrics.CALL_ENDED_PENDING: 0,
        metrics.CALL_ENDED_RETRIES: 0,
    }
    assert {k: call_doc[k] for k in expected} == expected
    # each metric is what the session counted (one place: metrics.COUNTS)
    for metric, keys in metrics.COUNTS.items():
        assert call_doc[metric] == sum(counts.get(k, 0) for k in keys), metric
    # the fail-open by kind, in its own document with the Kind dimension
    kinds = {d[metrics.KIND_DIMENSION]: d[metrics.FAIL_OPENS] for d in docs
             if metrics.KIND_DIMENSION in d}  # fmt: skip
    assert sum(kinds.values()) == 1
    assert kinds == {
        k.removeprefix(metrics.FAIL_OPEN_KIND_PREFIX): v
        for k, v in counts.items()
        if k.startswith(metrics.FAIL_OPEN_KIND_PREFIX) and v
    }
    # every intervention outcome the session counted, under its Outcome dimension
    outcomes = {d[metrics.OUTCOME_DIMENSION]: d[metrics.INTERVENTION_OUTCOMES] for d in docs
                if metrics.OUTCOME_DIMENSION in d}  # fmt: skip
    assert outcomes == {o: counts[k] for o, k in metrics.OUTCOMES.items() if counts.get(k)}
    assert outcomes, "the intervention's outcome is not counted"
