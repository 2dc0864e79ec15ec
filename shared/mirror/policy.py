"""Operator policies: deterministic directives for Tier 0, prose for the LLM tiers.

A policy string that starts with `FORBID` or `REQUIRE` is a directive (grammar in the README,
"Policy directives"); anything else is prose. Directives are matched on word boundaries and
are negation-aware; no business rule lives in code.

    FORBID "free", "guaranteed"                      the agent never affirms these
    FORBID "upgrade" WHEN customer "basic economy"   ... only after the caller says the trigger
    REQUIRE "5 to 7 business days" WHEN customer "refund"
    REQUIRE "recorded line" WHEN agent "this call"   the agent's own words as the trigger
    ... SCORE 0.8                                     per-rule score (default 0.9 / 0.8)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

FORBID_SCORE = 0.9
REQUIRE_SCORE = 0.8


class PolicyError(ValueError):
    """A directive that does not parse. The message names the policy and what is wrong."""


@dataclass(frozen=True, slots=True)
class Rule:
    kind: Literal["forbid", "require"]
    phrases: tuple[str, ...]
    trigger_speaker: Literal["customer", "agent"] | None
    triggers: tuple[str, ...]
    score: float
    source: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{'|'.join(self.phrases)}"


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    rules: tuple[Rule, ...]
    prose: tuple[str, ...]
    scripted: frozenset[str] = frozenset()
    """Lines the prose quotes for the agent to say word for word ("Use: 'Hi and welcome…'"),
    in `script_form`."""

    def is_scripted(self, agent_text: str) -> bool:
        """The agent says exactly one of the operator's scripted lines."""
        return bool(self.scripted) and script_form(agent_text) in self.scripted


_SCRIPT_QUOTE = re.compile(r"""(?:^|(?<=[\s:(]))(?:'(.+?)'|"(.+?)"|“(.+?)”)(?=$|[\s.,;:)!?])""")
SCRIPT_MIN_WORDS = 5
"""A quoted passage this long is a line to say, not a term ("the 'basic' fare")."""


def script_form(text: str) -> str:
    """Lower-case words only: punctuation and spacing differ between a script and speech."""
    return " ".join(re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.lower().replace("’", "'")))


def scripted_lines(prose: tuple[str, ...] | list[str]) -> frozenset[str]:
    out = set()
    for policy in prose:
        for m in _SCRIPT_QUOTE.finditer(policy):
            line = script_form(next(g for g in m.groups() if g is not None))
            if line.count(" ") + 1 >= SCRIPT_MIN_WORDS:
                out.add(line)
    return frozenset(out)


_HEAD = re.compile(r"^\s*(FORBID|REQUIRE)\b\s*:?\s*", re.IGNORECASE)
_QUOTED = re.compile(r'\s*(?:,|\bor\b)?\s*"([^"]+)"', re.IGNORECASE)
_WHEN = re.compile(r"\s*WHEN\s+(customer|caller|agent)\b", re.IGNORECASE)
_SCORE = re.compile(r"\s*SCORE\s+(0(?:\.\d+)?|1(?:\.0+)?)\s*$", re.IGNORECASE)


def is_directive(policy: str) -> bool:
    return _HEAD.match(policy) is not None


def _phrases(text: str, pos: int, policy: str, what: str) -> tuple[tuple[str, ...], int]:
    found: list[str] = []
    while m := _QUOTED.match(text, pos):
        phrase = " ".join(m.group(1).lower().split())
        if not re.search(r"[a-z0-9]", phrase):
            raise PolicyError(f"{policy!r}: empty {what} phrase")
        found.append(phrase)
        pos = m.end()
    if not found:
        raise PolicyError(f'{policy!r}: expected one or more "quoted" {what} phrases')
    return tuple(found), pos


def parse_directive(policy: str) -> Rule:
    head = _HEAD.match(policy)
    if head is None:
        raise PolicyError(f"{policy!r}: not a FORBID/REQUIRE directive")
    forbid = head.group(1).upper() == "FORBID"
    kind: Literal["forbid", "require"] = "forbid" if forbid else "require"
    body = policy.rstrip()
    score = FORBID_SCORE if kind == "forbid" else REQUIRE_SCORE
    if sm := _SCORE.search(body):
        score = float(sm.group(1))
        body = body[: sm.start()]
    phrases, pos = _phrases(body, head.end(), policy, "rule")
    speaker: Literal["customer", "agent"] | None = None
    triggers: tuple[str, ...] = ()
    if wm := _WHEN.match(body, pos):
        speaker = "agent" if wm.group(1).lower() == "agent" else "customer"
        triggers, pos = _phrases(body, wm.end(), policy, "trigger")
    if body[pos:].strip():
        raise PolicyError(f"{policy!r}: cannot read {body[pos:].strip()!r}")
    if kind == "require" and speaker is None:
        raise PolicyError(f'{policy!r}: REQUIRE needs a WHEN customer|agent "trigger" scope')
    return Rule(kind, phrases, speaker, triggers, score, policy)


def compile_policies(policies: list[str] | tuple[str, ...]) -> CompiledPolicies:
    rules: list[Rule] = []
    prose: list[str] = []
    for i, policy in enumerate(policies):
        if is_directive(policy):
            try:
                rules.append(parse_directive(policy))
            except PolicyError as e:
                raise PolicyError(f"policies[{i}]: {e}") from None
        elif policy.strip():
            prose.append(policy.strip())
    return CompiledPolicies(tuple(rules), tuple(prose), scripted_lines(prose))
