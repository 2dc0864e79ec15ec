"""Per-call state (history, verdicts, cooldown, operator override, allowed irreversible tool
calls) behind one protocol.

`InMemoryStateStore` for tests and local runs, `DynamoDBStateStore` in AWS. Importing this
package does no I/O and does not import boto3.
"""

from __future__ import annotations

from mirror.state.base import (
    RecordedToolCall,
    RecordedVerdict,
    StateStore,
    StateStoreConflictError,
    StateStoreError,
    call_key,
    tool_fingerprint,
)
from mirror.state.dynamodb import DynamoDBStateStore
from mirror.state.memory import InMemoryStateStore

__all__ = [
    "DynamoDBStateStore",
    "InMemoryStateStore",
    "RecordedToolCall",
    "RecordedVerdict",
    "StateStore",
    "StateStoreConflictError",
    "StateStoreError",
    "call_key",
    "tool_fingerprint",
]
