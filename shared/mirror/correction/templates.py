"""Template corrections: one per reason code, filled with values parsed from the evidence.

Every failure of the LLM falls back to these. Values are inserted by plain concatenation (never
`str.format` on caller text), restricted to short speakable characters; a value that does not
parse, or a filled template that fails the same checks as LLM output, gives the generic one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.correction.validation import _normalize, line_problem, note_problem, with_confirmation
from mirror.models import Reason

MAX_SLOT_CHARS = 60
MAX_EVIDENCE_CHARS = 200

_SLOT = re.compile(r"\{(\w+)\}")
_UNSPEAKABLE = re.compile(r"[^\w\s'.,$%&/+-]|_")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def render(template: str, slots: dict[str, str]) -> str:
    """Replace `{name}` markers of our own template with slot values. The values are inserted
    as they are and never parsed, so braces in caller text cannot break or inject anything."""
    return _SLOT.sub(lambda m: slots[m.group(1)], template)


def speakable(value: str | None, limit: int = MAX_SLOT_CHARS) -> str | None:
    """A short evidence value fit for a template: letters, digits and a little punctuation."""
    if value is None:
        return None
    cleaned = " ".join(_UNSPEAKABLE.sub(" ", value).split()).strip(" .,'")
    if not cleaned or len(cleaned) > limit or not re.search(r"[A-Za-z0-9]", cleaned):
        return None
    return cleaned


def evidence_summary(evidence: str) -> str | None:
    """The evidence for the note, with long quotations of the caller elided: the note is an
    instruction channel, so the caller's words reach it only as short values."""

    def elide(m: re.Match[str]) -> str:
        return m.group(0) if len(m.group(0)) <= 42 else "'...'"

    text = " ".join(_QUOTED.sub(elide, evidence).split())
    text = text.replace("{", "(").replace("}", ")")
    if len(text) > MAX_EVIDENCE_CHARS:
        text = text[: MAX_EVIDENCE_CHARS - 3].rstrip() + "..."
    return text or None


@dataclass(frozen=True, slots=True)
class Template:
    line: str
    """Spoken to the caller when no evidence value could be used."""
    issue: str
    """For the note: what went wrong (the evidence follows it in parentheses)."""
    instruction: str
    """For the note: what to do from now on."""
    detail_lines: tuple[str, ...] = ()
    detail_notes: tuple[str, ...] = ()
    """Alternatives naming `{slot}`s; the first whose slots were all parsed from the evidence
    is used instead of the generic text."""


def _t(
    line: str,
    issue: str,
    instruction: str,
    *,
    detail_line: str | tuple[str, ...] = (),
    detail_note: str | tuple[str, ...] = (),
) -> Template:
    return Template(line, issue, instruction, _tuple(detail_line), _tuple(detail_note))


