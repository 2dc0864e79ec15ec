"""The one stand-in for a Lambda context: what the handlers and Powertools read from it.

Used wherever a handler runs outside Lambda: the bridge's in-process transport, the demo, the
post-call side on moto, and the tests (`tests/fakes/lambda_context.py`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class LambdaContext:
    """`get_remaining_time_in_millis` counts down to `deadline` (a `time.monotonic()` value)
    when one is given, else is always `remaining_ms`. `invoked_function_arn` defaults to the
    function's ARN in `REGION` and `ACCOUNT`."""

    function_name: str = "mirror-local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    deadline: float | None = None
    remaining_ms: int = 10_000
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        if not self.invoked_function_arn:
            self.invoked_function_arn = (
                f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"
            )

    def get_remaining_time_in_millis(self) -> int:
        if self.deadline is None:
            return self.remaining_ms
        return max(0, int((self.deadline - time.monotonic()) * 1000))
