"""The session's scoring client: typed requests (only the given fields sent), one validation per
answer, and every failure a `ScoringFailure` with its kind (never a dict, never a raise)."""

from __future__ import annotations

from typing import Any

import pytest

from mirror.correction import CorrectionResult
from mirror.gate import GateResult
from mirror.models import Verdict
from mirror_bridge.agent_protocol import MirrorToolGate, MirrorTurn, parse_mirror_message
from mirror_bridge.scoring import CallScope, ScoringClient, ScoringFailure
from mirror_bridge.transport import FunctionError
from tests.conftest import run
from tests.fakes.session import CALL_ID, PLACE, gate_request, turn
from tests.fakes.transport import ALLOW, CORRECTION, INTERVENE, FakeTransport, gate_result

pytestmark = pytest.mark.unit

SCOPE = CallScope(CALL_ID, "acme", policies=["never promise a refund"])


def _turn() -> MirrorTurn:
    parsed = parse_mirror_message(turn("t1"))
    assert isinstance(parsed, MirrorTurn)
    return parsed


def _client(script: dict[str, Any]) -> tuple[ScoringClient, FakeTransport]:
    transport = FakeTransport({name: [step] for name, step in script.items()})
    return ScoringClient(transport, SCOPE, score_timeout_s=0.05), transport


def test_score_sends_the_given_fields_and_returns_a_verdict() -> None:
    client, transport = _client({"score_turn": (0.0, ALLOW)})
    verdict = run(client.score(_turn(), "t1"))
    assert isinstance(verdict, Verdict) and verdict.decision == "allow"
    payload = transport.named("score_turn")[0].payload
    assert payload == {
        "call_id": CALL_ID,
        "tenant_id": "acme",
        "policies": ["never promise a refund"],
        "turn_id": "t1",
        "customer_text": "a medium please, not the large",
        "agent_text": "One large coming up.",
        "tool_calls": [],
        "tool_results": [],
    }  # no history: ScoreTurn uses the stored one


def test_every_failure_is_a_typed_value_with_its_kind() -> None:
    cases = {
        "error_response": (0.0, FunctionError("score_turn", "error_response", "invalid_event")),
        "timeout": (1.0, ALLOW),
        "invalid_response": (0.0, {"decision": "maybe", "score": 0.0}),
    }
    for kind, step in cases.items():
        client, _ = _client({"score_turn": step})
        failure = run(client.score(_turn(), "t1"))
        assert isinstance(failure, ScoringFailure) and failure.kind == kind, failure


def test_an_invalid_answer_never_echoes_its_values() -> None:
    client, _ = _client({"score_turn": (0.0, {"decision": "allow", "score": "my card 4111"})})
    failure = run(client.score(_turn(), "t1"))
    assert isinstance(failure, ScoringFailure) and "4111" not in failure.detail


def test_gate_and_correction_answers_are_typed() -> None:
    client, transport = _client(
        {"gate_tool": (0.0, gate_result("hold")), "generate_correction": (0.0, CORRECTION)}
    )
    request = parse_mirror_message(gate_request(PLACE))
    assert isinstance(request, MirrorToolGate)
    gated = run(client.gate(request))
    assert isinstance(gated, GateResult) and gated.decision == "hold"
    assert transport.named("gate_tool")[0].payload["tool_calls"] == [PLACE]
    verdict = Verdict.model_validate(INTERVENE)
    corrected = run(client.correct(_turn(), "t1", verdict))
    assert isinstance(corrected, CorrectionResult) and corrected.note_stored
    sent = transport.named("generate_correction")[0].payload
    assert sent["verdict"]["decision"] == "intervene" and "tool_calls" not in sent


def test_a_correction_for_an_allow_verdict_is_an_invalid_request_never_sent() -> None:
    client, transport = _client({"generate_correction": (0.0, CORRECTION)})
    failure = run(client.correct(_turn(), "t1", Verdict.model_validate(ALLOW)))
    assert isinstance(failure, ScoringFailure) and failure.kind == "invalid_request"
    assert transport.named("generate_correction") == []


def test_gate_failure_kinds_map_to_the_cores() -> None:
    def kind(k: Any, detail: str = "") -> str:
        return ScoringFailure("gate_tool", k, detail).gate_failure

    assert kind("timeout") == "tier_timeout"
    assert kind("error_response", "state_unavailable") == "store_unavailable"
    assert kind("error_response", "invalid_event") == "invalid_event"
    assert kind("transport") == "internal_error"
