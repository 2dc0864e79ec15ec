"""Correction text after an intervention: the line the agent says next, and its one-shot note.

When the judge intervenes, the bridge flushes the agent's audio, plays the buffer line and asks
for two things: the correction the caller hears in the agent's voice ("Sorry, let me correct
that: the medium pepperoni, not the large.") and the override note the agent reads on its next
turn ("The caller changed the size to medium; ..."). Why it is built the way it is:

- The LLM writes both first, under a timeout, because it can take the right value from the
  caller's words; every failure falls back to a per-reason-code template, so a correction is
  always ready within the budget (the call never goes silent waiting for it).
- LLM output is untrusted. A line that reads like an instruction, meta talk, the caller's own
  voice, markup or a speech that is too long would be spoken to the caller as is, so it is
  replaced by the template. The note is a privileged channel into the agent's next turn, so it
  is checked on its own: a note that relaxes a confirmation or a policy is replaced, and every
  note ends by requiring a read-back and a yes before anything irreversible.
- Caller and agent text reach the LLM only as JSON data between markers in the user message;
  the system message holds the instructions alone.
- Templates fill in values parsed from the verdict's evidence by plain concatenation (never
  `str.format` on caller text), restricted to short speakable characters; a value that does not
  parse, or a filled template that fails the same checks as LLM output, gives the generic one.
- Idempotency: the result is remembered per turn id in the call's metadata (the last
  `REMEMBERED_CORRECTIONS`); a retry returns it (`replayed`) without asking the LLM or storing
  the note again, so a note the agent already took is never resurrected. The note itself is one
  item per call that a new correction replaces, so notes never stack.

The package: `models` (the event, the LLM's draft, the result), `service` (`CorrectionService`,
`fallback_result`), `validation` (checks on LLM output), `templates` (per reason code), `prompt`
(the LLM prompt), `llm_setup` (the LLM client and timeout from the environment). Everything is
re-exported here.
"""

from __future__ import annotations

from mirror.correction.llm_setup import (
    DEFAULT_LLM_TIMEOUT_S,
    LLM_TIMEOUT_ENV,
    _ExceptionLogger,
    build_correction_llm,
    llm_timeout_from_env,
)
from mirror.correction.models import (
    CorrectableVerdict,
    Correction,
    CorrectionDraft,
    CorrectionEvent,
    CorrectionResult,
    GeneratedCorrection,
    LLMFailure,
    Part,
    Rejection,
    Source,
)
from mirror.correction.prompt import (
    DATA_END,
    DATA_START,
    PROMPT_HISTORY_MESSAGES,
    PROMPT_TEXT_CHARS,
    PROMPT_TOOL_CHARS,
    SYSTEM_PROMPT,
    _clip,
    _message_data,
    user_message,
)
from mirror.correction.service import (
    CORRECTIONS_META_FIELD,
    DEFAULT_NOTE_TTL_S,
    LLM_GRACE_S,
    MIN_LLM_BUDGET_S,
    REMEMBERED_CORRECTIONS,
    CorrectionService,
    _decode_remembered,
    _failure_kind,
    _forbidden_now,
    _has_caller_line,
    _result,
    fallback_result,
    primary_reason,
)
from mirror.correction.templates import (
    _PARSERS,
    _QUOTED,
    _SLOT,
    _UNSPEAKABLE,
    CHECK_TEMPLATES,
    MAX_EVIDENCE_CHARS,
    MAX_SLOT_CHARS,
    TEMPLATES,
    Template,
    _field_name,
    _first_fit,
    _t,
    _tuple,
    _variant,
    evidence_slots,
    evidence_summary,
    render,
    speakable,
    template_correction,
    template_for,
)
from mirror.correction.validation import (
    _AGENT_PURPOSE,
    _CALLER_VOICE,
    _IMPERATIVE_START,
    _INSTRUCTION,
    _MARKUP,
    _META,
    _NOTE_MARKUP,
    _REQUIRES_CONFIRMATION,
    _SENTENCE_END,
    _SKIPS,
    _SPEAKER_LABEL,
    CONFIRM_SUFFIX,
    MAX_LINE_CHARS,
    MAX_LINE_SENTENCES,
    MAX_NOTE_CHARS,
    _normalize,
    line_problem,
    note_problem,
    with_confirmation,
)

__all__ = [
    "CHECK_TEMPLATES",
    "CONFIRM_SUFFIX",
    "CORRECTIONS_META_FIELD",
    "CorrectableVerdict",
    "Correction",
    "CorrectionDraft",
    "CorrectionEvent",
    "CorrectionResult",
    "CorrectionService",
    "DATA_END",
    "DATA_START",
    "DEFAULT_LLM_TIMEOUT_S",
    "DEFAULT_NOTE_TTL_S",
    "GeneratedCorrection",
    "LLMFailure",
    "LLM_GRACE_S",
    "LLM_TIMEOUT_ENV",
    "MAX_EVIDENCE_CHARS",
    "MAX_LINE_CHARS",
    "MAX_LINE_SENTENCES",
    "MAX_NOTE_CHARS",
    "MAX_SLOT_CHARS",
    "MIN_LLM_BUDGET_S",
    "PROMPT_HISTORY_MESSAGES",
    "PROMPT_TEXT_CHARS",
    "PROMPT_TOOL_CHARS",
    "Part",
    "REMEMBERED_CORRECTIONS",
    "Rejection",
    "SYSTEM_PROMPT",
    "Source",
    "TEMPLATES",
    "Template",
    "build_correction_llm",
    "evidence_slots",
    "evidence_summary",
    "fallback_result",
    "line_problem",
    "llm_timeout_from_env",
    "note_problem",
    "primary_reason",
    "render",
    "speakable",
    "template_correction",
    "template_for",
    "user_message",
    "with_confirmation",
    # package-private, re-exported for code that reached into the old module
    "_AGENT_PURPOSE",
    "_CALLER_VOICE",
    "_ExceptionLogger",
    "_IMPERATIVE_START",
    "_INSTRUCTION",
    "_MARKUP",
    "_META",
    "_NOTE_MARKUP",
    "_PARSERS",
    "_QUOTED",
    "_REQUIRES_CONFIRMATION",
    "_SENTENCE_END",
    "_SKIPS",
    "_SLOT",
    "_SPEAKER_LABEL",
    "_UNSPEAKABLE",
    "_clip",
    "_decode_remembered",
    "_failure_kind",
    "_field_name",
    "_first_fit",
    "_forbidden_now",
    "_has_caller_line",
    "_message_data",
    "_normalize",
    "_result",
    "_t",
    "_tuple",
    "_variant",
]
