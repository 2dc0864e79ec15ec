"""Boundary models of the post-call report: the CallEnded event in, the report out.

pydantic v2 at the edges (the event, the stored report, the LLM auditor's reply); the builder
works on these objects and never mutates them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# The CallEnded model lives in mirror.events (the bridge and the Api send it); re-exported here.
from mirror.events import CALL_ENDED as CALL_ENDED
from mirror.events import EVENT_SOURCES as EVENT_SOURCES
from mirror.events import AgentId as AgentId
from mirror.events import CallEndedDetail as CallEndedDetail
from mirror.events import CallEndedEnvelope as CallEndedEnvelope
from mirror.events import parse_call_ended as parse_call_ended
from mirror.models import Message

Severity = Literal["high", "medium", "low"]
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}

_STRICT = ConfigDict(extra="forbid", frozen=True)


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
