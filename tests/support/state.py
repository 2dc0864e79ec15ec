"""The two state stores the contract tests run on: `@pytest.fixture(params=STORE_KINDS)` and
`store_of(request)` in its body."""

from __future__ import annotations

import pytest

from mirror.state import DynamoDBStateStore, InMemoryStateStore, StateStore

STORE_KINDS = ("memory", "dynamodb")


def store_of(request: pytest.FixtureRequest, *, moto_client: bool = False) -> StateStore:
    """The in-memory store, or the DynamoDB one on the moto call table: with its own client,
    built lazily inside mock_aws, unless `moto_client` (then the `dynamodb_client` fixture's)."""
    if request.param == "memory":
        return InMemoryStateStore()
    table = request.getfixturevalue("call_state_table")
    client = request.getfixturevalue("dynamodb_client") if moto_client else None
    return DynamoDBStateStore(table, client=client)
