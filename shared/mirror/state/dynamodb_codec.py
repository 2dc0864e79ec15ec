"""DynamoDB state store: the attribute codecs and error-code sets its operations share.

Pure functions over DynamoDB's typed attribute maps (`{"S": ...}`, `{"N": ...}`); nothing here
talks to AWS or imports boto3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mirror.state.base import (
    TTL_ATTRIBUTE,
    MetaValue,
    RecordedToolCall,
    StateStoreError,
    is_live,
    number_from_str,
    scalar_from_attr,
)

Item = dict[str, Any]

CONDITION_FAILED = frozenset({"ConditionalCheckFailedException"})
TRANSACTION_CANCELED = frozenset({"TransactionCanceledException"})
RETRYABLE_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
"""Cancellation reasons that say "someone else was writing": re-read and try again."""


class Rejected(Exception):
    """An expected refusal (a failed condition), kept apart from real errors."""

    def __init__(self, code: str, response: Mapping[str, Any]) -> None:
        super().__init__(code)
        self.code = code
        self.response = response


def decode_meta(attr: Mapping[str, Any]) -> MetaValue:
    """A call-metadata attribute: scalars only."""
    try:
        return scalar_from_attr(attr)
    except ValueError:
        raise StateStoreError(
            f"unexpected DynamoDB attribute type {sorted(attr)} in call state"
        ) from None


def expires_at(item: Mapping[str, Any]) -> int | float | None:
    attr = item.get(TTL_ATTRIBUTE)
    return number_from_str(attr["N"]) if attr and "N" in attr else None


def live(item: Mapping[str, Any] | None, now: float) -> bool:
    return item is not None and is_live(expires_at(item), now)


def recorded_tool_call(item: Mapping[str, Any]) -> RecordedToolCall:
    return RecordedToolCall(
        tool_call_id=str(item["tool_call_id"]["S"]),
        name=str(item["name"]["S"]),
        recorded_at=float(number_from_str(item["recorded_at"]["N"])),
    )
