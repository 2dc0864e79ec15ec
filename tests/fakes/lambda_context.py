"""The Lambda context object a handler is invoked with: the development package's one stand-in
(`mirror_dev.lambda_context.LambdaContext`), named for the tests' handler."""

from __future__ import annotations

from dataclasses import dataclass

from mirror_dev.lambda_context import LambdaContext


@dataclass
class FakeContext(LambdaContext):
    function_name: str = "mirror-score-turn-test"
