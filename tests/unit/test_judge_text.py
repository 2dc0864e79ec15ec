"""The Tier 0 text primitives the number and marker checks stand on."""

from __future__ import annotations

import pytest

from mirror.judge import text as tx
from mirror.judge.base import key_words
from mirror.judge.checks.confirmation import is_confirmation
from mirror.judge.checks.retraction import active_retractions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ("yes, book it for two at seven.", [2.0, 7.0]),
        ("that's $1,126.04 in total", [1126.04]),
        ('"(2)" bags, and "three."', [2.0, 3.0]),
        ("a pizza, an order, no bags", []),  # 'a', 'an', 'no' state no count
        ("order #w5199551 on 2024-05-15 at 7pm", []),  # ids, dates, times are not counts
        ("twenty-two or two-thirds", []),  # not whole tokens
        ("2\t3\nfour", [2.0, 3.0, 4.0]),
        ("", []),
    ],
)
def test_numbers_are_whole_tokens_once_punctuation_is_trimmed(
    line: str, values: list[float]
) -> None:
    assert [value for value, _, _ in tx.scan_numbers(line)] == values


def test_counted_pairs_take_up_to_two_nouns_and_stop_at_a_number_or_function_word() -> None:
    assert tx.counted_pairs(tx.scan_numbers("2 checked bags and 3 carry-ons")) == [
        (2.0, "checked", 0),
        (2.0, "bag", 0),
        (3.0, "carry-on", 1),
    ]
    # 'two' counts nothing: the next token is a number
    assert tx.counted_pairs(tx.scan_numbers("two three bags")) == [(3.0, "bag", 1)]
    assert tx.counted_pairs(tx.scan_numbers("my card ends in 42")) == []
    assert tx.counted_pairs(tx.scan_numbers("for two at seven.")) == []


@pytest.mark.parametrize(
    ("word", "stem"),
    [("bags", "bag"), ("cities", "cit"), ("boxes", "box"), ("dies", "die"), ("yes", "yes"),
     ("bus", "bus"), ("glass", "glas"), ("pizza", "pizza"), ("ies", "ies")],
)  # fmt: skip
def test_stem_strips_a_plural_and_keeps_three_letters(word: str, stem: str) -> None:
    assert tx.stem(word) == stem


def test_word_alternatives_match_on_word_boundaries_only() -> None:
    marker = tx.WordAlternatives(r"wait|actually")
    assert marker.search("the waiter will bring it") is None
    assert marker.search("await, um, factually") is None
    m = marker.search("await... no, wait")
    assert m is not None and m.group() == "wait" and m.start() == 13
    assert marker.search("wait") is not None
    assert marker.search("x_wait") is None  # '_' is a word character, as for \b


def test_confirmation_and_retraction_markers_after_the_rewrite() -> None:
    assert is_confirmation("Yes, go ahead.")
    assert not is_confirmation("No, not yet.")
    assert not is_confirmation("Yes, actually make it two.")
    assert not is_confirmation("Okay wait")
    assert is_confirmation("okay, the waiter can go ahead")
    assert active_retractions(["i'd like the waiter's special"]) == []
    (r,) = active_retractions(["large pepperoni, actually make it medium"])
    assert r.retracted == {"large"} and r.replacement == {"medium"}
    (r,) = active_retractions(["mushroom instead of pepperoni"])
    assert r.retracted == {"pepperoni"}


@pytest.mark.parametrize(
    ("key", "words"),
    [("total_baggages", ["total", "baggages"]), ("PartySize", ["partysize"]),
     ("_private__key", ["private", "key"]), ("address_line2", ["address", "line"]),
     ("größe_items", ["gr", "e", "items"])],
)  # fmt: skip
def test_key_words(key: str, words: list[str]) -> None:
    assert key_words(key) == words
