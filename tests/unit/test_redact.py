"""Issue 13 item 9: what `mirror.redact` takes out of a log line, and what it must leave.

Each adversarial case names the placeholder it must become; each allow twin is a string that
looks close (an order id, a price, a time, a flight, a date that is not a birth date) and must
come back unchanged, so a redactor that blanks every digit fails here too.
"""

from __future__ import annotations

import timeit

import pytest

from mirror.redact import luhn_ok, redact, redact_event

pytestmark = pytest.mark.unit

MUST_REDACT: list[tuple[str, str]] = [
    # cards that pass Luhn, in the ways they are written or spoken
    ("card 4111 1111 1111 1111 please", "[card]"),
    ("4111-1111-1111-1111", "[card]"),
    ("pay with 4532015112830366", "[card]"),
    ("amex 378282246310005", "[card]"),
    ("ref ORD-4532015112830366", "[card]"),  # Luhn-valid inside an id: taken for a card
    # SSNs
    ("my SSN is 123-45-6789", "[ssn]"),
    ("123 45 6789", "[ssn]"),
    ("ssn: 123456789", "[ssn]"),
    ("social security number 987654321", "[ssn]"),
    ("it's 078-05-1120.", "[ssn]"),
    ("SS# 219-09-9999", "[ssn]"),
    # dates of birth (the cue stays)
    ("I was born 04/12/1987", "born [dob]"),
    ("DOB: 1987-04-12", "DOB: [dob]"),
    ("date of birth April 12, 1987", "date of birth [dob]"),
    ("my birthday is 12th of April 1987", "birthday is [dob]"),
    ("born on 12.04.87", "born on [dob]"),
    ("d.o.b. 3/7/1990", "d.o.b. [dob]"),
    ("Birth date: Sept 3 2001", "Birth date: [dob]"),
    # street addresses
    ("I live at 221B Baker Street, London", "[address]"),
    ("1600 Pennsylvania Ave NW", "[address]"),
    ("42 Wallaby Way, Sydney", "[address]"),
    ("ship to 350 Fifth Avenue Apt 4B", "[address]"),
    ("10 Downing St.", "[address]"),
    ("it's 221b baker street", "[address]"),
    ("77 Massachusetts Ave, Suite 200", "[address]"),
    ("1 Infinite Loop Dr", "[address]"),
    # phones, US and international
    ("call (415) 555-0134", "[phone]"),
    ("415.555.0134", "[phone]"),
    ("+1 415 555 0134", "[phone]"),
    ("+44 20 7946 0958", "[phone]"),
    ("+91 98765 43210", "[phone]"),
    ("020 7946 0958", "[phone]"),
    ("+44 (0)20 7946 0958", "[phone]"),
    ("+33 1.23.45.67.89", "[phone]"),
    ("06 12 34 56 78", "[phone]"),
    ("0044 20 7946 0958", "[phone]"),
    ("(02) 9876 5432", "[phone]"),
    ("98765 43210", "[phone]"),
    ("+61 2 9876 5432", "[phone]"),
    ("+49 30 123456", "[phone]"),
    ("+442079460958", "[phone]"),
    # the rest
    ("jo@example.com", "[email]"),
]

MUST_KEEP: list[str] = [
    "order 4532015112830367",  # 16 digits failing Luhn: an order id
    "tracking 1Z999AA10123456784",
    "ORD-1234567890123",  # 13 digits, not Luhn-valid
    "account 123456789012",  # 12 digits: too short for a card
    "invoice 5555 5555 5555 4445",  # card-shaped but fails Luhn
    "$1,234.56",
    "the total is 1,234,567.89 dollars",
    "at 10:30 tomorrow",
    "between 09:00 and 17:45",
    "flight UA 920 to SFO",
    "flight BA0117",
    "I need 2 Large Pizzas and 3 sodas",
    "3 items on the way",
    "2 cars on the road outside",
    "delivered on 04/12/2024",
    "order placed 2024-01-15",
    "due April 12, 2025",
    "version 2.10.3",
    "order #W5199551",
    "quantity 12, size 10.5",
    "zip 94107",
    "call id CA-demo-0003",
    "latency 12.345 ms over 250 calls",
]


@pytest.mark.parametrize(("text", "placeholder"), MUST_REDACT)
def test_redacts(text: str, placeholder: str) -> None:
    out = redact(text)
    assert placeholder in out, out
    digits = [c for c in text if c.isdigit()]
    kept = [c for c in out if c.isdigit()]
    assert len(kept) < max(len(digits) - 3, 1), f"{out!r} still holds the number"


@pytest.mark.parametrize("text", MUST_KEEP)
def test_keeps(text: str) -> None:
    assert redact(text) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112") and not luhn_ok("4532015112830367")


def test_a_sentence_with_everything() -> None:
    text = (
        "Hi, I'm Jo (jo@example.com, +44 20 7946 0958), born 04/12/1987, SSN 123-45-6789, "
        "at 221B Baker Street; card 4111 1111 1111 1111 for order 4532015112830367 at $1,234.56"
    )
    assert redact(text) == (
        "Hi, I'm Jo ([email], [phone]), born [dob], SSN [ssn], "
        "at [address]; card [card] for order 4532015112830367 at $1,234.56"
    )


def test_redact_event_takes_keys_too() -> None:
    event = {"4111 1111 1111 1111": {"note": "SSN 123-45-6789"}, "n": 3, "l": ["+91 98765 43210"]}
    assert redact_event(event) == {"[card]": {"note": "SSN [ssn]"}, "n": 3, "l": ["[phone]"]}


def test_redaction_stays_fast() -> None:
    """A log line of usual size is redacted in well under a millisecond; long hostile input
    (digit runs, separators) stays linear."""
    line = "call CA-1 turn t-3: scored allow in 12.5 ms (tier0), tools lookup_order, order #W51"
    per_line = min(timeit.repeat(lambda: redact(line), number=200, repeat=3)) / 200
    assert per_line < 200e-6, per_line
    for hostile in ("1 " * 20_000, "+1-" * 20_000, "0 " * 20_000, "9" * 50_000, "1A " * 20_000):
        per_call = min(timeit.repeat(lambda h=hostile: redact(h), number=1, repeat=2))
        assert per_call < 0.5, (hostile[:10], per_call)
