"""Caller PII out of logs: each kind becomes a placeholder.

- `[email]`: an email address.
- `[card]`: 13 to 19 digits (spaces or dashes between them allowed) that pass the Luhn check. A
  digit run that fails it is an order, tracking or account number and stays; a Luhn-valid run
  is taken for a card even inside an id (`ORD-4532015112830366`): a lost id in a log line costs
  less than a card number in it.
- `[ssn]`: `123-45-6789` and `123 45 6789`, and nine digits after an SSN cue ("SSN 123456789").
- `[dob]`: a date after a birth cue ("born 04/12/1987", "DOB: 1987-04-12", "date of birth April
  12, 1987", "birthday is 12th of April 1987"); the cue stays. A date without such a cue is not a
  birth date (a delivery date, an order date) and stays.
- `[phone]`: US numbers (`(415) 555-0134`, `415.555.0134`, ten digits in a row), international
  numbers written with `+` or `00` (`+44 20 7946 0958`, `+91 98765 43210`, `+44 (0)20 7946 0958`,
  `+33 1.23.45.67.89`) and national numbers with a leading trunk `0` (`020 7946 0958`,
  `06 12 34 56 78`, `(02) 9876 5432`) or an Indian mobile (`98765 43210`): 8 to 15 digits in
  groups separated by a space, a dot or a dash. A time (`10:30`), a price (`$1,234.56`), a
  quantity or a flight number (`UA 920`) has too few digits or other separators and stays.
- `[address]`: a house number and one to four capitalised words ending in a street type
  (`221B Baker Street`, `1600 Pennsylvania Ave NW`, `42 Wallaby Way`, `5 Rue de Rivoli` is not
  one: the type comes last), with an apartment or suite when one follows; lowercase speech
  (`221b baker street`) when one or two words end in street, avenue, road or boulevard.

It runs on every log line: a line without a digit and an `@` costs one scan, and no pattern
backtracks more than a bounded amount (every repetition is separated by a required character).
"""

from __future__ import annotations

import re
from typing import Any

# Every digit pattern starts with a character class and checks what precedes it with a
# lookbehind placed after that first character: the regex engine then skips ahead to the next
# candidate character in C instead of trying the whole pattern at every position. ASCII digits
# only (`_A`): a transcript's numbers are ASCII, and Luhn is computed on them.
_A = re.ASCII
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_DIGIT = re.compile(r"[0-9]")

_CARD = re.compile(r"\d(?<!\d\d)(?:[ -]?\d){12,18}(?!\d)", _A)

_SSN = re.compile(
    r"\d(?<![\w-]\d)\d{2}(?P<sep>[- ])\d{2}(?P=sep)\d{4}(?![\w-])"
    r"|[Ss](?<!\w[Ss])(?i:sn|ocial security(?: number)?|s ?#)(?i:\s+is)?[\s:#.-]{0,3}\d{9}(?!\d)",
    _A,
)

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DOB = re.compile(
    r"(?P<cue>(?:[Dd](?<!\w[Dd])(?i:\.?o\.?b\.?|ate of birth)"
    r"|[Bb](?<!\w[Bb])(?i:irth ?date|irthday|orn))"
    r"(?i:\s+(?:is|was|on))?[\s:,-]{0,3})"
    r"(?P<date>\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}"
    rf"|(?i:{_MONTH})\s+{_DAY},?\s+\d{{4}}|{_DAY}(?:\s+of)?\s+(?i:{_MONTH}),?\s+\d{{4}})",
    _A,
)

_US_TAIL = r"[\s.-]?\d{3}[\s.-]?\d{4}(?![\w-])"
_US_PHONE = (
    rf"\+(?<![\w+-]\+)1[\s.-]?(?:\(\d{{3}}\)|\d{{3}}){_US_TAIL}"
    rf"|\((?<![\w-]\()\d{{3}}\){_US_TAIL}"
    rf"|\d(?<![\w-]\d)\d{{2}}{_US_TAIL}"
)
_INTL_PHONE = (
    r"(?:\+(?<![\w+]\+)|00(?<![\w+]00))\d{1,3}(?:[\s.-]?\(0?\d{0,4}\)[\s.-]?\d{1,8})?"
    r"(?:[\s.-]\d{1,8}){1,6}(?!\w)"
    r"|\+\d[\d\s-]{7,14}\d"
)
_NATIONAL_PHONE = (
    r"(?:\((?<![\w.,$]\()0\d{1,4}\)|0(?<![\w.,$]0)\d{1,4})(?:[\s.-]\d{2,5}){1,4}(?!\w|[.,]\d)"
    r"|[6-9](?<![\w.,$][6-9])\d{4}[\s-]\d{5}(?!\w)"
)
_PHONE = re.compile(f"{_INTL_PHONE}|{_US_PHONE}|{_NATIONAL_PHONE}", _A)

_STREET_TYPE = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    r"|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Crescent|Close|Row|Alley)"
)
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|#)\.?\s*#?\w{1,6})?"
_ADDRESS = re.compile(
    r"\d(?<![\w$.,]\d)\d{0,5}(?:"
    r"[A-Za-z]?\s+(?:(?:[A-Z][A-Za-z'.-]*|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    rf"{_STREET_TYPE}\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?{_UNIT}"
    r"|(?i:[a-z]?\s+(?:[a-z]+\s+){1,2}(?:street|avenue|road|boulevard)\b))",
    _A,
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = m.group().replace(" ", "").replace("-", "")
    return "[card]" if luhn_ok(digits) else m.group()


def _phone(m: re.Match[str]) -> str:
    n = sum(c.isdigit() for c in m.group())
    return "[phone]" if 8 <= n <= 15 else m.group()


def _ssn(m: re.Match[str]) -> str:
    text = m.group()
    return "[ssn]" if m.group("sep") else text[: len(text) - 9] + "[ssn]"


def redact(text: str) -> str:
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if _DIGIT.search(text) is None:
        return text
    text = _CARD.sub(_card, text)
    text = _SSN.sub(_ssn, text)
    text = _DOB.sub(r"\g<cue>[dob]", text)
    text = _PHONE.sub(_phone, text)
    return _ADDRESS.sub("[address]", text)


def redact_event(value: Any) -> Any:
    """A copy of a JSON-like value with every string redacted, keys included (a card number
    sent as a key is as much PII as one sent as a value)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_event(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_event(v) for v in value]
    return value
