"""The tool gate's idempotency: Powertools Idempotency records in the call table.

Each irreversible call's decision is stored under (tenant, call id, tool call id), so a retried
request gets the stored decision. Powertools is imported only when a layer is built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mirror.state.base import PK, SK, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer

IDEMPOTENCY_PK = "@idempotency#gate_tool"
"""The partition of the gate's idempotency records in the call table. '@' cannot start a tenant
id, so no call's partition (`{tenant}#{call}`) can ever be this one."""
IDEMPOTENCY_KEY_PREFIX = "gate_tool"
IDEMPOTENCY_TTL_S = 24 * 3600
"""How long a decision is replayed for a retried tool call id (a call lasts minutes)."""
IN_PROGRESS_BUDGET_S = 10.0
"""Without a Lambda context: how long a delivery being decided blocks a concurrent one."""


@dataclass
class _Deadline:
    """A stand-in Lambda context: how long an in-progress record blocks a concurrent delivery."""

    end: float

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.end - time.monotonic()) * 1000))


def idempotency_layer(table_name: str, client: Any) -> BasePersistenceLayer:
    """Powertools Idempotency records in the call table: partition `IDEMPOTENCY_PK`, the hashed
    key as the sort key, expiry in the table's TTL attribute. `client` is the state store's."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(
        table_name=table_name,
        key_attr=PK,
        sort_key_attr=SK,
        static_pk_value=IDEMPOTENCY_PK,
        expiry_attr=TTL_ATTRIBUTE,
        in_progress_expiry_attr="in_progress_expires_at_ms",
        boto3_client=client,
    )
