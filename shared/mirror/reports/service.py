"""PostCallReport: one report per ended call, and the fix workflow when a pattern recurs.

`PostCallReportService.handle(detail)`:

1. A call that already has a report is a replay (a redelivered CallEnded, the bridge's and the
   Api's events for the same call, a direct re-invoke): nothing is written; step 6 runs again,
   which is a no-op when the fix workflows already started.
2. The call's state is read through the `StateStore` (META, history, verdicts). A call without
   live state (never scored, or expired) gets no report: `status == "unknown_call"`.
3. The agent is the event's `agent_id`, else the call's `agent_id` META field (whoever starts a
   call may set it, e.g. from the tenant's config), else the tenant id.
4. The deterministic report (`builder.build_report`), then the LLM auditor when one is
   configured (its failure keeps the deterministic report; `auditor.status == "failed"`).
5. The transcript goes inline when its JSON is at most `inline_transcript_max_bytes`; larger,
   to S3 with a pointer (`transcript_ref`); larger and no bucket, the last messages that fit
   stay inline (`transcript_truncated`). Then the report, its entries and the counter
   increments of its counted patterns are written in one transaction (conditional on the
   report not existing: of concurrent duplicates one writes, the others are replays).
6. For each counted pattern whose (agent, pattern, window) counter has reached `threshold`,
   StartExecution of the FixPr state machine under `naming.execution_name(...)`. An execution
   that already exists is success, so a count past the threshold (or a retry after a crash
   between 5 and 6) never starts a second one.

Time comes from `clock`; the window and every key derive from the event's `ended_at`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mirror.llm.base import LLMClient
from mirror.models import MAX_HISTORY_MESSAGES, CallContext, Message
from mirror.reports.builder import (
    DEFAULT_INTERVENTION_THRESHOLD,
    CallRecord,
    audit,
    build_report,
)
from mirror.reports.models import AgentId, CallEndedDetail, CallReport
from mirror.reports.naming import DAY_S, execution_name, window_of
from mirror.reports.store import (
    DynamoDBReportStore,
    FixStart,
    FixWorkflowStarter,
    S3TranscriptStore,
)
from mirror.state import StateStore

AGENT_META_FIELD = "agent_id"
_AGENT = TypeAdapter(AgentId)
_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


class ReportSettings(BaseModel):
    """The PostCallReport function's settings (environment variables in `from_env`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reports_table: str = Field(min_length=1)
    bucket: str | None = None
    inline_transcript_max_bytes: int = Field(100_000, ge=0, le=300_000)
    threshold: int = Field(3, ge=1, le=10_000)
    """Calls of one agent with one pattern in one window that start the fix workflow."""
    window_days: int = Field(7, ge=1, le=366)
    state_machine_arn: str | None = None
    """None: reports are written and counted, no fix workflow is started."""
    report_ttl_days: int = Field(365, ge=1, le=3_650)
    llm_timeout_s: float = Field(20.0, gt=0, le=120)
    intervention_threshold: float = Field(DEFAULT_INTERVENTION_THRESHOLD, ge=0, le=1)

    ENV: ClassVar[dict[str, str]] = {
        "reports_table": "REPORTS_TABLE",
        "bucket": "REPORTS_BUCKET",
        "inline_transcript_max_bytes": "REPORT_INLINE_TRANSCRIPT_MAX_BYTES",
        "threshold": "FIX_THRESHOLD",
        "window_days": "FIX_WINDOW_DAYS",
        "state_machine_arn": "FIX_STATE_MACHINE_ARN",
        "report_ttl_days": "REPORT_TTL_DAYS",
        "llm_timeout_s": "REPORT_LLM_TIMEOUT_S",
    }

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        intervention_threshold: float | None = None,
    ) -> ReportSettings:
        """Raises ValueError naming the variable when one is malformed."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {
            k: env[v].strip() for k, v in cls.ENV.items() if env.get(v, "").strip()
        }
        if intervention_threshold is not None:
            raw["intervention_threshold"] = intervention_threshold
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            names = ", ".join(
                cls.ENV.get(str(err["loc"][0]), str(err["loc"][0])) if err["loc"] else "(env)"
                for err in e.errors(include_input=False)
            )
            raise ValueError(f"invalid report settings: {names}: {e.errors()[0]['msg']}") from None


@dataclass
class ReportOutcome:
    status: Literal["written", "replayed", "unknown_call"]
    tenant_id: str
    call_id: str
    report: CallReport | None = None
    fixes: list[FixStart] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The handler's response (small: no transcript)."""
        out: dict[str, Any] = {
            "status": self.status,
            "tenant_id": self.tenant_id,
            "call_id": self.call_id,
        }
        if self.report is not None:
            out |= {
                "agent_id": self.report.agent_id,
                "window": self.report.window,
                "summary": self.report.summary,
                "patterns": [
                    {"pattern_id": e.pattern_id, "severity": e.severity, "counted": e.counted}
                    for e in self.report.entries
                ],
                "auditor": self.report.auditor.status,
                "transcript_ref": None
                if self.report.transcript_ref is None
                else self.report.transcript_ref.model_dump(),
            }
        out["fixes"] = [
            {"name": f.name, "execution_arn": f.execution_arn, "started": f.started}
            for f in self.fixes
        ]
        return out


