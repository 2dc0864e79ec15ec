"""What every Tier 0 check shares: its inputs, its finding, and how tool arguments are read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from mirror.judge.dialogue import Dialogue
from mirror.models import MirrorConfig, ReasonCode, Tier, ToolCall, Turn
from mirror.policy import CompiledPolicies


@dataclass(slots=True, frozen=True)
class Finding:
    """One piece of evidence against a turn. `tool_call_id` None means it is about speech."""

    check: str
    code: ReasonCode
    score: float
    evidence: str
    tool_call_id: str | None = None
    tier: Tier = "tier0"


@dataclass(slots=True)
class CheckInput:
    turn: Turn
    dialogue: Dialogue
    config: MirrorConfig
    policies: CompiledPolicies
    irreversible: list[ToolCall]
    """The turn's tool calls that change state; only these are argument-checked."""


class Check(Protocol):
    id: str
    default_score: float

    def run(self, inp: CheckInput) -> list[Finding]:
        """The check's findings on this turn. A list, not a generator: most checks find
        nothing on most turns, and an empty list is cheaper than a generator to create."""
        ...


# -- tool arguments ---------------------------------------------------------------------------

NUMBER_TYPES = (int, float)
"""For isinstance on hot paths: a tuple, not `int | float`, which builds a union each time."""
CONTAINER_TYPES = (dict, list)
"""Arguments whose scalars `arg_values` walks."""

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID_KEY_WORDS = frozenset("id ids zip zipcode postcode code number reference account".split())


@dataclass(slots=True)
class ArgValue:
    path: str
    key: str
    value: Any
    kind: str  # "id" | "email" | "date" | "number" | "text"
    list_path: str | None = None
    """For an element of a list argument: the list's path (siblings share it)."""


def _is_id_key(key: str) -> bool:
    last = key.lower().rsplit("_", 1)[-1]
    return last in _ID_KEY_WORDS


def classify(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "other"
    if isinstance(value, NUMBER_TYPES):
        return "number"
    if not isinstance(value, str) or not value.strip():
        return "other"
    if _EMAIL.match(value):
        return "email"
    if _ISO_DATE.match(value):
        return "date"
    if not any(ch.isspace() for ch in value.strip()) and (
        _is_id_key(key) or any(ch.isdigit() for ch in value)
    ):
        return "id"
    return "text"


def arg_values(args: dict[str, Any]) -> Iterator[ArgValue]:
    """Every scalar in a tool call's arguments, with the key that names it: the last argument
    first, each nested container depth-first. Scalars skip the stack (most arguments are)."""
    for key, value in reversed(args.items()):
        if not isinstance(value, CONTAINER_TYPES):
            yield ArgValue(key, key, value, classify(key, value))
            continue
        stack: list[tuple[str, str, Any, str | None]] = [(key, key, value, None)]
        while stack:
            path, k, v, list_path = stack.pop()
            if isinstance(v, dict):
                stack.extend((f"{path}.{ck}", ck, cv, None) for ck, cv in v.items())
            elif isinstance(v, list):
                stack.extend((f"{path}[{i}]", k, cv, path) for i, cv in enumerate(v))
            else:
                yield ArgValue(path, k, v, classify(k, v), list_path)


_NOT_LETTERS = re.compile(r"[^a-z]+")


def key_words(key: str) -> list[str]:
    """'total_baggages' -> ['total', 'baggages']. Plain snake_case keys (nearly all of them)
    skip the regex: this runs for every argument of every irreversible call."""
    if key.isascii() and key.replace("_", "").isalpha():
        return key.lower().replace("_", " ").split()
    return [w for w in _NOT_LETTERS.split(key.lower()) if w]


def short(value: Any, limit: int = 60) -> str:
    s = str(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"
