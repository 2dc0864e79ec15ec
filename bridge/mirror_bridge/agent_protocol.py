"""Mirror messages on the agent socket, beside the relayed Plivo protocol.

The agent sends `mirror.turn` (what it heard, what it is saying, the tools it plans) and
`mirror.tool_gate` (may I run these calls now?). The bridge answers with `mirror.verdict`,
`mirror.tool_decision`, `mirror.override` (a one-shot note for the agent's next turn) and
`mirror.error` (a message it could not use: the call goes on). On its own the bridge sends
`mirror.caller_silent` (the silence watchdog) and `mirror.call_ending` (the call-length guard,
just before it closes the call). Every Mirror message has an `event` starting with `mirror.`;
everything else on the socket is Plivo's protocol. An agent ignores Mirror events it does not
know: later bridges may add some.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mirror.errors import field_errors
from mirror.gate import GateResult, PlannedToolCall
from mirror.models import (
    MAX_TOOL_CALLS,
    Identifier,
    Text,
    ToolCall,
    ToolMessage,
    Verdict,
)
from mirror_bridge.plivo_protocol import OUTBOUND_EVENTS

MIRROR_PREFIX = "mirror."
PLIVO_INBOUND_EVENTS: frozenset[str] = frozenset(
    {"start", "media", "dtmf", "playedStream", "clearedAudio", "stop"}
)

_IN = ConfigDict(extra="forbid", frozen=True)
_OUT = ConfigDict(extra="forbid")

ErrorCode = Literal[
    "unknown_event",  # a mirror.* event this bridge does not know
    "invalid_message",  # a known event whose fields do not validate
    "malformed_frame",  # not JSON, not an object, or no event
    "unsupported_frame",  # a non-Mirror event the agent may not send (e.g. a Plivo inbound one)
    "not_configured",  # scoring or gating is not available on this bridge
    "internal_error",
]


class MirrorTurn(BaseModel):
    """One agent turn, sent before (or while) its audio is sent."""

    model_config = _IN

    event: Literal["mirror.turn"]
    turn_id: Identifier
    customer_text: Text = ""
    agent_text: Text = ""
    tool_calls: list[ToolCall] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)
    tool_results: list[ToolMessage] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)


class MirrorToolGate(BaseModel):
    """Planned tool calls the agent wants to run now; answered by one `mirror.tool_decision`."""

    model_config = _IN

    event: Literal["mirror.tool_gate"]
    request_id: Identifier
    turn_id: Identifier | None = None
    customer_text: Text = ""
    agent_text: Text = ""
    tool_calls: list[PlannedToolCall] = Field(min_length=1, max_length=MAX_TOOL_CALLS)
    tool_results: list[ToolMessage] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)


MirrorMessage = Annotated[MirrorTurn | MirrorToolGate, Field(discriminator="event")]
INBOUND_EVENTS: frozenset[str] = frozenset({"mirror.turn", "mirror.tool_gate"})
KNOWN_EVENTS: frozenset[str] = INBOUND_EVENTS | OUTBOUND_EVENTS | PLIVO_INBOUND_EVENTS
"""Every event name either protocol defines: the only ones a `mirror.error` names."""
_ADAPTER: TypeAdapter[MirrorTurn | MirrorToolGate] = TypeAdapter(MirrorMessage)


class MirrorOutbound(BaseModel):
    """A message the bridge sends to the agent: built here, sent as `to_wire()`."""

    model_config = _OUT

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class MirrorVerdict(MirrorOutbound):
    event: Literal["mirror.verdict"] = "mirror.verdict"
    turn_id: str
    verdict: Verdict

    def to_wire(self) -> dict[str, Any]:
        """The verdict as ScoreTurn answered it: the fields it sent (validated once)."""
        return {
            "event": self.event,
            "turn_id": self.turn_id,
            "verdict": self.verdict.model_dump(mode="json", exclude_unset=True),
        }


UnsupervisedFailure = Literal[
    "timeout",  # ScoreTurn did not answer within the session's score timeout
    "function_error",  # the function raised (Lambda's FunctionError)
    "error_response",  # it answered with an `{"error": ...}` object
    "invalid_response",  # its answer was not a verdict
    "transport",  # the call itself failed (connection, body read, throttling)
    "invalid_request",  # the bridge could not build a valid request from the turn
]
"""Why a turn could not be scored (`mirror_bridge.scoring.ScoringFailure.kind`)."""

UNSUPERVISED_MESSAGE = "this turn could not be scored; it went out unsupervised"


class MirrorUnsupervised(MirrorOutbound):
    """Sent instead of `mirror.verdict` when ScoreTurn could not score a turn: its audio was
    let through unscored (speech fails open), so the agent knows this turn went unsupervised
    and why. One per such turn; the session counts it (`score_failure_<failure>`)."""

    event: Literal["mirror.unsupervised"] = "mirror.unsupervised"
    turn_id: str
    failure: UnsupervisedFailure
    message: str = UNSUPERVISED_MESSAGE


class MirrorToolDecision(MirrorOutbound):
    event: Literal["mirror.tool_decision"] = "mirror.tool_decision"
    request_id: str
    result: GateResult

    def to_wire(self) -> dict[str, Any]:
        """The result as GateTool answered it (or as the fail-safe built it): the fields it
        has."""
        return {
            "event": self.event,
            "request_id": self.request_id,
            "result": self.result.model_dump(mode="json", exclude_unset=True),
        }


class MirrorOverride(MirrorOutbound):
    """Say this next (one shot): the correction the caller already heard, and what to do now."""

    event: Literal["mirror.override"] = "mirror.override"
    note: str
    turn_id: str | None = None
    intervention_id: str | None = None


class MirrorCallerSilent(MirrorOutbound):
    """The caller has not been heard (no speech-level audio, key press or caller turn) for
    `silent_s` seconds since the last audio played to them ended; `notice` counts the notices
    of this silence (one every `CALLER_SILENCE_S`)."""

    event: Literal["mirror.caller_silent"] = "mirror.caller_silent"
    silent_s: float
    notice: int = Field(ge=1)


class MirrorCallEnding(MirrorOutbound):
    """The bridge is ending the call (`reason` `max_duration`: `MAX_CALL_S` was reached); the
    agent's socket closes right after it."""

    event: Literal["mirror.call_ending"] = "mirror.call_ending"
    reason: Literal["max_duration"]
    max_call_s: float


