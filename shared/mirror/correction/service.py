"""The correction service: compose the correction (LLM first, then the template) and store
its note for the agent's next turn, once per turn id.

The design is described in the package docstring (`mirror.correction`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable

from pydantic import ValidationError

from mirror.correction.llm_setup import DEFAULT_LLM_TIMEOUT_S
from mirror.correction.models import (
    Correction,
    CorrectionDraft,
    CorrectionEvent,
    CorrectionResult,
    GeneratedCorrection,
    LLMFailure,
    Rejection,
)
from mirror.correction.prompt import SYSTEM_PROMPT, user_message
from mirror.correction.templates import template_correction
from mirror.correction.validation import _normalize, line_problem, note_problem, with_confirmation
from mirror.judge.checks.rules import triggered
from mirror.llm.base import LLMClient, LLMTimeout
from mirror.models import CallContext, CustomerMessage, Message, MirrorConfig, Reason, Verdict
from mirror.policy import compile_policies
from mirror.state import StateStore, StateStoreError

LLM_GRACE_S = 0.25
"""How much longer than `timeout_s` a client may take before we stop waiting for it."""
MIN_LLM_BUDGET_S = 0.2
"""Below this, asking the LLM cannot pay off: go straight to the template."""
DEFAULT_NOTE_TTL_S = 3_600
"""A note the agent never took is stale after an hour (the call has moved on or ended)."""
REMEMBERED_CORRECTIONS = 8
"""Results kept per call for idempotent retries; bounded so the call's META item stays small."""
CORRECTIONS_META_FIELD = "corrections"


def primary_reason(verdict: Verdict, threshold: float) -> Reason | None:
    """The reason the correction is about: the strongest actionable one (the first on ties),
    speech findings first for an `intervene`, tool findings first for a `block`."""
    if not verdict.reasons:
        return None
    actionable = [r for r in verdict.reasons if r.score >= threshold] or list(verdict.reasons)
    want_tool = verdict.decision == "block"
    return max(
        actionable,
        key=lambda r: ((r.tool_call_id is not None) == want_tool, r.score),
    )


def _forbidden_now(policies: Iterable[str], caller_line: str, line: str) -> list[str]:
    """Phrases the operator's FORBID rules forbid for this line (triggered ones only)."""
    rules = compile_policies(list(policies)).rules
    lowered = line.lower()
    return [
        p
        for r in rules
        if r.kind == "forbid" and triggered(r, caller_line.lower(), lowered)
        for p in r.phrases
    ]


def _failure_kind(e: BaseException) -> LLMFailure:
    if isinstance(e, TimeoutError | LLMTimeout):
        return "timeout"
    return "error"


# --- the service ------------------------------------------------------------------------------


