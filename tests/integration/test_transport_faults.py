"""LambdaTransport under faults the network makes: every one is a `FunctionError` (issue 13,
item 4), so the session's failure rules apply (a tool gate holds irreversible calls)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from mirror_bridge.transport import FunctionError, LambdaTransport
from tests.conftest import run

pytestmark = pytest.mark.integration

NAMES = {"score_turn": "fn-score", "gate_tool": "fn-gate", "generate_correction": "fn-corr"}


class BrokenBody(io.BytesIO):
    """A `StreamingBody` whose read fails mid-answer (a reset connection, a read timeout)."""

    def read(self, *args: Any) -> bytes:
        raise ConnectionResetError("connection reset while reading the response body")


class Client:
    def __init__(self, body: io.BytesIO) -> None:
        self.body = body

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        return {"StatusCode": 200, "Payload": self.body}


def test_a_response_body_read_error_is_a_transport_function_error() -> None:
    transport = LambdaTransport(NAMES, client=Client(BrokenBody()), max_workers=1)
    with pytest.raises(FunctionError) as info:
        run(transport.invoke("gate_tool", {}, 1.0))
    assert info.value.kind == "transport" and info.value.name == "gate_tool"
    assert "ConnectionResetError" in info.value.detail
    transport.shutdown()


def test_a_readable_body_is_still_the_answer() -> None:
    """The allow twin: a body that reads is returned as it was."""
    body = io.BytesIO(json.dumps({"decision": "allow"}).encode())
    transport = LambdaTransport(NAMES, client=Client(body), max_workers=1)
    assert run(transport.invoke("gate_tool", {}, 1.0)) == {"decision": "allow"}
    transport.shutdown()
