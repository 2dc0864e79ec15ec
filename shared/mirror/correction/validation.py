"""Validating LLM output before it is spoken or handed to the agent.

LLM output is untrusted: a line that reads like an instruction, meta talk, the caller's own
voice, markup or a speech that is too long is rejected (`line_problem`), and so is a note that
relaxes a confirmation or a policy (`note_problem`); every note ends by requiring a read-back
and a yes (`with_confirmation`). The templates' filled-in text passes the same checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mirror.judge.text import find_phrase

MAX_LINE_CHARS = 250
MAX_LINE_SENTENCES = 3
MAX_NOTE_CHARS = 450

CONFIRM_SUFFIX = (
    "Read the details back and get the caller's clear yes before any action that can't be undone."
)


_MARKUP = re.compile(r"[{}\[\]<>`*#|~\\_]|^\s*[-•]\s|\bjson\b|https?://", re.IGNORECASE)
"""For the spoken line: anything a TTS engine would read out as symbols, or a link."""
_NOTE_MARKUP = re.compile(r"[{}`<>]|^\s*(?:[-•*]|#+)\s|\*\*|\bjson\b", re.IGNORECASE)
"""For the note: tool and argument names (underscores, dots) are fine, markup and JSON not."""
_SPEAKER_LABEL = re.compile(
    r"^\s*(?:agent|assistant|ai|bot|caller|customer|user|correction|note)\s*:", re.IGNORECASE
)
_META = re.compile(
    r"\bas an ai\b|\blanguage model\b|\b(?:ai|virtual) assistant\b|\bchat ?bot\b"
    r"|\bthe (?:caller|customer|user|agent)\b|\bpolic(?:y|ies)\b|\bprompts?\b|\bsystem\b"
    r"|\binstructions?\b|\bguidelines?\b|\boverride\b|\bsupervisor\b|\bmirror\b|\bverdict\b"
    r"|\bjudge\b|\bflagged\b",
    re.IGNORECASE,
)
_IMPERATIVE_START = re.compile(
    r"^\s*(?:tell|say|apologi[sz]e|inform|respond|reply|acknowledge|explain|instruct|remind"
    r"|ask (?:the|them|him|her)|correct (?:the|your|yourself)|use|avoid|ensure|make sure to"
    r"|remember to|do not|never|always|offer|clarify to|confirm with)\b",
    re.IGNORECASE,
)
_INSTRUCTION = re.compile(
    r"\byou should\b|\byou must\b|\bshould say\b|\bsay something like\b|\brespond with\b"
    r"|\btell (?:them|him|her)\b|\bthe agent (?:should|must|needs?)\b",
    re.IGNORECASE,
)
_AGENT_PURPOSE = (
    r"(?! to (?:make sure|confirm|double[- ]check|check|correct|clarify|verify|apologi[sz]e|fix"
    r"|be sure|read|go over|get (?:this|that|it|everything) right|let you know|mention))"
)
_CALLER_VOICE = re.compile(
    r"\bmy (?:order|pizzas?|booking|reservations?|account|card|address|payment|refund|flights?"
    r"|bags?|baggage|items?|package|delivery|number|email|phone|name|details|tickets?|trip"
    r"|subscription|plan|money|purchase)\b"
    r"|\bI(?: want| wanted| need| needed| would like|'d like)\b" + _AGENT_PURPOSE + r""
    r"|\bI (?:ordered|asked for|changed my mind|didn't ask|did not ask|never asked|didn't order"
    r"|never ordered)\b|\bcan I (?:get|have|order)\b|\bI'll (?:take|have)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")

_SKIPS = re.compile(
    r"\b(?:skip|skipping|skipped|bypass|bypassing|ignore|ignoring|disregard|waive|circumvent"
    r"|override|overrule)\b"
    r"|\bwithout (?:a |any |the |their |his |her )?(?:re-?)?(?:confirm|asking|checking|verif"
    r"|read(?:ing)? (?:\w+ ){0,2}back|a yes|approval|permission)"
    r"|\bno (?:need|reason) (?:to|for)\b|\bneed(?:n't| not)\b"
    r"|\b(?:don't|do not|doesn't|does not|never) (?:need to |have to |bother to )?"
    r"(?:confirm|ask|check|verify|read (?:\w+ ){0,2}back|wait)\b"
    r"|\b(?:not|no longer) (?:necessary|needed|required|apply|applies)\b"
    r"|\b(?:immediately|right away|straight away|without delay)\b"
    r"|\bas an ai\b",
    re.IGNORECASE,
)
_REQUIRES_CONFIRMATION = re.compile(r"\bclear yes\b", re.IGNORECASE)
"""A note already demanding the caller's clear yes needs no suffix (our templates' wording)."""


def _normalize(text: str) -> str:
    """One line, straight apostrophes, no wrapping quotes: the form every check reads."""
    text = " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'\u201c":
        text = text[1:-1].strip()
    elif text.startswith("\u201c") and text.endswith("\u201d"):
        text = text[1:-1].strip()
    return text


def line_problem(line: str, forbidden: Iterable[str] = ()) -> str | None:
    """Why `line` must not be spoken to the caller as the agent, or None if it may.

    `line` is already normalized. `forbidden` are phrases the operator's rules forbid now.
    """
    if not line:
        return "empty"
    if len(line) > MAX_LINE_CHARS or len(_SENTENCE_END.findall(line)) > MAX_LINE_SENTENCES:
        return "too_long"
    if _MARKUP.search(line):
        return "markup"
    if _IMPERATIVE_START.search(line) or _INSTRUCTION.search(line):
        return "instruction"
    if _SPEAKER_LABEL.search(line) or _META.search(line):
        return "meta"
    if _CALLER_VOICE.search(line):
        return "caller_voice"
    lowered = line.lower()
    if any(find_phrase(lowered, p) for p in forbidden):
        return "forbidden_phrase"
    return None


def note_problem(note: str) -> str | None:
    """Why `note` must not reach the agent as an instruction, or None if it may."""
    if not note:
        return "empty"
    if len(note) > MAX_NOTE_CHARS:
        return "too_long"
    if _NOTE_MARKUP.search(note):
        return "markup"
    if _SKIPS.search(note):
        return "skips_confirmation"
    return None


def with_confirmation(note: str) -> str:
    """Every note ends by requiring a read-back and a yes before irreversible actions."""
    if _REQUIRES_CONFIRMATION.search(note):
        return note
    if note and note[-1] not in ".!?":
        note += "."
    return f"{note} {CONFIRM_SUFFIX}".strip()
