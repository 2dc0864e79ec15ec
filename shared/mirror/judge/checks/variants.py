"""Variant options: when a call swaps one variant of a thing for another (an exchange, a
modification), the new variant's options must be the ones the agent read back.

Only desired values count as evidence: the read-back of the new variant. Values of the variant
being replaced (also in the call) are ignored, so "from black to white" is no contradiction.
Matching a caller's words against the current attributes of existing objects is not done
here: that is attribute-level suspicion, left to the LLM tiers (see the design notes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mirror.judge import text as tx
from mirror.judge.base import CheckInput, Finding, classify
from mirror.judge.dialogue import Dialogue, Utterance, id_key


class VariantOptions:
    id = "variant_options"
    default_score = 0.85

    def run(self, inp: CheckInput) -> list[Finding]:
        found: list[Finding] = []
        if not inp.irreversible or not inp.dialogue.tool_outputs:
            return found  # siblings come from tool outputs only
        score = inp.config.check_score(self.id, self.default_score)
        for call in inp.irreversible:
            ids = [v for v in _id_values(call.args)]
            if len(ids) < 2:
                continue
            keys = {id_key(v) for v in ids}
            for value in ids:
                evidence = _contradiction(inp.dialogue, value, keys)
                if evidence:
                    found.append(
                        Finding(
                            self.id, "wrong_variant", score, f"{call.name}: {evidence}", call.id
                        )
                    )
                    break
        return found


def _id_values(args: dict[str, Any]) -> Iterator[str]:
    for key, value in args.items():
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, str) and classify(key, v) == "id":
                yield v


def _read_back(d: Dialogue, values: set[str]) -> list[Utterance]:
    """The newest line that names any of these option values, and every line after it."""
    out: list[Utterance] = []
    for u in reversed(d.utterances):
        out.append(u)
        if any(tx.has_words(u.text, v) for v in values):
            return out
    return []


_BARE_WORDS = frozenset({"yes", "no", "none", "true", "false", "n/a"})


def _wordlike(value: str) -> bool:
    """A value that names itself in a sentence ("purple", "1.5l"); not "8", "s" or "yes"."""
    return len(value) >= 3 and any(ch.isalpha() for ch in value) and value not in _BARE_WORDS


def _said_for(lines: list[Utterance], name: str, value: str) -> bool:
    """`value` stated for option `name`: as a word-like value on its own, or next to the
    option's name ("size 8", "1.5l capacity") when it is a bare number or letter."""
    if _wordlike(value) and _said(lines, value):
        return True
    named = tx.normalize_phrase(f"{name} {value}"), tx.normalize_phrase(f"{value} {name}")
    return _said(lines, named[0]) or _said(lines, named[1])


def _said(lines: list[Utterance], value: str) -> bool:
    return any(tx.has_words(u.text, value) for u in lines)


def _contradiction(d: Dialogue, value: str, call_keys: set[str]) -> str | None:
    key = id_key(value)
    if d.tool_outputs_holding(value) > 1:
        return None  # also in an order, a fulfilment...: an existing item, not the new variant
    groups = list(d.groups_of(value))
    for group in groups:
        chosen = group.owner(key)
        options = chosen.options if chosen is not None else {}
        if not options:
            continue
        # A swap: the call also names an existing variant of the same thing (same option
        # names; it stands in the caller's order too), the one being replaced.
        replaced = [
            c
            for c in group.candidates
            if c is not chosen
            and c.ids & call_keys
            and c.options.keys() == options.keys()
            and any(d.tool_outputs_holding(i) > 1 for i in c.ids)
        ]
        if not replaced:
            continue
        # The read-back: the newest line that talks about these options at all.
        read_back = _read_back(
            d,
            {tx.normalize_phrase(n) for n in options}
            | {o for o in options.values() if _wordlike(o)},
        )
        if not read_back:
            continue
        for name, wanted in options.items():
            if _said(read_back, wanted):
                continue
            others = {
                o
                for c in group.candidates
                if c is not chosen and (o := c.options.get(name)) is not None and o != wanted
            }
            said = sorted(o for o in others if _said_for(read_back, name, o))
            if said:
                return (
                    f"the agent read back {name} {said[0]!r}, the new variant {value} has "
                    f"{name} {wanted!r}"
                )
    return None
