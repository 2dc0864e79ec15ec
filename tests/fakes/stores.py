"""An in-memory state store whose named operations fail, as an unreachable or throttled table's
do (a `StateStoreError` naming the operation, like the DynamoDB store's)."""

from __future__ import annotations

from typing import Any

from mirror.state import InMemoryStateStore, StateStoreError


class BrokenStore(InMemoryStateStore):
    """`failing` operations raise; `touched` counts the attempts at them."""

    def __init__(self, *failing: str, cause: str = "EndpointConnectionError") -> None:
        super().__init__()
        self.touched = 0
        for name in failing:
            setattr(self, name, self._failing(name, cause))

    def _failing(self, name: str, cause: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            self.touched += 1
            raise StateStoreError(f"state store {name} failed: {cause}")

        return fail
