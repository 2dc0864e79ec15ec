"""DynamoDB state store: the client plumbing under `DynamoDBStateStore`.

The boto3 client comes from `mirror.aws.client` on first use (short timeouts, bounded standard
retries), so importing this module imports neither boto3 nor botocore and tests can inject a
client. `_call` turns botocore errors into `StateStoreError` naming the store operation and
expected refusals into `Rejected`; the reads here are strongly consistent.
"""

from __future__ import annotations

import threading
from typing import Any

from mirror.state.base import PK, SK, StateStoreError, attr_s
from mirror.state.dynamodb_codec import Item, Rejected

_CLIENT_LOCK = threading.Lock()


class DynamoDBCallTable:
    """One DynamoDB table of call state and the client that reaches it."""

    def __init__(
        self,
        table_name: str,
        *,
        client: Any | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 2.0,
        max_attempts: int = 3,
        record_attempts: int = 5,
    ) -> None:
        """`client` is a boto3 DynamoDB client; without one, a client is built on first use
        with short timeouts and bounded retries (a voice turn cannot wait on a slow store)."""
        if not table_name:
            raise ValueError("table_name is required")
        if record_attempts < 1:
            raise ValueError("record_attempts must be >= 1")
        self._table = table_name
        self._client = client
        self._region_name = region_name
        self._endpoint_url = endpoint_url
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_attempts = max_attempts
        self._record_attempts = record_attempts

    @property
    def table_name(self) -> str:
        return self._table

    def connect(self) -> None:
        """Build the client now rather than on the first call (for measuring cold starts)."""
        self._get_client()

    @property
    def client(self) -> Any:
        """The boto3 client (built on first use), for other users of the same table, such as
        Powertools Idempotency: one connection pool, one set of timeouts and retries."""
        return self._get_client()

    def _get_client(self) -> Any:
        if self._client is None:
            with _CLIENT_LOCK:  # one client per store even when threads race to build it
                if self._client is None:
                    from mirror.aws import client

                    self._client = client(
                        "dynamodb",
                        connect_timeout_s=self._connect_timeout_s,
                        read_timeout_s=self._read_timeout_s,
                        # botocore's total_max_attempts: counts the first try (its
                        # `max_attempts` counts only retries: 3 would mean 4 requests).
                        attempts=self._max_attempts,
                        region_name=self._region_name,
                        endpoint_url=self._endpoint_url,
                    )
        return self._client

    def _call(
        self,
        operation: str,
        method: str,
        /,
        *,
        tolerate: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Run one API call; expected refusals raise `Rejected`, anything else StateStoreError
        naming the store operation (botocore has already retried what was retryable)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if method != "transact_write_items":  # a transaction names the table per item
            kwargs["TableName"] = self._table
        where = f"state store {operation} failed ({method} on table {self._table!r})"
        try:
            response: dict[str, Any] = getattr(self._get_client(), method)(**kwargs)
            return response
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            if code in tolerate:
                raise Rejected(code, e.response) from e
            raise StateStoreError(f"{where}: {code}: {error.get('Message', '')}") from e
        except BotoCoreError as e:
            raise StateStoreError(f"{where}: {e}") from e

    @staticmethod
    def _key(pk: str, sk: str) -> dict[str, dict[str, str]]:
        return {PK: attr_s(pk), SK: attr_s(sk)}

    def _get(self, operation: str, pk: str, sk: str) -> Item | None:
        response = self._call(operation, "get_item", Key=self._key(pk, sk), ConsistentRead=True)
        return response.get("Item")

    def _query_page(
        self,
        operation: str,
        pk: str,
        prefix: str,
        newest_first: bool,
        limit: int | None,
        start: dict[str, Any] | None,
    ) -> tuple[list[Item], dict[str, Any] | None]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {":pk": attr_s(pk), ":prefix": attr_s(prefix)},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        if limit is not None:
            kwargs["Limit"] = limit
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        response = self._call(operation, "query", **kwargs)
        return response.get("Items", []), response.get("LastEvaluatedKey")
