"""The one AWS client factory: every boto3 client Mirror builds comes from `client()`.

One process-wide session (a session loads each service model once, so later clients cost
milliseconds instead of ~80 ms); every client gets connect/read timeouts and bounded
standard-mode retries (`attempts` counts the first try: botocore's `total_max_attempts`).
Importing this module does not import boto3.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

_LOCK = threading.Lock()
_SESSION: Any = None


def client(
    service: str,
    *,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 5.0,
    attempts: int = 3,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    max_pool_connections: int | None = None,
) -> Any:
    """A boto3 client of `service` with these timeouts and retries. `endpoint_url` None means
    boto3's own resolution (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`);
    `max_pool_connections` None means botocore's (10): a client used from more threads at
    once needs as many."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    global _SESSION
    with _LOCK:  # boto3 sessions are not thread-safe
        if _SESSION is None:
            import boto3

            _SESSION = boto3.session.Session()
        from botocore.config import Config

        # Only when given: an explicit None would replace botocore's default, not keep it.
        pool: dict[str, Any] = {}
        if max_pool_connections:
            pool["max_pool_connections"] = max_pool_connections
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": attempts},
            **pool,
        )
        return _SESSION.client(
            service, region_name=region_name, endpoint_url=endpoint_url, config=config
        )


def error_code(e: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None


class LazyClient:
    """Owns a boto3 client of `service`, built on first use with these timeouts unless the
    constructor was given one (`self._client`)."""

    service: ClassVar[str]
    connect_timeout_s: ClassVar[float] = 2.0
    read_timeout_s: ClassVar[float] = 5.0
    _client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client(
                self.service,
                connect_timeout_s=self.connect_timeout_s,
                read_timeout_s=self.read_timeout_s,
            )
        return self._client


class DynamoDBTable(LazyClient):
    """A DynamoDB table by name."""

    service = "dynamodb"
    connect_timeout_s = 1.0
    read_timeout_s = 3.0

    def __init__(self, table_name: str, *, client: Any | None = None) -> None:
        if not table_name:
            raise ValueError("table_name is required")
        self.table_name = table_name
        self._client = client