class MirrorError(MirrorOutbound):
    event: Literal["mirror.error"] = "mirror.error"
    code: ErrorCode
    message: str
    ref_event: str | None = None
    """The `event` of the message this answers, when it had one."""
    ref_id: str | None = None
    """Its `turn_id` or `request_id`, when it had one."""


class MirrorProtocolError(ValueError):
    """An agent message that cannot be used; `error` is what goes back to the agent."""

    def __init__(self, error: MirrorError) -> None:
        super().__init__(error.message)
        self.error = error


def is_mirror(message: dict[str, Any]) -> bool:
    event = message.get("event")
    return isinstance(event, str) and event.startswith(MIRROR_PREFIX)


def _ref_id(message: dict[str, Any]) -> str | None:
    for key in ("turn_id", "request_id"):
        if isinstance(value := message.get(key), str):
            return value[:256]
    return None


def parse_mirror_message(message: dict[str, Any]) -> MirrorTurn | MirrorToolGate:
    """Validate an agent's Mirror message; raises MirrorProtocolError carrying the reply. The
    reply never quotes the message's keys or values (a card number sent as a key or an event
    name goes no further): paths are built from the schema's names (`mirror.errors`)."""
    event = message.get("event")
    ref = _ref_id(message)
    if event not in INBOUND_EVENTS:
        raise MirrorProtocolError(
            MirrorError(
                code="unknown_event",
                message=f"unknown Mirror event; known: {', '.join(sorted(INBOUND_EVENTS))}",
                ref_id=ref,
            )
        )
    try:
        return _ADAPTER.validate_python(message)
    except ValidationError as e:
        # loc[0] is the union's tag (the event); the rest is the message's own path
        fields = field_errors(e.errors(include_url=False)[:5], strip=1)
        detail = "; ".join(
            f"{'message' if f['field'] == '(event)' else f['field']}: {f['message']}"
            for f in fields
        )
        raise MirrorProtocolError(
            MirrorError(code="invalid_message", message=detail, ref_event=event, ref_id=ref)
        ) from None


def error_reply(
    code: ErrorCode, message: str, about: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `mirror.error` about `about` (the frame it answers). `message` must be the bridge's
    own text; `ref_event` is set only when the frame's event is one the protocols define, so an
    arbitrary event name is never sent back."""
    about = about or {}
    event = about.get("event")
    return MirrorError(
        code=code,
        message=message,
        ref_event=event if isinstance(event, str) and event in KNOWN_EVENTS else None,
        ref_id=_ref_id(about),
    ).to_wire()
