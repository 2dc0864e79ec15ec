"""Retractions: a value the caller took back must not be read back or passed to a tool.

"Large pepperoni, actually make it medium" retracts "large" only: the correction names a size,
so only the size is replaced. When the correction shares no category with what came before,
everything before the marker is retracted ("pepperoni, actually mushroom").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mirror.judge import text as tx
from mirror.judge.base import NUMBER_TYPES, CheckInput, Finding
from mirror.models import ReasonCode

_MARKER = tx.WordAlternatives(
    r"actually|no wait|wait|sorry|i mean|i meant|scratch that|make that|"
    r"on second thought|change (?:that|it) to|rather"
)
_INSTEAD_OF = tx.WordAlternatives(r"instead of")
_SENTENCE = re.compile(r"[.!?\n]")
_FILLER = frozenset(
    "make it that change to let's lets do go with i i'd id want would like please can you get "
    "me a an the one no yes um uh oh so just instead of rather".split()
)
_CATEGORIES: tuple[frozenset[str], ...] = (
    frozenset("small medium large regular extra xl xxl mini personal family".split()),
    frozenset(
        "red blue green black white yellow purple pink orange brown grey gray silver gold".split()
    ),
    frozenset("monday tuesday wednesday thursday friday saturday sunday today tomorrow".split()),
)


@dataclass(frozen=True, slots=True)
class Retracted:
    retracted: frozenset[str]
    replacement: frozenset[str]
    said: str
    refused: frozenset[str] = frozenset()
    """Retracted words the caller negated after the marker ("pepperoni, actually no
    pepperoni"): wrong wherever they are used, whatever else is said with them."""


def _content(text: str) -> list[str]:
    return [w for w in tx.tokens(text) if w not in _FILLER]


def _category(word: str) -> int | None:
    if word.isdigit() or word in tx.WORD_NUMBERS:
        return -1
    for i, cat in enumerate(_CATEGORIES):
        if word in cat:
            return i
    return None


def _split(before: list[str], after: list[str], said: str) -> Retracted | None:
    if not before or not after:
        return None
    after_cats = {c for w in after if (c := _category(w)) is not None}
    shared = [w for w in before if _category(w) in after_cats]
    if shared:
        cats = {_category(w) for w in shared}
        replacement = [w for w in after if _category(w) in cats]
        return Retracted(frozenset(shared) - set(after), frozenset(replacement), said)
    return Retracted(frozenset(before) - set(after), frozenset(after), said)


_REFUSED = re.compile(
    r"\b(?:no|not(?:\s+(?:the|a|an))?|without(?:\s+(?:the|a|an|any))?)\s+([a-z][a-z'-]*)"
)
"""A word the caller negates: 'no pepperoni', 'not the large', 'without onions'."""


def _after_marker(before: list[str], after_text: str, said: str) -> Retracted | None:
    """Words named before the marker and negated after it are refused outright; the rest of
    what follows the marker replaces what came before."""
    named = set(before)
    refused = frozenset(w for w in _REFUSED.findall(after_text) if w in named)
    after = [w for w in _content(after_text) if w not in refused]
    r = _split(before, after, said)
    if not refused:
        return r
    if r is None:
        return Retracted(refused, frozenset(after), said, refused)
    return Retracted(r.retracted | refused, r.replacement, said, refused)


def retractions(line: str) -> list[Retracted]:
    """The retractions in one caller line (lower-cased)."""
    out: list[Retracted] = []
    for sentence in _SENTENCE.split(line):
        if m := _MARKER.search(sentence):
            r = _after_marker(_content(sentence[: m.start()]), sentence[m.end() :], sentence)
        elif m := _INSTEAD_OF.search(sentence):
            r = _split(_content(sentence[m.end() :]), _content(sentence[: m.start()]), sentence)
        else:
            continue
        if r is not None and r.retracted:
            out.append(r)
    return out


def active_retractions(caller_lines: list[str]) -> list[Retracted]:
    """Retractions still in force: a word the caller says again later is no longer retracted."""
    joined = caller_lines[0] if len(caller_lines) == 1 else "\n".join(caller_lines)
    if _MARKER.search(joined) is None and (
        "instead" not in joined or _INSTEAD_OF.search(joined) is None
    ):
        return []  # the common case, in one scan
    out: list[Retracted] = []
    later: set[str] = set()  # words the caller says after the line at hand
    for line in reversed(caller_lines):
        if _MARKER.search(line) or _INSTEAD_OF.search(line):
            for r in retractions(line):
                still = r.retracted - later
                if still:
                    kept = frozenset(still)
                    out.append(Retracted(kept, r.replacement, r.said, r.refused & kept))
        later.update(tx.words(line))
    out.reverse()
    return out


def _mentions(text: str, words: frozenset[str]) -> list[str]:
    return [w for w in words if tx.find_phrase(text, w)]


def _wrong(used: list[str], r: Retracted, text: str) -> bool:
    """Retracted words in `text` are wrong when one was refused outright, or when nothing the
    caller said instead is there with them."""
    return not r.refused.isdisjoint(used) or not _mentions(text, r.replacement)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value.lower()
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, NUMBER_TYPES) and not isinstance(value, bool):
        yield f"{value:g}"


class Retraction:
    id = "retraction"
    default_score = 0.9

    def run(self, inp: CheckInput) -> list[Finding]:
        found: list[Finding] = []
        active = active_retractions(inp.dialogue.caller_lines)
        if not active:
            return found
        score = inp.config.check_score(self.id, self.default_score)
        for call in inp.irreversible:
            args_text = " | ".join(_strings(call.args))
            for r in active:
                used = _mentions(args_text, r.retracted)
                if used and _wrong(used, r, args_text):
                    code: ReasonCode = "wrong_amount" if used[0][0].isdigit() else "wrong_variant"
                    found.append(
                        Finding(
                            self.id,
                            code,
                            score,
                            f"{call.name} uses {', '.join(sorted(used))!r}, which the caller took "
                            f"back ({r.said.strip()[:80]!r})",
                            call.id,
                        )
                    )
        agent = inp.turn.agent_text.lower()
        if agent:
            for r in active:
                used = _mentions(agent, r.retracted)
                if used and _wrong(used, r, agent):
                    found.append(
                        Finding(
                            self.id,
                            "wrong_variant",
                            score,
                            f"the agent says {', '.join(sorted(used))!r}, which the caller "
                            f"took back ({r.said.strip()[:80]!r})",
                        )
                    )
        return found
