"""DynamoDB state store: the one transaction that records a turn, and how to read its refusal.

A turn is recorded all or nothing: the META update guarded by the message counter we read, one
put per message, and the verdict put guarded by its absence (the turn id is the idempotency key).
Building the request and classifying a cancellation are pure; `DynamoDBStateStore.record_turn`
runs them in its retry loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mirror.state.base import (
    INTERNAL_META_FIELDS,
    META_SK,
    PK,
    SK,
    TTL_ATTRIBUTE,
    attr_n,
    attr_s,
    msg_sk,
    seq_advance,
)
from mirror.state.dynamodb_codec import RETRYABLE_REASONS, Item, live


def turn_transaction(
    table: str,
    pk: str,
    vsk: str,
    meta: Item | None,
    seq: int,
    encoded: list[str],
    verdict_json: str,
    now: float,
    expires_at: dict[str, str],
) -> list[dict[str, Any]]:
    """META update guarded by the counter value we read, the message puts, and the verdict
    put guarded by its absence: all or nothing."""
    names = {
        "#n": "next_seq",
        "#l": "last_turn_at",
        "#e": TTL_ATTRIBUTE,
        "#s": "started_at",
    }
    values: dict[str, Any] = {
        ":old": attr_n(seq),
        ":new": attr_n(seq + seq_advance(len(encoded))),
        ":now": attr_n(now),
        ":e": expires_at,
    }
    condition = "(attribute_not_exists(#n) OR #n = :old)"
    if meta is not None and not live(meta, now):
        # An expired META: the call starts afresh (stale fields go, the counter stays).
        keep = INTERNAL_META_FIELDS | {"started_at", "last_turn_at"}
        removes = {f"#r{i}": k for i, k in enumerate(k for k in meta if k not in keep)}
        names.update(removes)
        update = "SET #n = :new, #l = :now, #e = :e, #s = :now"
        if removes:
            update += " REMOVE " + ", ".join(removes)
        if TTL_ATTRIBUTE in meta:
            condition += " AND #e = :old_e"
            values[":old_e"] = meta[TTL_ATTRIBUTE]
    else:
        update = "SET #n = :new, #l = :now, #e = :e, #s = if_not_exists(#s, :now)"

    key = {PK: attr_s(pk), SK: attr_s(META_SK)}
    transact: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": table,
                "Key": key,
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
    ]
    transact += [
        {
            "Put": {
                "TableName": table,
                "Item": {
                    PK: attr_s(pk),
                    SK: attr_s(msg_sk(seq + i)),
                    "data": attr_s(data),
                    TTL_ATTRIBUTE: expires_at,
                },
            }
        }
        for i, data in enumerate(encoded)
    ]
    transact.append(
        {
            "Put": {
                "TableName": table,
                "Item": {
                    PK: attr_s(pk),
                    SK: attr_s(vsk),
                    "data": attr_s(verdict_json),
                    "seq": attr_n(seq),
                    "recorded_at": attr_n(now),
                    TTL_ATTRIBUTE: expires_at,
                },
                # An expired verdict no longer makes the turn a duplicate.
                "ConditionExpression": "attribute_not_exists(#sk) OR #e <= :now",
                "ExpressionAttributeNames": {"#sk": SK, "#e": TTL_ATTRIBUTE},
                "ExpressionAttributeValues": {":now": attr_n(now)},
            }
        }
    )
    return transact


def cancellation_outcome(reasons: Sequence[str]) -> Literal["recorded_before", "retry", "error"]:
    """What a cancelled turn transaction means, from its per-item reasons (META first, the
    verdict last): the turn was recorded before, a concurrent writer won the race (re-read and
    try again), or a real error."""
    if reasons and reasons[-1] == "ConditionalCheckFailed":
        return "recorded_before"  # the verdict exists
    known = {"None", "ConditionalCheckFailed", *RETRYABLE_REASONS}
    lost_race = bool(reasons) and (
        reasons[0] == "ConditionalCheckFailed" or any(r in RETRYABLE_REASONS for r in reasons)
    )
    if lost_race and set(reasons) <= known:
        return "retry"  # a concurrent writer moved next_seq
    return "error"
