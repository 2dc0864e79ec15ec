"""Text primitives for Tier 0: word-boundary phrase matching, negation, numbers, dates.

Everything here is linguistic, not business logic: which phrases matter comes from the operator.
Patterns are compiled once at import (cheap, no I/O); phrases are matched with str.find, so
nothing is compiled or cached per phrase.
"""

from __future__ import annotations

import re

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
_DATE_MDY = re.compile(rf"\b({_MONTH_ALT})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b")
_DATE_DMY = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_ALT})\.?(?:,?\s+(\d{{4}}))?\b"
)
_DATE_SLASH = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?\b")


class WordAlternatives:
    """Phrases matched on word boundaries, one regex search for all of them. The pattern has
    no leading \\b, so the regex engine skips ahead in C by the phrases' first letters instead
    of trying each word start; the left boundary is checked here, on the rare hit."""

    __slots__ = ("pattern",)

    def __init__(self, alternation: str) -> None:
        self.pattern = re.compile(rf"(?:{alternation})(?![a-z])")

    def search(self, text: str) -> re.Match[str] | None:
        m = self.pattern.search(text)
        while m is not None:
            i = m.start()
            if i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"):
                return m
            m = self.pattern.search(text, i + 1)
        return None


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


_DROP = str.maketrans(
    "", "", "".join(chr(c) for c in range(128) if not chr(c).isalnum()) + "’‘“”–—…\u00a0"
)


def words(text: str) -> set[str]:
    """The set of whitespace-separated words of lower-cased `text`, punctuation trimmed: a
    cheaper `tokens` for membership tests."""
    return {w.strip(_PUNCTUATION) for w in text.split()}


def alnum(text: str) -> str:
    """Lower-case text with everything but letters and digits removed: '#W-51 99' -> 'w5199'.
    A translate table, not a regex: it runs on every id and every tool output."""
    return text.lower().translate(_DROP)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def _phrase_at(text: str, phrase: str, start: int, plural: bool) -> tuple[int, int] | None:
    """Next (start, end) of `phrase` in `text` on word boundaries. str.find plus two boundary
    checks: no regex to compile per phrase, so nothing is cached from one turn to the next."""
    n = len(phrase)
    i = text.find(phrase, start)
    while i != -1:
        end = i + n
        if plural and text.startswith("es", end) and not text[end + 2 : end + 3].isalnum():
            end += 2
        elif plural and text.startswith("s", end) and not text[end + 1 : end + 2].isalnum():
            end += 1
        if (i == 0 or not _is_word_char(text[i - 1])) and (
            end >= len(text) or not _is_word_char(text[end])
        ):
            return i, end
        i = text.find(phrase, i + 1)
    return None


def is_negated(text: str, start: int) -> bool:
    """Whether a negation cue stands within NEGATION_WINDOW tokens before `start`, same clause."""
    head = text[max(0, start - 80) : start]
    breaks = list(_CLAUSE_BREAK.finditer(head))
    if breaks:
        head = head[breaks[-1].end() :]
    return any(t in NEGATION_CUES for t in _TOKEN.findall(head)[-NEGATION_WINDOW:])


def find_phrase(
    text: str, phrase: str, *, negation_aware: bool = True, plural: bool = False
) -> str | None:
    """The first affirmative (not negated) occurrence of `phrase` in lower-cased `text`, on word
    boundaries ('free' never matches 'freedom'); `plural` also accepts a trailing s/es."""
    phrase = " ".join(phrase.lower().split())
    if not phrase:
        return None
    pos = 0
    while (hit := _phrase_at(text, phrase, pos, plural)) is not None:
        if not negation_aware or not is_negated(text, hit[0]):
            return text[hit[0] : hit[1]]
        pos = hit[0] + 1
    return None


def has_words(text: str, phrase: str, *, plural: bool = False) -> bool:
    """`phrase` (already lower-case, single-spaced) in `text` on word boundaries: the hot-path
    form of `find_phrase`, for labels and values that were normalized once."""
    return phrase in text and _phrase_at(text, phrase, 0, plural) is not None


