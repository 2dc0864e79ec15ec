"""Failure patterns: the stable names a report gives to what went wrong in a call.

A pattern id is derived from a verdict reason's check id and reason code only (never from the
evidence text), so the same mistake in two calls gets the same id and can be counted across
calls. The catalogue below names the patterns the judge's checks produce today and carries,
for each, the deterministic text of a report entry: what went wrong, the root-cause hypothesis
in the agent's prompt or tools, and the minimal prompt change to propose. A (check, code) pair
the catalogue does not know gets a generic entry under `"{check}__{code}"` (sanitised), which is
still stable across calls.

Reasons that say something about Mirror rather than the agent (`clean`, `tier_unavailable`:
a remote tier or the gate itself could not decide) are never failures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOT_FAILURES = frozenset({"clean", "tier_unavailable"})
"""Reason codes that are not the agent's failure."""
NOT_FAILURE_CHECKS = frozenset({"tier_failure", "gate_failure"})

PATTERN_ID_RE = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One failure pattern and the deterministic text of its report entry."""

    id: str
    title: str
    what_went_wrong: str
    root_cause: str
    prompt_change: str


def _p(id: str, title: str, what: str, cause: str, change: str) -> Pattern:
    return Pattern(id, title, what, cause, change)


CATALOGUE: dict[str, Pattern] = {
    p.id: p
    for p in (
        _p(
            "retracted_value_used",
            "A value the caller took back was used",
            "The agent used a value (size, amount, item) the caller had corrected or withdrawn.",
            "The prompt does not tell the agent that the caller's latest correction replaces "
            "earlier values; the agent fills tool arguments from the first mention.",
            'When the caller corrects or withdraws something they said ("actually", "make it", '
            '"not X", "I said"), use only the corrected value from then on, in speech and in '
            "every tool argument, and read the corrected details back before acting.",
        ),
        _p(
            "unconfirmed_irreversible",
            "An irreversible action without the caller's confirmation",
            "The agent called a tool that changes state before the caller confirmed the details "
            "it read back.",
            "The prompt does not require an explicit read-back and a yes before irreversible "
            "tools (orders, bookings, payments, cancellations).",
            "Before any action that cannot be undone (placing an order, booking, paying, "
            "cancelling, refunding), read every detail back to the caller and wait for an "
            "explicit yes; if the caller changes anything, read the new details back again.",
        ),
        _p(
            "ungrounded_tool_argument",
            "A tool argument the caller never gave",
            "A tool call carried a value (id, date, email, amount) that the caller never said "
            "and no tool returned.",
            "The agent guesses or invents missing arguments instead of asking; the tool "
            "descriptions do not say where each argument must come from.",
            "Never invent or guess a value for a tool argument: use only what the caller said "
            "or a tool returned, and ask the caller for anything missing.",
        ),
        _p(
            "amount_mismatch",
            "An amount that contradicts the conversation",
            "The agent stated or used a number, quantity or amount that differs from what the "
            "caller or a tool said.",
            "The prompt does not ask the agent to carry amounts and quantities verbatim from the "
            "caller or the tool results.",
            "Repeat quantities, prices and amounts exactly as the caller or a tool result gave "
            "them; never round, recompute or substitute them.",
        ),
        _p(
            "wrong_object",
            "An action on the wrong object",
            "The agent acted on a different order, booking or item than the one the caller named.",
            "The prompt does not tell the agent to match the caller's words to one object by "
            "its id before acting when several are on file.",
            "When the caller has several orders, bookings or items, confirm which one they mean "
            "by reading back its id and main details before acting on it.",
        ),
        _p(
            "other_customer_object",
            "An object that belongs to another customer",
            "The agent used an id that belongs to someone other than the verified caller.",
            "The prompt does not restrict the agent to the verified caller's own records.",
            "Only act on records that belong to the verified caller; if an id the caller gives "
            "is not theirs, say so and do not use it.",
        ),
        _p(
            "wrong_variant",
            "The wrong option or variant",
            "The agent chose a size, colour, option or variant other than the one the caller "
            "asked for.",
            "The prompt does not ask the agent to copy the caller's chosen options into the "
            "tool call and the read-back.",
            "Use exactly the options the caller chose (size, colour, variant, extras) in the "
            "read-back and in the tool call; if unsure, ask.",
        ),
        _p(
            "wrong_payment_method",
            "The wrong payment method",
            "The agent charged or planned a payment method the caller did not choose.",
            "The prompt does not require the caller's explicit choice of payment method.",
            "Use only the payment method the caller chose for this purchase; if they did not "
            "choose one, ask before charging.",
        ),
        _p(
            "extra_item",
            "An item the caller did not ask for",
            "A tool call included an item the caller never asked for.",
            "The agent carries items over from examples, suggestions or earlier turns.",
            "Include only the items the caller asked for in this order; an item you suggested "
            "goes in only after the caller accepts it.",
        ),
        _p(
            "missing_item",
            "An item the caller asked for is missing",
            "A tool call left out an item the caller asked for.",
            "The agent does not rebuild the full list from the conversation before acting.",
            "Before acting, list every item the caller asked for, read the full list back, and "
            "include all of them in the tool call.",
        ),
        _p(
            "policy_violation",
            "An operator policy was broken",
            "The agent said or did something an operator policy forbids, or skipped something a "
            "policy requires.",
            "The policy is not stated in the agent's prompt, or not where the agent applies it.",
            "State the operator's policies in the prompt as explicit rules the agent must "
            "follow in every reply and before every tool call.",
        ),
        _p(
            "duplicate_irreversible_call",
            "The same irreversible action twice",
            "The agent repeated an irreversible tool call (same tool, same arguments) that had "
            "already been done in this call.",
            "The agent does not check the results of its earlier tool calls before acting again.",
            "Before repeating an action that cannot be undone, check whether it already "
            "succeeded in this call; repeat it only if the earlier attempt failed.",
        ),
    )
}

_BY_CHECK_CODE: dict[tuple[str, str], str] = {
    ("retraction", "wrong_amount"): "retracted_value_used",
    ("retraction", "wrong_variant"): "retracted_value_used",
    ("confirmation", "no_confirmation_yet"): "unconfirmed_irreversible",
    ("grounding", "ungrounded_value"): "ungrounded_tool_argument",
    ("grounding", "wrong_amount"): "ungrounded_tool_argument",
    ("amount_consistency", "wrong_amount"): "amount_mismatch",
    ("duplicate_call", "duplicate_call"): "duplicate_irreversible_call",
}
"""Pairs whose meaning depends on the check; otherwise the reason code alone decides."""

_BY_CODE: dict[str, str] = {
    "no_confirmation_yet": "unconfirmed_irreversible",
    "ungrounded_value": "ungrounded_tool_argument",
    "wrong_amount": "amount_mismatch",
    "wrong_object": "wrong_object",
    "other_user": "other_customer_object",
    "wrong_variant": "wrong_variant",
    "wrong_payment_method": "wrong_payment_method",
    "extra_item": "extra_item",
    "missing_item": "missing_item",
    "not_allowed_by_policy": "policy_violation",
    "duplicate_call": "duplicate_irreversible_call",
}


def is_failure(check: str, code: str) -> bool:
    return code not in NOT_FAILURES and check not in NOT_FAILURE_CHECKS


def pattern_id(check: str, code: str) -> str:
    """The stable pattern id of a (check, reason code) pair."""
    known = _BY_CHECK_CODE.get((check, code)) or _BY_CODE.get(code)
    if known is not None:
        return known
    raw = re.sub(r"[^a-z0-9]+", "_", f"{check}__{code}".lower()).strip("_")
    return raw[:64] or "unknown"


def pattern(pattern_id: str) -> Pattern:
    """The catalogue entry, or a generic one for a pattern the catalogue does not name."""
    known = CATALOGUE.get(pattern_id)
    if known is not None:
        return known
    return Pattern(
        id=pattern_id,
        title=f"Judge finding {pattern_id}",
        what_went_wrong=f"Mirror's judge flagged the agent's turn ({pattern_id}).",
        root_cause="Not in Mirror's catalogue: read the evidence turns to find the cause.",
        prompt_change=(
            "Add an explicit rule to the prompt that prevents the behaviour shown in the "
            "evidence turns."
        ),
    )