class CorrectionService:
    """Writes corrections and stores override notes. `llm=None` means templates only."""

    def __init__(
        self,
        store: StateStore,
        llm: LLMClient | None = None,
        *,
        llm_timeout_s: float = DEFAULT_LLM_TIMEOUT_S,
        note_ttl_s: int = DEFAULT_NOTE_TTL_S,
        clock: Callable[[], float] = time.time,
        on_llm_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not 0 < llm_timeout_s <= 60:
            raise ValueError(f"llm_timeout_s must be in (0, 60]: {llm_timeout_s!r}")
        self.store = store
        self.llm = llm
        self.llm_timeout_s = llm_timeout_s
        self.note_ttl_s = note_ttl_s
        self.clock = clock
        self.on_llm_error = on_llm_error
        """Told about every LLM failure (the handler logs it); never about caller text."""

    async def compose(
        self,
        event: CorrectionEvent,
        config: MirrorConfig,
        history: list[Message] | None = None,
        *,
        budget_s: float | None = None,
    ) -> Correction:
        """The correction without touching the store: LLM first, then the template."""
        reason = primary_reason(event.verdict, config.intervention_threshold)
        tpl_line, tpl_note = template_correction(reason)
        if self.llm is None:
            return Correction(tpl_line, tpl_note, "template", "template", reason)

        budget = self.llm_timeout_s if budget_s is None else min(self.llm_timeout_s, budget_s)
        name = getattr(self.llm, "name", type(self.llm).__name__)
        if budget < MIN_LLM_BUDGET_S:
            return Correction(tpl_line, tpl_note, "template", "template", reason, name, "timeout")
        try:
            draft = await asyncio.wait_for(
                self.llm.complete_json(
                    system=SYSTEM_PROMPT,
                    user=user_message(
                        event, list(event.history) if history is None else history, reason
                    ),
                    schema=CorrectionDraft,
                    timeout_s=budget,
                ),
                timeout=budget + LLM_GRACE_S,
            )
            if not isinstance(draft, CorrectionDraft):
                draft = CorrectionDraft.model_validate(draft)
        except Exception as e:  # noqa: BLE001 - every LLM failure falls back to the template
            if self.on_llm_error is not None:
                self.on_llm_error(e)
            return Correction(
                tpl_line, tpl_note, "template", "template", reason, name, _failure_kind(e)
            )

        rejected: list[Rejection] = []
        line = _normalize(draft.correction)
        forbidden = _forbidden_now(
            [*config.policies, *(event.policies or [])], event.customer_text, line
        )
        why = line_problem(line, forbidden)
        if why is not None:
            rejected.append(Rejection(part="line", why=why))
            line = tpl_line
        note = _normalize(draft.override_note)
        why = note_problem(note)
        if why is not None:
            rejected.append(Rejection(part="note", why=why))
            note = tpl_note
        else:
            note = with_confirmation(note)
        return Correction(
            line,
            note,
            "template" if any(r.part == "line" for r in rejected) else "llm",
            "template" if any(r.part == "note" for r in rejected) else "llm",
            reason,
            name,
            None,
            tuple(rejected),
        )

    async def generate(
        self,
        event: CorrectionEvent,
        config: MirrorConfig,
        turn_id: str,
        *,
        budget_s: float | None = None,
    ) -> GeneratedCorrection:
        """Compose the correction and store its note for the agent's next turn, once per turn.

        A failing store never withholds the correction (the caller must hear something): the
        result says `note_stored: false` and the errors are returned for counting. `budget_s`
        counts from this call: the reads before the LLM call are taken out of the LLM's share.
        """
        started = time.monotonic()
        ctx = event.context()
        now = self.clock()
        errors: list[str] = []

        remembered: list[dict[str, object]] = []
        try:
            meta = self.store.get_call_meta(ctx, now)
            remembered = _decode_remembered(meta.get(CORRECTIONS_META_FIELD) if meta else None)
        except StateStoreError as e:
            errors.append(str(e))
        for entry in remembered:
            if entry.get("turn_id") == turn_id:
                try:
                    earlier = CorrectionResult.model_validate(entry.get("result"))
                except ValidationError:
                    break  # unreadable: generate afresh
                replayed = earlier.model_copy(update={"replayed": True})
                return GeneratedCorrection(replayed, errors)

        history: list[Message] = list(event.history)
        if not history and not errors:
            try:
                history = self.store.get_history(ctx, now, config.history_limit)
            except StateStoreError as e:
                errors.append(str(e))
            if event.customer_text.strip() and not _has_caller_line(history, event.customer_text):
                history.append(CustomerMessage(role="customer", text=event.customer_text))

        if budget_s is not None:
            budget_s -= time.monotonic() - started
        correction = await self.compose(event, config, history, budget_s=budget_s)
        result = _result(ctx, turn_id, correction)
        try:
            # The note first, then the record: a crash between them makes the retry generate
            # again and replace the note (one note), never return a result whose note is lost.
            self.store.put_override(ctx, result.override_note, now, self.note_ttl_s)
            result.note_stored = True
            entries = [e for e in remembered if e.get("turn_id") != turn_id]
            entries.append({"turn_id": turn_id, "result": result.model_dump(mode="json")})
            self.store.put_call_meta(
                ctx,
                {CORRECTIONS_META_FIELD: json.dumps(entries[-REMEMBERED_CORRECTIONS:])},
                now,
                config.state_ttl_s,
            )
        except StateStoreError as e:
            errors.append(str(e))
        return GeneratedCorrection(result, errors)


def fallback_result(event: CorrectionEvent, config: MirrorConfig, turn_id: str) -> CorrectionResult:
    """The template correction alone, with no store and no LLM: what an entry point returns
    when something unexpected broke, so the caller still has a line to speak."""
    reason = primary_reason(event.verdict, config.intervention_threshold)
    line, note = template_correction(reason)
    correction = Correction(line, note, "template", "template", reason)
    return _result(event.context(), turn_id, correction)


def _result(ctx: CallContext, turn_id: str, correction: Correction) -> CorrectionResult:
    return CorrectionResult(
        call_id=ctx.call_id,
        tenant_id=ctx.tenant_id,
        turn_id=turn_id,
        correction_text=correction.line,
        override_note=correction.note,
        source=correction.source,
        note_source=correction.note_source,
        reason_code=correction.reason.code if correction.reason else "clean",
        check=correction.reason.check if correction.reason else None,
        llm=correction.llm,
        llm_failure=correction.llm_failure,
        rejected=list(correction.rejected),
    )


def _has_caller_line(history: list[Message], text: str) -> bool:
    """Whether the caller's newest stored line is `text` (ScoreTurn stored it with the turn)."""
    last = next((m for m in reversed(history) if isinstance(m, CustomerMessage)), None)
    return last is not None and last.text.strip() == text.strip()


def _decode_remembered(raw: object) -> list[dict[str, object]]:
    if not isinstance(raw, str):
        return []
    try:
        entries = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict)]
