"""One turn's conversation, analysed lazily: what the caller said, what tools returned.

A `Dialogue` is built per turn and thrown away: nothing is cached across turns or calls.
Each property is computed on first use, so a check that needs only the caller's last line
never pays for parsing tool outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mirror.judge import text as tx
from mirror.models import AgentMessage, CustomerMessage, Message, Turn

LABEL_KEYS = ("name", "title", "label", "product_name", "source", "last_four")
"""Record fields that name a thing the way a caller would (a product name, 'paypal')."""


@dataclass(slots=True)
class Candidate:
    """One of several sibling objects a tool returned (orders of a user, items of an order)."""

    ids: frozenset[str]
    labels: tuple[str, ...]
    record: dict[str, Any] | None = None
    _options: dict[str, str] | None = None

    @property
    def options(self) -> dict[str, str]:
        """The record's attributes (a nested dict of strings, e.g. a variant's options),
        normalized for matching; built on first use."""
        if self._options is None:
            self._options = {}
            for v in (self.record or {}).values():
                if isinstance(v, dict) and v and all(isinstance(x, str) for x in v.values()):
                    self._options = {k: tx.normalize_phrase(x) for k, x in v.items()}
                    break
        return self._options


@dataclass(slots=True)
class Group:
    """Sibling candidates from one container in one tool output."""

    candidates: list[Candidate] = field(default_factory=list)

    def owner(self, value_key: str) -> Candidate | None:
        for c in self.candidates:
            if value_key in c.ids:
                return c
        return None


class Utterance:
    """A caller or agent line, lower-cased; its letters-and-digits form, its numbers and what
    they count are built on demand, once."""

    __slots__ = ("role", "text", "_alnum", "_scan", "_counts")
    _alnum: str | None
    _scan: tx.NumberScan | None
    _counts: list[tuple[float, str, int]] | None

    def __init__(self, role: str, text: str) -> None:
        self.role = role  # "customer" or "agent"
        self.text = text
        self._alnum = self._scan = self._counts = None

    @property
    def alnum(self) -> str:
        if self._alnum is None:
            self._alnum = tx.alnum(self.text)
        return self._alnum

    @property
    def numbers(self) -> tx.NumberScan:
        """`tx.scan_numbers` of the line: each number's value and the two tokens after it."""
        if self._scan is None:
            self._scan = tx.scan_numbers(self.text)
        return self._scan

    @property
    def counts(self) -> list[tuple[float, str, int]]:
        """`tx.counted_pairs` of the line: (number, noun, which number)."""
        if self._counts is None:
            self._counts = tx.counted_pairs(self.numbers)
        return self._counts


class Dialogue:
    __slots__ = (
        "turn", "utterances", "callers", "caller_lines", "tool_outputs", "_last",
        "_caller_text", "_caller_alnum", "_tool_text", "_agent", "_caller_numbers", "__dict__",
    )  # fmt: skip
    # The views every turn uses are slots filled on first use; a `cached_property` (the rest)
    # costs a Python-level `__get__` and an instance dict on that first use.
    _caller_text: str | None
    _caller_alnum: str | None
    _tool_text: str | None
    _agent: Utterance | None
    _caller_numbers: set[float] | None

    def __init__(self, turn: Turn) -> None:
        """One pass over the history: every turn needs its caller lines and its last words."""
        self.turn = turn
        utterances: list[Utterance] = []
        callers: list[Utterance] = []
        tool_outputs: list[str] = []
        last: tuple[str, str] | None = None
        last_caller: str | None = None
        for m in turn.history:
            role = m.role
            text = m.text
            if role == "tool":
                tool_outputs.append(text)
            elif text and not text.isspace():
                u = Utterance(role, text.lower())
                utterances.append(u)
                last = role, text
                if role == "customer":
                    callers.append(u)
                    last_caller = text
            elif role == "customer":
                last, last_caller = (role, text), text
        # `customer_text` is the history's newest caller line when the history has it (the
        # eval case shape); otherwise it is a new line that comes after the history.
        wanted = turn.customer_text.strip().lower()
        if wanted and (last_caller is None or last_caller.strip().lower() != wanted):
            u = Utterance("customer", wanted)
            utterances.append(u)
            callers.append(u)
            last = "customer", turn.customer_text
        self.utterances = utterances
        """Caller and agent lines, oldest first, with the turn's own caller line last."""
        self.callers = callers
        self.caller_lines = [u.text for u in callers]
        self.tool_outputs = tool_outputs
        self._last = last
        # filled on first use (one chained store: this runs on every turn)
        self._caller_text = self._caller_alnum = self._tool_text = None
        self._agent = self._caller_numbers = None

    # -- messages ---------------------------------------------------------------------------

    @property
    def caller_text(self) -> str:
        if self._caller_text is None:
            self._caller_text = "\n".join(self.caller_lines)
        return self._caller_text

    @property
    def caller_alnum(self) -> str:
        if self._caller_alnum is None:
            self._caller_alnum = "|".join(u.alnum for u in self.callers)
        return self._caller_alnum

    @property
    def tool_text(self) -> str:
        if self._tool_text is None:
            self._tool_text = "\n".join(self.tool_outputs).lower()
        return self._tool_text

    @cached_property
    def _tool_lowers(self) -> list[str]:
        return [t.lower() for t in self.tool_outputs]

    @property
    def agent(self) -> Utterance:
        """The agent's planned words for this turn."""
        if self._agent is None:
            self._agent = Utterance("agent", self.turn.agent_text.lower())
        return self._agent

    def last_meaningful(self) -> tuple[str, str] | None:
        """(role, text) of the newest caller line or agent line with words (tool traffic
        skipped)."""
        return self._last

    # -- grounding --------------------------------------------------------------------------

    def said_by_caller(self, key: str) -> bool:
        return _contains_key(self.caller_alnum, self.caller_text, key)

    def returned_by_tool(self, value: str) -> bool:
        """Tools return ids verbatim (JSON), so a plain substring test of the value, without a
        leading '#', is exact and needs no normalized copy of every output."""
        needle = _needle(value)
        if len(needle) >= 5 and any(ch.isdigit() for ch in needle):
            return needle in self.tool_text
        return tx.contains_phrase(self.tool_text, needle)

    @property
    def caller_numbers(self) -> set[float]:
        if self._caller_numbers is None:
            self._caller_numbers = {v for u in self.callers for v, _, _ in u.numbers}
        return self._caller_numbers

    @cached_property
    def tool_numbers(self) -> set[float]:
        return tx.digit_numbers(self.tool_text)

    @cached_property
    def caller_dates(self) -> set[tuple[int | None, int, int]]:
        return tx.dates(self.caller_text)

    @cached_property
    def caller_emails(self) -> set[str]:
        return tx.emails(self.caller_text)

    # -- tool records -----------------------------------------------------------------------

    @cached_property
    def _groups_by_output(self) -> dict[int, list[Group]]:
        return {}

    def _groups_in(self, i: int) -> list[Group]:
        """Sibling groups of one tool output, parsed on first use (most are never needed)."""
        cached = self._groups_by_output.get(i)
        if cached is None:
            cached = []
            raw = self.tool_outputs[i]
            if raw.lstrip()[:1] in ("[", "{"):
                try:
                    _collect_groups(json.loads(raw), cached)
                except ValueError:
                    pass
            self._groups_by_output[i] = cached
        return cached

    def tool_outputs_holding(self, value: str) -> int:
        needle = _needle(value)
        return sum(1 for blob in self._tool_lowers if needle and needle in blob)

    def groups_of(self, value: str) -> Iterator[Group]:
        """Groups, oldest tool output first, that hold a candidate with this id."""
        value_key = id_key(value)
        needle = _needle(value)
        for i, blob in enumerate(self._tool_lowers):
            if needle and needle in blob:
                for g in self._groups_in(i):
                    if g.owner(value_key) is not None:
                        yield g


