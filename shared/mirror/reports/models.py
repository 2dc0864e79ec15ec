"""Boundary models of the post-call report: the CallEnded event in, the report out.

pydantic v2 at the edges (the event, the stored report, the LLM auditor's reply); the builder
works on these objects and never mutates them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirror.models import Identifier, Message, TenantId

CALL_ENDED = "CallEnded"
EVENT_SOURCES = ("mirror.bridge", "mirror.api")
"""Who may send CallEnded: the bridge (Plivo calls) and the Api (`POST /v1/calls/{id}/end`)."""

Severity = Literal["high", "medium", "low"]
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
"""Agent ids prefix counter keys and execution names, so the same alphabet as tenant ids."""

_STRICT = ConfigDict(extra="forbid", frozen=True)


class CallEndedDetail(BaseModel):
    """The `detail` of a CallEnded event, also accepted on its own (a direct invoke)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: TenantId
    call_id: Identifier
    ended_at: float = Field(ge=0)
    reason: Annotated[str, Field(max_length=128)] = ""
    counts: dict[str, float] = Field(default_factory=dict)
    agent_id: AgentId | None = None
    """Optional: the agent that handled the call (default: the call's `agent_id` META field,
    else the tenant id)."""


class CallEndedEnvelope(BaseModel):
    """The EventBridge envelope around a CallEnded detail (what the rule delivers)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    source: str
    detail_type: str = Field(alias="detail-type")
    detail: CallEndedDetail

    @field_validator("detail_type")
    @classmethod
    def _call_ended(cls, value: str) -> str:
        if value != CALL_ENDED:
            raise ValueError(f"detail-type must be {CALL_ENDED!r}")
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in EVENT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(EVENT_SOURCES)}")
        return value


def parse_call_ended(event: Any) -> CallEndedDetail:
    """An EventBridge envelope (it has `detail`) or a bare detail; raises ValidationError."""
    if isinstance(event, dict) and "detail" in event:
        return CallEndedEnvelope.model_validate(event).detail
    return CallEndedDetail.model_validate(event)


class Evidence(BaseModel):
    """One verdict reason behind a report entry."""

    model_config = _STRICT

    turn_id: str
    decision: str
    check: str
    code: str
    tier: str
    score: float
    tool_call_id: str | None = None
    detail: str


class ReportEntry(BaseModel):
    """One failure pattern seen in the call."""

    model_config = _STRICT

    pattern_id: str
    title: str
    severity: Severity
    occurrences: int = Field(ge=1)
    evidence_turn_ids: list[str]
    evidence: list[Evidence]
    what_went_wrong: str
    root_cause: str
    proposed_prompt_change: str
    confidence: float = Field(ge=0.0, le=1.0)
    source: Literal["deterministic", "llm"] = "deterministic"
    counted: bool = False
    """Whether this entry counts toward the fix threshold (severity medium or high)."""


class TranscriptRef(BaseModel):
    """Where a transcript too large for the report item lives (S3)."""

    model_config = _STRICT

    bucket: str
    key: str
    bytes: int
    sha256: str
    messages: int


class AuditorStatus(BaseModel):
    model_config = _STRICT

    status: Literal["skipped", "ok", "failed"] = "skipped"
    model: str | None = None
    error: str | None = None
    """The error's type when the LLM auditor failed (its text can hold model output)."""


class CallReport(BaseModel):
    """The failure report of one call (stored whole in the reports table)."""

    model_config = _STRICT

    report_version: Literal[1] = 1
    tenant_id: str
    call_id: str
    agent_id: str
    ended_at: float
    end_reason: str = ""
    window: str
    """The counting window the call falls in (`YYYYMMDD` of the window's first day, UTC)."""
    generated_at: float
    turns: int
    decisions: dict[str, int] = Field(default_factory=dict)
    """Verdicts per decision (allow, intervene, block)."""
    summary: str
    entries: list[ReportEntry] = Field(default_factory=list)
    auditor: AuditorStatus = Field(default_factory=AuditorStatus)
    transcript: list[Message] | None = None
    """Inline when it fits `inline_transcript_max_bytes`; otherwise see `transcript_ref`."""
    transcript_ref: TranscriptRef | None = None
    transcript_truncated: bool = False
    """True when the transcript was too large and no bucket was configured: only the last
    messages that fit are kept inline."""

    @property
    def counted_patterns(self) -> list[str]:
        return [e.pattern_id for e in self.entries if e.counted]


# --- the LLM auditor's reply ------------------------------------------------------------------

ShortText = Annotated[str, Field(min_length=1, max_length=800)]


class AuditedEntry(BaseModel):
    model_config = _STRICT

    pattern_id: str
    severity: Severity
    evidence_turn_ids: list[str] = Field(min_length=1, max_length=50)
    what_went_wrong: ShortText
    root_cause: ShortText
    proposed_prompt_change: ShortText
    confidence: float = Field(ge=0.0, le=1.0)


class AuditorReply(BaseModel):
    """What the auditor LLM must answer: one entry per pattern it was shown, refined."""

    model_config = _STRICT

    summary: ShortText
    entries: list[AuditedEntry] = Field(max_length=40)
