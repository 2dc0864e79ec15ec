"""Text primitives for Tier 0: word-boundary phrase matching, negation, numbers, dates.

Everything here is linguistic, not business logic: which phrases matter comes from the operator.
Patterns are compiled once at import (cheap, no I/O); per-turn work is a few regex scans.
"""

from __future__ import annotations

import re
from functools import lru_cache

WORD_NUMBERS = {
    "zero": 0, "no": 0, "none": 0, "a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "couple": 2,
    "pair": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "dozen": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip

NEGATION_CUES = frozenset(
    "not no never without cannot can't won't don't doesn't didn't isn't aren't wasn't weren't "
    "shouldn't wouldn't couldn't unable nor neither already".split()
)
"""Cues that, shortly before a phrase, mean it is denied or already done ("I already got my
refund" is not a refund request)."""
NEGATION_WINDOW = 4
"""Tokens before a match that are searched for a negation cue (within the same clause)."""

_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_CLAUSE_BREAK = re.compile(r"[.!?;:\n]|,\s*(?:but|however|though)\b")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_NUMBER = re.compile(r"(?<![\w.])\$?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}")
_SPOKEN_EMAIL = re.compile(r"\s+(?:at)\s+|\s+(?:dot)\s+")

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
         ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
         ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")]
    )
    for m in names
}  # fmt: skip
_MONTH_ALT = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DATE_MDY = re.compile(
    rf"\b({_MONTH_ALT})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b"
)
_DATE_DMY = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_ALT})\.?(?:,?\s+(\d{{4}}))?\b"
)
_DATE_SLASH = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?\b")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def alnum(text: str) -> str:
    """Lower-case text with everything but letters and digits removed: '#W-51 99' -> 'w5199'."""
    return _NON_ALNUM.sub("", text.lower())


@lru_cache(maxsize=4096)
def phrase_pattern(phrase: str, plural: bool = False) -> re.Pattern[str]:
    """A phrase matched on word boundaries, whitespace-tolerant ('free' never matches 'freedom').

    With `plural`, a trailing 's'/'es' is accepted too ('t-shirt' matches 't-shirts')."""
    words = [re.escape(w) for w in phrase.lower().split()]
    tail = r"(?:e?s)?" if plural else ""
    return re.compile(r"(?<![a-z0-9])" + r"\s+".join(words) + tail + r"(?![a-z0-9])")


def is_negated(text: str, start: int) -> bool:
    """Whether a negation cue stands within NEGATION_WINDOW tokens before `start`, same clause."""
    head = text[max(0, start - 80) : start]
    breaks = list(_CLAUSE_BREAK.finditer(head))
    if breaks:
        head = head[breaks[-1].end() :]
    return any(t in NEGATION_CUES for t in _TOKEN.findall(head)[-NEGATION_WINDOW:])


def find_phrase(
    text: str, phrase: str, *, negation_aware: bool = True, plural: bool = False
) -> re.Match[str] | None:
    """First affirmative (not negated) occurrence of `phrase` in lower-cased `text`."""
    for m in phrase_pattern(phrase, plural).finditer(text):
        if not negation_aware or not is_negated(text, m.start()):
            return m
    return None


def contains_phrase(text: str, phrase: str) -> bool:
    """Any occurrence on word boundaries, negated or not."""
    return phrase_pattern(phrase).search(text) is not None


_COUNTABLE_WORDS = {k: v for k, v in WORD_NUMBERS.items() if k not in ("a", "an", "no")}
_NUMBER_OR_WORD = re.compile(
    r"(?<![\w.])\$?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])|(?<![a-z0-9])("
    + "|".join(sorted(_COUNTABLE_WORDS, key=len, reverse=True))
    + r")(?![a-z0-9])"
)


def number_words(text: str) -> list[tuple[float, int, int]]:
    """(value, start, end) for digit numbers ('$1,126.04') and number words in lower-cased
    `text`, in order. One regex pass: this runs on every agent line."""
    out: list[tuple[float, int, int]] = []
    for m in _NUMBER_OR_WORD.finditer(text):
        digits, frac, word = m.groups()
        value = _COUNTABLE_WORDS[word] if word else float(digits.replace(",", "") + (frac or ""))
        out.append((float(value), m.start(), m.end()))
    return out


def emails(text: str) -> set[str]:
    """Emails, including spoken ones ('jo dot smith at mail dot com')."""
    lowered = text.lower()
    found = set(_EMAIL.findall(lowered))
    if " at " in lowered:
        spoken = _SPOKEN_EMAIL.sub(lambda m: "@" if "at" in m.group() else ".", lowered)
        found.update(_EMAIL.findall(spoken))
    return found


def dates(text: str) -> set[tuple[int | None, int, int]]:
    """(year or None, month, day) for dates written as ISO, 'May 24th, 2024', '24 May', '5/24'."""
    lowered = text.lower()
    found: set[tuple[int | None, int, int]] = set()
    for y, mo, d in _DATE_ISO.findall(lowered):
        found.add((int(y), int(mo), int(d)))
    for mon, d, y in _DATE_MDY.findall(lowered):
        found.add((int(y) if y else None, _MONTHS[mon], int(d)))
    for d, mon, y in _DATE_DMY.findall(lowered):
        found.add((int(y) if y else None, _MONTHS[mon], int(d)))
    for mo, d, y in _DATE_SLASH.findall(lowered):
        if 1 <= int(mo) <= 12:
            year = int(y) + (2000 if len(y) == 2 else 0) if y else None
            found.add((year, int(mo), int(d)))
    return found


def parse_iso_date(value: str) -> tuple[int, int, int] | None:
    m = _DATE_ISO.fullmatch(value.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def stem(word: str) -> str:
    """A crude plural strip, enough to pair 'bags' with 'baggages' by prefix."""
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word