def fix_input(report: CallReport, pattern_id: str, threshold: int) -> dict[str, Any]:
    """The FixPr execution's input: a function of (agent, pattern, window) only, so every start
    for one fix asks for the same execution. `fix_id` is the execution name."""
    return {
        "fix_id": execution_name(report.agent_id, pattern_id, report.window),
        "agent_id": report.agent_id,
        "pattern_id": pattern_id,
        "window": report.window,
        "tenant_id": report.tenant_id,
        "threshold": threshold,
    }


@dataclass
class PostCallReportService:
    state: StateStore
    reports: DynamoDBReportStore
    settings: ReportSettings
    transcripts: S3TranscriptStore | None = None
    starter: FixWorkflowStarter | None = None
    llm: LLMClient | None = None
    clock: Callable[[], float] = time.time
    run: Callable[[Coroutine[Any, Any, CallReport]], CallReport] = asyncio.run
    """Runs the auditor's coroutine: the handler's container loop (`mirror.usecases.Deps.run`)
    in the function; a fresh loop by default."""

    def handle(self, detail: CallEndedDetail) -> ReportOutcome:
        """Raises ReportStoreError / StateStoreError when a store fails (retry the event)."""
        existing = self.reports.get_report(detail.tenant_id, detail.call_id)
        if existing is not None:
            return self._replayed(existing)
        now = self.clock()
        ctx = CallContext(call_id=detail.call_id, tenant_id=detail.tenant_id)
        meta = self.state.get_call_meta(ctx, now)
        if meta is None:
            return ReportOutcome("unknown_call", detail.tenant_id, detail.call_id)
        call = CallRecord(
            tenant_id=detail.tenant_id,
            call_id=detail.call_id,
            agent_id=self._agent(detail, meta),
            ended_at=detail.ended_at,
            end_reason=detail.reason or str(meta.get("end_reason") or ""),
            history=self.state.get_history(ctx, now, MAX_HISTORY_MESSAGES),
            verdicts=self.state.list_verdicts(ctx, now),
        )
        report = build_report(
            call,
            window=window_of(detail.ended_at, self.settings.window_days),
            generated_at=now,
            threshold=self.settings.intervention_threshold,
        )
        if self.llm is not None:
            report = self.run(audit(call, report, self.llm, self.settings.llm_timeout_s))
        report = self._with_transcript(report, call.history)
        written = self.reports.put_report(
            report,
            now=now,
            ttl_s=self.settings.report_ttl_days * DAY_S,
            count_ttl_s=(self.settings.window_days + 30) * DAY_S,
        )
        if not written:  # a concurrent delivery of the same event wrote first
            stored = self.reports.get_report(detail.tenant_id, detail.call_id)
            return self._replayed(stored or report)
        return ReportOutcome(
            "written", detail.tenant_id, detail.call_id, report, self._start_fixes(report)
        )

    def _replayed(self, report: CallReport) -> ReportOutcome:
        return ReportOutcome(
            "replayed", report.tenant_id, report.call_id, report, self._start_fixes(report)
        )

    @staticmethod
    def _agent(detail: CallEndedDetail, meta: Mapping[str, Any]) -> str:
        if detail.agent_id is not None:
            return detail.agent_id
        value = meta.get(AGENT_META_FIELD)
        if isinstance(value, str):
            try:
                return _AGENT.validate_python(value)
            except ValidationError:
                pass  # not usable as a key: count the call under its tenant
        return detail.tenant_id

    def _with_transcript(self, report: CallReport, history: list[Message]) -> CallReport:
        body = _MESSAGES.dump_json(history)
        if len(body) <= self.settings.inline_transcript_max_bytes:
            return report.model_copy(update={"transcript": history})
        if self.transcripts is not None:
            ref = self.transcripts.put(report.tenant_id, report.call_id, body, len(history))
            return report.model_copy(update={"transcript_ref": ref})
        kept: list[Message] = []
        size = 2
        for m in reversed(history):
            size += len(json.dumps(m.model_dump(mode="json"))) + 1
            if size > self.settings.inline_transcript_max_bytes:
                break
            kept.append(m)
        return report.model_copy(
            update={"transcript": list(reversed(kept)), "transcript_truncated": True}
        )

    def _start_fixes(self, report: CallReport) -> list[FixStart]:
        if self.starter is None:
            return []
        started: list[FixStart] = []
        for pid in report.counted_patterns:
            count = self.reports.get_count(report.agent_id, pid, report.window)
            if count < self.settings.threshold:
                continue
            payload = fix_input(report, pid, self.settings.threshold)
            started.append(self.starter.start(payload["fix_id"], payload))
        return started
