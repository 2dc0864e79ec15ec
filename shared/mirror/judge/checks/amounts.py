"""Number consistency: the amount in a call or an agent line must be the one the caller gave.

Numbers are compared only when they count the same thing: a number is paired with the noun
right after it ("2 checked bags"), and a call argument with its key ("total_baggages") or, for a
quantity, with the item it counts. "My card ends in 42" pairs 42 with nothing, so it never
contradicts `quantity: 1`.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import Any

from mirror.judge import text as tx
from mirror.judge.base import NUMBER_TYPES, CheckInput, Finding, key_words, short

_GENERIC = frozenset(
    "total num number count new old id ids amount value qty quantity of per the".split()
)
_QUANTITY_KEYS = frozenset({"quantity", "qty", "count"})


def _same_thing(noun: str, words: AbstractSet[str]) -> bool:
    return any(
        len(noun) >= 3 and len(w) >= 3 and (w.startswith(noun) or noun.startswith(w)) for w in words
    )


def _stated(
    pairs: list[tuple[float, str, int]], words: AbstractSet[str], *, all_words: bool = False
) -> list[float]:
    """Numbers counting `words`; with `all_words`, the words after the number must cover every
    key word ("2 checked bags" does not state `nonfree_baggages`)."""
    grouped: dict[int, tuple[float, list[str]]] = {}
    for value, noun, pos in pairs:
        grouped.setdefault(pos, (value, []))[1].append(noun)
    out = []
    for value, nouns in grouped.values():
        if all_words:
            if all(any(_same_thing(n, {w}) for n in nouns) for w in words):
                out.append(value)
        elif any(_same_thing(n, words) for n in nouns):
            out.append(value)
    return out


class AmountConsistency:
    id = "amount_consistency"
    default_score = 0.85

    def run(self, inp: CheckInput) -> list[Finding]:
        found: list[Finding] = []
        d = inp.dialogue
        for call in inp.irreversible:
            for key, value in call.args.items():
                if type(value) not in NUMBER_TYPES:  # exact types: bool is not an amount
                    continue
                words, heads, quantity = _key_words(key)
                if quantity:
                    words = words | _item_words(call.args)
                    heads = _heads(words)
                if not words:
                    continue
                for u in reversed(d.utterances):
                    text = u.text
                    for h in heads:
                        if h in text:
                            break
                    else:
                        continue
                    stated = _stated(u.counts, words, all_words=not quantity)
                    if stated:
                        if float(value) not in stated:
                            found.append(
                                Finding(
                                    self.id,
                                    "wrong_amount",
                                    inp.config.check_score(self.id, self.default_score),
                                    f"{call.name}.{key}={value} but the conversation last said "
                                    f"{short(_fmt(stated))}",
                                    call.id,
                                )
                            )
                        break
        found.extend(self._speech(inp))
        return found

    def _speech(self, inp: CheckInput) -> list[Finding]:
        """The agent repeats a count back differently from the caller's last line."""
        found: list[Finding] = []
        d = inp.dialogue
        if not inp.turn.agent_text or not d.callers:
            return found
        said: dict[str, float] = {}
        for value, noun, _ in d.callers[-1].counts:
            said[noun] = value  # the last mention wins: "two, actually three pizzas"
        if not said:
            return found
        agent_pairs = d.agent.counts
        for value, noun, _ in agent_pairs:
            for caller_noun, caller_value in said.items():
                if caller_value != value and _same_thing(noun, {caller_noun}):
                    if caller_value in _stated(agent_pairs, {caller_noun}):
                        continue
                    found.append(
                        Finding(
                            self.id,
                            "wrong_amount",
                            inp.config.check_score(self.id, self.default_score),
                            f"the caller said {_fmt([caller_value])} {caller_noun}, the agent says "
                            f"{_fmt([value])}",
                        )
                    )
                    return found
        return found


@lru_cache(maxsize=4096)
def _key_words(key: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """What an argument key counts ('total_baggages' -> {'baggag'}), the first three letters
    of those words, and whether the key is a quantity (which counts the call's items). Keys
    are the tools' schema, not what anyone said: the same few recur on every turn."""
    kw = key_words(key)
    words = frozenset(tx.stem(w) for w in kw) - _GENERIC
    return words, _heads(words), not _QUANTITY_KEYS.isdisjoint(kw)


def _heads(words: AbstractSet[str]) -> frozenset[str]:
    """A noun pairs with a word when one is a prefix of the other, both 3+ letters: so their
    first three letters are in the line, or no pair can match."""
    return frozenset(w[:3] for w in words if len(w) >= 3)


def _item_words(args: dict[str, Any]) -> set[str]:
    words: set[str] = set()
    for value in args.values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str):
                words.update(tx.stem(w) for w in tx.tokens(item))
    return words - _GENERIC


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)
