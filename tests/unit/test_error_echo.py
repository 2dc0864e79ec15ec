"""Issue 13 item 9: an error never carries the request's keys or values.

A card number or a phone sent as a field name (an extra key) or as a `role` / `event` value used
to come back in the error (`invalid event: 4111111111111111`, "Input tag '4111 ...' found using
'role'") and was logged with it. Paths are now built from the schema's names only and messages
from the schema. The allow twins: errors about schema-defined names still name them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mirror.correction import CorrectionEvent
from mirror.errors import EXTRA, KEY, field_errors, validation_error_response
from mirror.gate import GateToolEvent
from mirror.models import ScoreTurnEvent
from mirror.usecases.failure import Failure
from mirror_bridge.agent_protocol import (
    MirrorProtocolError,
    error_reply,
    parse_mirror_message,
)
from tests.fakes.hostile import PII_KEYS
from tests.support.handlers import load_event

pytestmark = pytest.mark.unit

PII = [*PII_KEYS, "4111111111111111", "+91 98765 43210", "020 7946 0958", "987-65-4321"]
"""What must never appear in an error (keys and values)."""

MODELS: list[tuple[type[BaseModel], str]] = [
    (ScoreTurnEvent, "score_turn_block.json"),
    (GateToolEvent, "gate_tool_allow.json"),
    (CorrectionEvent, "generate_correction.json"),
]


def _error_of(model: type[BaseModel], event: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(event)
    return validation_error_response(raised.value)["error"]


def _assert_no_pii(error: Any) -> None:
    text = json.dumps(error)
    leaked = [p for p in PII if p in text]
    assert not leaked, f"{leaked} echoed in {text}"


def _message_index(event: dict[str, Any]) -> int:
    return next(i for i, m in enumerate(event["history"]) if m["role"] == "customer")


@pytest.mark.parametrize(("model", "sample"), MODELS, ids=lambda m: getattr(m, "__name__", m))
@pytest.mark.parametrize("key", PII)
def test_an_extra_key_is_named_extra_never_quoted(
    model: type[BaseModel], sample: str, key: str
) -> None:
    top = {**load_event(sample), key: 1}
    error = _error_of(model, top)
    _assert_no_pii(error)
    assert error["fields"] == [{"field": EXTRA, "message": "Extra inputs are not permitted"}]
    assert error["message"] == f"invalid event: {EXTRA}"

    nested = copy.deepcopy(load_event(sample))
    i = _message_index(nested)
    nested["history"][i][key] = "x"
    error = _error_of(model, nested)
    _assert_no_pii(error)
    assert [f["field"] for f in error["fields"]] == [f"history.{i}.customer.{EXTRA}"]


@pytest.mark.parametrize(("model", "sample"), MODELS, ids=lambda m: getattr(m, "__name__", m))
@pytest.mark.parametrize("role", [*PII, 4111111111111111])
def test_a_bad_role_names_the_accepted_tags_never_the_value(
    model: type[BaseModel], sample: str, role: Any
) -> None:
    event = copy.deepcopy(load_event(sample))
    event["history"][0]["role"] = role
    error = _error_of(model, event)
    _assert_no_pii(error)
    assert "4111111111111111" not in json.dumps(error)
    [field] = error["fields"]
    assert field["field"] == "history.0"
    assert field["message"] == "'role' must be one of 'customer', 'agent', 'tool'"


def test_known_names_are_still_named() -> None:
    """The allow twin: a wrong value under a schema name names the whole path and keeps
    pydantic's own message (built from the schema's constraints)."""
    event = copy.deepcopy(load_event("score_turn_block.json"))
    i = _message_index(event)
    event["history"][i]["text"] = 5
    event["tool_calls"] = [{"id": "", "name": "x"}]
    error = _error_of(ScoreTurnEvent, event)
    assert {(f["field"], f["message"]) for f in error["fields"]} == {
        (f"history.{i}.customer.text", "Input should be a valid string"),
        ("tool_calls.0.id", "String should have at least 1 character"),
    }
    missing = _error_of(ScoreTurnEvent, {"history": []})
    assert {f["field"] for f in missing["fields"]} == {"call_id"}
    assert _error_of(ScoreTurnEvent, [1])["fields"] == [
        {
            "field": "(event)",
            "message": "Input should be a valid dictionary or instance of ScoreTurnEvent",
        }
    ]


def test_a_free_form_key_and_a_validator_message_are_not_echoed() -> None:
    """A key of a mapping is `<key>`; a validator's own text may quote what it got, so it is
    replaced; a message holding the input is replaced whatever its type."""

    class Probe(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scores: dict[str, int] = {}
        name: str = ""

        @field_validator("name")
        @classmethod
        def _no_digits(cls, value: str) -> str:
            if any(c.isdigit() for c in value):
                raise ValueError(f"{value!r} has digits")
            return value

    with pytest.raises(ValidationError) as raised:
        Probe.model_validate({"scores": {"4111111111111111": "x"}, "name": "+44 20 7946 0958"})
    fields = field_errors(raised.value.errors())
    _assert_no_pii(fields)
    assert {f["field"] for f in fields} == {f"scores.{KEY}", "name"}
    # a (future) pydantic message quoting the input is caught by the input check
    [echo] = field_errors(
        [
            {
                "type": "string_type",
                "loc": ("name",),
                "msg": "bad '020 7946 0958'",
                "input": "020 7946 0958",
            }
        ]
    )
    assert echo == {"field": "name", "message": "invalid value"}


def test_a_validator_message_that_quotes_nothing_is_kept() -> None:
    """The allow twin of the echo check: a rule's explanation reaches the caller."""
    event = copy.deepcopy(load_event("gate_tool_allow.json"))
    event["tool_calls"][0]["retry_of"] = event["tool_calls"][0]["id"]
    error = _error_of(GateToolEvent, event)
    assert error["fields"] == [
        {
            "field": "tool_calls.0",
            "message": "Value error, retry_of names the earlier call, not this one",
        }
    ]


