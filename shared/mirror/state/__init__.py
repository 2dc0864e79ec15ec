"""Per-call state (history, verdicts, cooldown, operator override) behind one protocol.

`InMemoryStateStore` for tests and local runs, `DynamoDBStateStore` in AWS. Importing this
package does no I/O and does not import boto3.
"""

from __future__ import annotations

from mirror.state.base import (
    RecordedVerdict,
    StateStore,
    StateStoreConflictError,
    StateStoreError,
    call_key,
)
from mirror.state.dynamodb import DynamoDBStateStore
from mirror.state.memory import InMemoryStateStore

__all__ = [
    "DynamoDBStateStore",
    "InMemoryStateStore",
    "RecordedVerdict",
    "StateStore",
    "StateStoreConflictError",
    "StateStoreError",
    "call_key",
]