def caller_line_is_current(history: list[Message], text: str) -> bool:
    """Whether `history`'s newest caller line is `text` with no agent words after it (agent
    tool calls and tool output may follow: the agent acting on what the caller just said)."""
    wanted = text.strip().lower()
    for m in reversed(history):
        if isinstance(m, CustomerMessage):
            return m.text.strip().lower() == wanted
        if isinstance(m, AgentMessage) and m.text.strip():
            return False
    return False


def _needle(value: str) -> str:
    return value.strip().lower().lstrip("#")


def id_key(value: str) -> str:
    """The comparable form of an id-like value ('#W51-99' -> 'w5199')."""
    return tx.alnum(value)


def _contains_key(alnum_blob: str, text: str, key: str) -> bool:
    if not key:
        return True
    if len(key) >= 5 and any(ch.isdigit() for ch in key):
        return key in alnum_blob
    return tx.contains_phrase(text, key)


def _labels(record: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for k in LABEL_KEYS:
        v = record.get(k)
        if isinstance(v, str) and v.strip():
            out.append(tx.normalize_phrase(v.replace("_", " ")))
    return tuple(out)


_ID_SUFFIXES = ("_id", "_number")
_CONTAINERS = (list, dict)


def _record_ids(record: dict[str, Any]) -> set[str]:
    return {
        id_key(v)
        for k, v in record.items()
        if type(v) is str and (k == "id" or k.endswith(_ID_SUFFIXES))
    }


def _has_digit(s: str) -> bool:
    return any(map(str.isdigit, s))


def _collect_groups(doc: Any, out: list[Group]) -> None:
    """Find containers of sibling objects: lists of ids, lists of records, records keyed by id.
    Depth-first, parents before children: the order in which groups are consulted."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if type(node) is list:
            if len(node) >= 2:
                kinds = {type(x) for x in node}
                if kinds == {str}:
                    out.append(Group([Candidate(frozenset((id_key(x),)), ()) for x in node]))
                elif kinds == {dict}:
                    cands = [Candidate(frozenset(_record_ids(x)), _labels(x), x) for x in node]
                    if all(c.ids for c in cands):
                        out.append(Group(cands))
            children = [x for x in node if isinstance(x, _CONTAINERS)]
        elif type(node) is dict:
            values = node.values()
            if (
                len(node) >= 2
                and {type(v) for v in values} == {dict}
                and all(map(_has_digit, node))
            ):
                out.append(
                    Group(
                        [
                            Candidate(frozenset({id_key(k)} | _record_ids(v)), _labels(v), v)
                            for k, v in node.items()
                        ]
                    )
                )
            children = [v for v in values if isinstance(v, _CONTAINERS)]
        else:
            continue
        children.reverse()
        stack.extend(children)
