"""Correction boundary models: the GenerateCorrection event, the LLM's draft, the result.

Pydantic at the boundary (`CorrectionEvent`, `CorrectionDraft`, `CorrectionResult`: their JSON
shape is the API's), plain dataclasses inside (`Correction`, `GeneratedCorrection`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirror.models import CallContext, Identifier, Reason, ReasonCode, TenantId, Turn, Verdict
from mirror.policy import compile_policies

Source = Literal["llm", "template"]
Part = Literal["line", "note"]
LLMFailure = Literal["timeout", "error"]


class CorrectableVerdict(Verdict):
    """A verdict that asks for a correction: `allow` has nothing to correct."""

    decision: Literal["intervene", "block"]


class CorrectionEvent(Turn):
    """The GenerateCorrection event: ScoreTurn's verdict plus the turn it judged.

    Without `history` the call's stored history is used (as ScoreTurn does).
    """

    call_id: Identifier
    tenant_id: TenantId | None = None
    turn_id: Identifier | None = None
    """The judged turn's id: a retry with the same id returns the same correction."""
    verdict: CorrectableVerdict
    policies: list[Annotated[str, Field(max_length=4_000)]] | None = Field(
        default=None, max_length=200
    )
    """The policies the turn was judged with, if the event brought its own to ScoreTurn: an LLM
    line that affirms a forbidden phrase is rejected."""

    @field_validator("policies")
    @classmethod
    def _directives_parse(cls, policies: list[str] | None) -> list[str] | None:
        if policies is not None:
            compile_policies(policies)  # PolicyError (a ValueError) names the policy
        return policies

    def context(self) -> CallContext:
        return CallContext(call_id=self.call_id, tenant_id=self.tenant_id or "default")


class CorrectionDraft(BaseModel):
    """What the LLM is asked to return (the JSON schema handed to the client)."""

    model_config = ConfigDict(extra="forbid")

    correction: str = Field(max_length=2_000)
    """Spoken next by the agent, to the caller."""
    override_note: str = Field(max_length=4_000)
    """A private instruction to the agent for its next turn."""


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    part: Part
    why: str


class CorrectionResult(BaseModel):
    """The GenerateCorrection response."""

    model_config = ConfigDict(extra="forbid")

    call_id: str
    tenant_id: str
    turn_id: str
    correction_text: str
    """What the agent says next to the caller, in its own voice."""
    override_note: str
    """The one-shot instruction for the agent's next turn (also stored with the call)."""
    source: Source
    """Where `correction_text` came from."""
    note_source: Source
    reason_code: ReasonCode
    check: str | None
    llm: str | None = None
    """The LLM client's name when one was asked."""
    llm_failure: LLMFailure | None = None
    rejected: list[Rejection] = Field(default_factory=list)
    """LLM output that was replaced by the template, and why."""
    note_stored: bool = False
    replayed: bool = False
    """True when this is the stored result of an earlier delivery of the same turn."""


@dataclass(frozen=True, slots=True)
class Correction:
    """The text and its provenance, before anything is stored."""

    line: str
    note: str
    source: Source
    note_source: Source
    reason: Reason | None
    llm: str | None = None
    llm_failure: LLMFailure | None = None
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class GeneratedCorrection:
    result: CorrectionResult
    store_errors: list[str] = field(default_factory=list)
    """State-store failures met on the way (the correction is returned regardless)."""
