"""Object identity: an irreversible call must act on the object the conversation last named.

Tool outputs list sibling objects (a caller's orders, an order's items, a caller's payment
methods). When the newest caller or agent line that names any of those siblings names others
but not the one in the call, the call targets the wrong object. For list arguments, an element
the conversation never named is extra, and a named sibling left out is missing. Only exact
evidence counts: ids, and labels (product names, payment sources) that tell siblings apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mirror.judge import text as tx
from mirror.judge.base import CheckInput, Finding, classify, key_words
from mirror.judge.dialogue import Candidate, Dialogue, Group, Utterance, id_key
from mirror.models import ReasonCode


class ObjectIdentity:
    id = "object_identity"
    default_score = 0.9

    def run(self, inp: CheckInput) -> list[Finding]:
        found: list[Finding] = []
        if not inp.irreversible or not inp.dialogue.tool_outputs:
            return found  # siblings come from tool outputs only
        score = inp.config.check_score(self.id, self.default_score)
        for call in inp.irreversible:
            targets = list(_target_args(call.args))
            call_keys = {id_key(v) for _, values, _ in targets for v in values}
            for key, values, is_list in targets:
                finding = _judge(inp.dialogue, key, values, is_list, call_keys)
                if finding is not None:
                    code, evidence = finding
                    found.append(
                        Finding(self.id, code, score, f"{call.name}.{key}: {evidence}", call.id)
                    )
        return found


def _target_args(args: dict[str, Any]) -> Iterator[tuple[str, list[str], bool]]:
    """Top-level id arguments and lists of ids: the objects a call acts on."""
    for key, value in args.items():
        if isinstance(value, str) and classify(key, value) == "id":
            yield key, [value], False
        elif (
            isinstance(value, list)
            and value
            and all(isinstance(v, str) and classify(key, v) == "id" for v in value)
        ):
            yield key, value, True


def _judge(
    d: Dialogue, key: str, values: list[str], is_list: bool, call_keys: set[str]
) -> tuple[ReasonCode, str] | None:
    keys = [id_key(v) for v in values]
    payment = "payment" in key_words(key)
    for group in d.groups_of(values[0]):
        chosen = [c for k in keys if (c := group.owner(k)) is not None]
        if len(chosen) != len(keys):
            continue
        names = _distinctive_names(group)
        # How to pay is the caller's choice: the agent's offers of methods are not evidence.
        focus = _focus(d, group, names, caller_only=payment)
        if focus is None:
            continue
        # Siblings the call names in its other arguments (the new item of an exchange) are
        # explained by the call, not evidence against it.
        in_call = {id(c) for c in group.candidates if c.ids & call_keys} - {id(c) for c in chosen}
        # A shared label still names a class: "a gift card" rules out the certificate.
        named = [
            c
            for c in group.candidates
            if id(c) not in in_call and _mentions(focus, (*names[id(c)], *c.labels))
        ]
        if not named:
            continue
        chosen_ids = {id(c) for c in chosen}
        named_ids = {id(c) for c in named}
        if not chosen_ids & named_ids:
            return _code(key, "wrong_object"), (
                f"the conversation last named {_show(named, names)}, "
                f"the call acts on {_show(chosen, names)}"
            )
        if not is_list:
            return None
        # An element is extra only if it could have been named: a caller names products, not
        # their ten-digit ids, so a sibling without a distinctive label proves nothing.
        extra = [c for c in chosen if id(c) not in named_ids and set(names[id(c)]) & set(c.labels)]
        if extra:
            return "extra_item", f"{_show(extra, names)} was never asked for"
        # Missing only what is named distinctively, in the focus and by the caller: agents list
        # every item before reading back the chosen ones.
        caller = [Utterance("customer", line) for line in d.caller_lines]
        missing = [
            c
            for c in named
            if id(c) not in chosen_ids
            and _mentions(focus, names[id(c)])
            and any(_mentions(u, names[id(c)]) for u in caller)
        ]
        if missing:
            return "missing_item", f"{_show(missing, names)} was asked for but is not in the call"
        return None
    return None


def _code(key: str, default: ReasonCode) -> ReasonCode:
    return "wrong_payment_method" if "payment" in key_words(key) else default


def _distinctive_names(group: Group) -> dict[int, tuple[str, ...]]:
    """Per candidate: the ids and labels no sibling shares."""
    counts: dict[str, int] = {}
    for c in group.candidates:
        for n in {*c.ids, *c.labels}:
            counts[n] = counts.get(n, 0) + 1
    return {
        id(c): tuple(n for n in {*c.ids, *c.labels} if counts[n] == 1 and len(n) >= 3)
        for c in group.candidates
    }


def _focus(
    d: Dialogue, group: Group, names: dict[int, tuple[str, ...]], *, caller_only: bool
) -> Utterance | None:
    """The newest caller (or agent) line that names any of the siblings."""
    all_names = tuple(n for c in group.candidates for n in (*names[id(c)], *c.labels))
    for u in reversed(d.utterances):
        if caller_only and u.role != "customer":
            continue
        if _mentions(u, all_names):
            return u
    return None


def _mentions(u: Utterance, names: tuple[str, ...]) -> bool:
    """Whether the line names any of `names`: long ids by their letters and digits (callers
    say "W 51 99"), everything else as words."""
    for n in names:
        if _is_spelled_id(n):
            if n in u.alnum:
                return True
        elif tx.has_words(u.text, n, plural=True):
            return True
    return False


def _is_spelled_id(name: str) -> bool:
    return len(name) >= 5 and name.isalnum() and not name.isalpha()


def _show(cands: list[Candidate], names: dict[int, tuple[str, ...]]) -> str:
    shown = [sorted(names[id(c)] or c.ids, key=len)[-1] for c in cands]
    return ", ".join(shown) or "nothing"