def _tuple(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


TEMPLATES: dict[str, Template] = {
    "clean": _t(
        "Let me make sure I have everything right before we go on.",
        "Your last turn was interrupted",
        "Continue from the caller's last request.",
    ),
    "wrong_object": _t(
        "Sorry, I had the wrong one there. Let me make sure I use the one you asked about.",
        "You acted on a different item than the one the caller named",
        "Use only the one the caller named; ask if it is unclear.",
    ),
    "wrong_variant": _t(
        "Sorry, let me correct that: I had the wrong option there. "
        "Let me go with the one you asked for.",
        "What you said or chose does not match the caller's latest choice",
        "Use the caller's latest choice from now on.",
    ),
    "wrong_payment_method": _t(
        "Sorry, let me correct that: I had the wrong payment method. Let me use the one you chose.",
        "You used a payment method the caller did not choose",
        "Use only the payment method the caller named; ask if it is unclear.",
    ),
    "wrong_amount": _t(
        "Sorry, I want to double-check the amount. Could you tell me the number again?",
        "An amount or count you used does not match what the caller said",
        "Use only amounts the caller stated or a tool returned; ask if unsure.",
        detail_line="Sorry, let me correct that: you said {said}, not {wrong}.",
        detail_note="The caller said {said}, but you used {wrong}. Use {said} from now on.",
    ),
    "extra_item": _t(
        "Sorry, let me correct that: I included something you didn't ask for. I'll leave it out.",
        "You included an item the caller never asked for",
        "Include only what the caller asked for.",
        detail_line=(
            "Sorry, let me correct that: I included the {item}, which you didn't ask for. "
            "I'll leave it out."
        ),
        detail_note="You included {item}, which the caller never asked for. Leave it out.",
    ),
    "missing_item": _t(
        "Sorry, I left out something you asked for. Let me go over the items again.",
        "You left out an item the caller asked for",
        "Include everything the caller asked for.",
        detail_line="Sorry, I left out the {item} you asked for. Let me add it.",
        detail_note="The caller asked for {item}, but you left it out. Include it.",
    ),
    "other_user": _t(
        "Sorry, I want to make sure I have the right account. Could you confirm your details?",
        "You used account details that did not come from this caller",
        "Use only details the caller gave you or a lookup returned for them.",
    ),
    "not_allowed_by_policy": _t(
        "Sorry, let me put that more accurately.",
        "Your last line broke one of the business's rules",
        "Stay within what the business allows.",
        detail_note=(
            "You said '{phrase}', which the business does not allow. Do not say it again; "
            "tell the caller what you can offer instead.",
            "In this situation the business requires you to say '{required}'. Say it in your "
            "next turn.",
        ),
    ),
    "no_confirmation_yet": _t(
        "Before I go ahead, let me read the details back to make sure they're right.",
        "You tried an action the caller had not confirmed",
        "Read the details back and wait for the caller's clear yes before you run it.",
        detail_note=(
            "You tried to run {tool} before the caller said yes to the details. Read the "
            "details back and wait for the caller's clear yes before you run it."
        ),
    ),
    "ungrounded_value": _t(
        "Sorry, I don't want to guess that detail. Could you tell me again?",
        "You used a value the caller never gave and no lookup returned",
        "Ask the caller for it or look it up; never make one up.",
        detail_line="Sorry, I don't want to guess: could you tell me the {field} again?",
        detail_note=(
            "The {field} you used came from nowhere in the call. Ask the caller for it or "
            "look it up; never make one up."
        ),
    ),
    "tier_unavailable": _t(
        "Before I go ahead, let me confirm the details with you.",
        "Your action could not be verified in time, so it was held",
        "Read the details back and get the caller's clear yes before trying it again.",
    ),
    "duplicate_call": _t(
        "Just so you know, that's already been taken care of, so I won't do it a second time.",
        "You tried to repeat an action that already ran in this call",
        "Don't run it again unless the caller asks for a second one; then read the details "
        "back and get a clear yes first.",
    ),
}
"""One per reason code; the generic entry of a code is used when its evidence does not parse."""


def _variant(code: str, *, detail_line: str | tuple[str, ...] = (), detail_note: str) -> Template:
    base = TEMPLATES[code]
    return _t(
        base.line,
        base.issue,
        base.instruction,
        detail_line=detail_line,
        detail_note=detail_note,
    )


CHECK_TEMPLATES: dict[tuple[str, str], Template] = {
    ("retraction", "wrong_variant"): _variant(
        "wrong_variant",
        detail_line=(
            "Sorry, let me correct that: you changed your mind about the {value}, "
            "so I'll go with what you asked for instead."
        ),
        detail_note=(
            "The caller took back '{value}' and changed it, but you used it. "
            "Use the caller's latest choice from now on."
        ),
    ),
    ("retraction", "wrong_amount"): _variant(
        "wrong_amount",
        detail_note=(
            "The caller took back {value} and changed it, but you used it. "
            "Use the caller's latest number from now on."
        ),
    ),
    ("variant_options", "wrong_variant"): _variant(
        "wrong_variant",
        detail_line=(
            "Sorry, let me correct that: that one has {option} {actual}, "
            "not the {option} {said} you wanted. Let me find the right one."
        ),
        detail_note=(
            "You read back {option} '{said}', but the variant you chose has {option} "
            "'{actual}'. Choose the variant with {option} '{said}'."
        ),
    ),
}
"""Check-specific wording where a check's evidence says more than its reason code."""

_PARSERS: dict[str, tuple[re.Pattern[str], ...]] = {
    "retraction": (
        re.compile(r"(?:says|uses) (['\"])(?P<value>.+?)\1, which the caller took back"),
    ),
    "variant_options": (
        re.compile(
            r"read back (?P<option>[\w ]+?) '(?P<said>[^']*)', the new variant \S+ has "
            r"(?P=option) '(?P<actual>[^']*)'"
        ),
    ),
    "amount_consistency": (
        re.compile(r"the caller said (?P<said>[\d.,]+ [\w ]+?), the agent says (?P<wrong>[\d.,]+)"),
        re.compile(r"=(?P<wrong>[\d.,]+) but the conversation last said (?P<said>[\d.,]+)"),
    ),
    "object_identity": (
        re.compile(r"^[\w.\[\]]+: (?P<item>.+?) was never asked for$"),
        re.compile(r"^[\w.\[\]]+: (?P<item>.+?) was asked for but is not in the call$"),
    ),
    "operator_rule": (
        re.compile(r"^the agent says (['\"])(?P<phrase>.+?)\1; policy:"),
        re.compile(r"^the agent does not say (['\"])(?P<required>.+?)\1"),
    ),
    "confirmation": (re.compile(r"^(?P<tool>[A-Za-z]\w*): "),),
    "grounding": (re.compile(r"^\w+\.(?P<path>[\w.\[\]]+)="),),
}


def _field_name(path: str) -> str | None:
    """'items.0.reservation_id' -> 'reservation number': an argument name a caller understands."""
    words = [p for p in re.split(r"[.\[\]]", path) if p and not p.isdigit()]
    if not words:
        return None
    name = words[-1].lower()
    if name.endswith("_ids"):
        name = name[:-4] + " numbers"
    elif name.endswith("_id"):
        name = name[:-3] + " number"
    name = name.replace("_", " ").strip()
    return name if re.fullmatch(r"[a-z][a-z ]{0,40}", name) else None


def evidence_slots(reason: Reason) -> dict[str, str]:
    """Short, sanitized values parsed from the evidence of a known check (empty if none)."""
    for pattern in _PARSERS.get(reason.check, ()):
        m = pattern.search(reason.evidence)
        if m is None:
            continue
        raw = {k: v for k, v in m.groupdict().items() if v is not None}
        if "path" in raw:
            raw["field"] = _field_name(raw.pop("path")) or ""
        if "tool" in raw:
            raw["tool"] = raw["tool"].replace("_", " ")
        slots = {k: speakable(v) for k, v in raw.items()}
        return {k: v for k, v in slots.items() if v}
    return {}


def _first_fit(templates: tuple[str, ...], slots: dict[str, str]) -> str | None:
    return next((t for t in templates if all(n in slots for n in _SLOT.findall(t))), None)


def template_for(reason: Reason | None) -> Template:
    if reason is None:
        return TEMPLATES["clean"]
    return CHECK_TEMPLATES.get((reason.check, reason.code)) or TEMPLATES.get(
        reason.code, TEMPLATES["clean"]
    )


def template_correction(reason: Reason | None) -> tuple[str, str]:
    """The template line and note for a reason, with its evidence filled in when it parses."""
    tpl = template_for(reason)
    slots = evidence_slots(reason) if reason is not None else {}

    line = tpl.line
    if (detail := _first_fit(tpl.detail_lines, slots)) is not None:
        detailed = _normalize(render(detail, slots))
        if line_problem(detailed) is None:  # a caller's value can still read like meta talk
            line = detailed

    generic_note = with_confirmation(f"{tpl.issue}. {tpl.instruction}")
    note = generic_note
    if (detail := _first_fit(tpl.detail_notes, slots)) is not None:
        note = with_confirmation(render(detail, slots))
    elif reason is not None and (summary := evidence_summary(reason.evidence)):
        note = with_confirmation(f"{tpl.issue} ({summary}). {tpl.instruction}")
    if note_problem(note) is not None:  # a value from the caller that reads like a bypass
        note = generic_note
    return line, note