def normalize_phrase(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Any occurrence on word boundaries, negated or not."""
    return find_phrase(text, phrase, negation_aware=False) is not None


_COUNTABLE_WORDS = {k: v for k, v in WORD_NUMBERS.items() if k not in ("a", "an", "no")}

_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?")


def digit_numbers(text: str) -> set[float]:
    """Numbers written with digits: what tool outputs (JSON) hold. A regex that starts on a
    digit skips everything else fast, which matters on long outputs."""
    out: set[float] = set()
    for raw in _DIGITS.findall(text):
        try:
            out.add(float(raw.rstrip(",").replace(",", "")))
        except ValueError:
            continue
    return out


_PUNCTUATION = "\"'“”‘’.,!?;:()[]{}*"
_P = re.escape(_PUNCTUATION)


def _by_first_letter(words: list[str]) -> str:
    """An alternation of `words` grouped by first letter ('t(?:welve|hree|wo|en)|s(?:ix)'):
    the regex engine tries one branch per letter, not one per word. Longest first within a
    group, so 'seventeen' would win over 'seven'."""
    groups: dict[str, list[str]] = {}
    for w in sorted(words, key=len, reverse=True):
        groups.setdefault(w[0], []).append(re.escape(w[1:]))
    return "|".join(f"{re.escape(c)}(?:{'|'.join(rest)})" for c, rest in sorted(groups.items()))


_NUMBER = re.compile(
    rf"\s[{_P}]*(?=[$\d{''.join(sorted({w[0] for w in _COUNTABLE_WORDS}))}])"
    rf"(?:\$*(\d[\d,]*(?:\.\d+)?)|({_by_first_letter(list(_COUNTABLE_WORDS))}))"
    rf"[{_P}]*(?=\s\s*(\S*)\s*(\S*))"
)
"""A whitespace-delimited token that is a number once quotes and punctuation are trimmed
('$1,126.04', '(2)', 'two,'), and the two tokens after it, looked ahead at and not consumed
('2 3 bags' has two numbers). It starts on a whitespace character, so the regex engine skips
from space to space in C instead of trying every position; a token whose first character
cannot start a number is given up at once; texts are padded with a space."""

_WORD_VALUES = {w: float(v) for w, v in _COUNTABLE_WORDS.items()}

NumberScan = list[tuple[float, str, str]]
"""(value, the next token, the token after it) for each number of a line, in order."""


def scan_numbers(text: str) -> NumberScan:
    """The numbers of lower-cased `text` with what follows each, in one regex pass ('a' and
    'an' are not counted: 'a pizza' states no quantity)."""
    out: NumberScan = []
    for digits, word, after, after2 in _NUMBER.findall(f" {text} "):
        # `digits` is a digit, then digits and commas, then an optional decimal part
        value = _WORD_VALUES[word] if word else float(digits.replace(",", ""))
        out.append((value, after, after2))
    return out


_NOT_NOUNS = frozenset(
    "and or of the a an to for in on at per each is are was were be it that this with by from "
    "percent dollars dollar usd".split()
)


def counted_pairs(scan: NumberScan) -> list[tuple[float, str, int]]:
    """(number, stemmed noun, which number) for each number of a `scan_numbers` result and the
    up-to-two words right after it: '2 checked bags' gives (2, 'checked', 0) and (2, 'bag', 0).
    A following number or a function word ends the run."""
    pairs: list[tuple[float, str, int]] = []
    for i, (value, first, second) in enumerate(scan):
        for raw in (first, second):
            noun = raw.strip(_PUNCTUATION)
            if (
                not noun
                or noun in _NOT_NOUNS
                or noun in _COUNTABLE_WORDS
                or noun.lstrip("$")[:1].isdigit()
            ):
                break
            pairs.append((value, stem(noun), i))
    return pairs


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
    """A crude plural strip, enough to pair 'bags' with 'baggages' by prefix: -ies, -es, -s,
    keeping at least three letters."""
    n = len(word)
    if n < 4 or word[-1] != "s":
        return word
    if n >= 6 and word.endswith("ies"):
        return word[:-3]
    if n >= 5 and word[-2] == "e":
        return word[:-2]
    return word[:-1]
