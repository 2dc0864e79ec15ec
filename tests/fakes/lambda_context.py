"""The Lambda context object a handler is invoked with."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tests.conftest import TEST_REGION


@dataclass
class FakeContext:
    function_name: str = "mirror-score-turn-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""  # the function's ARN unless given
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 10_000

    def __post_init__(self) -> None:
        if not self.invoked_function_arn:
            self.invoked_function_arn = (
                f"arn:aws:lambda:{TEST_REGION}:123456789012:function:{self.function_name}"
            )

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