def test_failure_invalid_carries_no_input() -> None:
    event = {**load_event("score_turn_block.json"), "4111 1111 1111 1111": "123-45-6789"}
    with pytest.raises(ValidationError) as raised:
        ScoreTurnEvent.model_validate(event)
    failure = Failure.invalid(raised.value)
    _assert_no_pii([failure.message, failure.fields, failure.response()])
    assert failure.status == 422


# --- the bridge's mirror.error ------------------------------------------------------------------


def _mirror_error(message: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(MirrorProtocolError) as raised:
        parse_mirror_message(message)
    wire = raised.value.error.to_wire()
    assert str(raised.value) == wire["message"]
    return wire


TURN = {"event": "mirror.turn", "turn_id": "t1", "customer_text": "hi"}


@pytest.mark.parametrize("key", PII)
def test_mirror_error_never_quotes_a_key_or_an_event(key: str) -> None:
    extra = _mirror_error({**TURN, key: "x"})
    _assert_no_pii(extra)
    assert extra["code"] == "invalid_message"
    assert extra["message"] == f"{EXTRA}: Extra inputs are not permitted"
    assert (extra["ref_event"], extra["ref_id"]) == ("mirror.turn", "t1")

    unknown = _mirror_error({"event": f"mirror.{key}", "turn_id": "t2"})
    _assert_no_pii(unknown)
    assert unknown["code"] == "unknown_event"
    assert unknown["ref_event"] is None and unknown["ref_id"] == "t2"
    assert "mirror.tool_gate, mirror.turn" in unknown["message"]

    bad_call = _mirror_error({**TURN, "tool_calls": [{"id": "c1", "name": "x", key: 1}]})
    _assert_no_pii(bad_call)
    assert bad_call["message"] == f"tool_calls.0.{EXTRA}: Extra inputs are not permitted"


def test_mirror_error_still_names_known_fields() -> None:
    wire = _mirror_error({**TURN, "customer_text": 5, "tool_calls": [{"name": "x"}]})
    assert wire["message"] == (
        "customer_text: Input should be a valid string; tool_calls.0.id: Field required"
    )


@pytest.mark.parametrize("event", ["4111 1111 1111 1111", "mirror.+44 20 7946 0958", 7])
def test_error_reply_names_only_protocol_events(event: Any) -> None:
    assert error_reply("unsupported_frame", "no", {"event": event})["ref_event"] is None
    for known in ("playAudio", "mirror.tool_gate", "start"):
        assert error_reply("invalid_message", "no", {"event": known})["ref_event"] == known
