"""boto3 clients for the reports and the fix workflow: built on first use, with timeouts.

One process-wide session (a session loads each service model once, so later clients are cheap);
every client gets short connect/read timeouts and bounded standard-mode retries. Importing this
module does not import boto3.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()
_SESSION: Any = None


def client(
    service: str,
    *,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 5.0,
    attempts: int = 3,
    region_name: str | None = None,
) -> Any:
    global _SESSION
    with _LOCK:  # boto3 sessions are not thread-safe
        if _SESSION is None:
            import boto3

            _SESSION = boto3.session.Session()
        from botocore.config import Config

        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": attempts},
        )
        return _SESSION.client(service, region_name=region_name, config=config)


def error_code(e: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None
