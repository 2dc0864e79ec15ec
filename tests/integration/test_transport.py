"""Function transports: the Lambda one never blocks the loop and bounds its pool; the
in-process one runs the real ScoreTurn handler against moto DynamoDB."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mirror.models import CallContext
from mirror.state import DynamoDBStateStore
from mirror_bridge.transport import FunctionError, LambdaTransport, loop_inbox
from mirror_dev.in_process import InProcessTransport
from tests.conftest import run
from tests.support.handlers import set_handler_env

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = {"score_turn": "fn-score", "gate_tool": "fn-gate", "generate_correction": "fn-corr"}


class SlowLambda:
    """A blocking boto3-like client: sleeps, records concurrency and what it was asked."""

    def __init__(self, delay_s: float, answer: Any = None, function_error: str | None = None):
        self.delay_s = delay_s
        self.answer = {"decision": "allow"} if answer is None else answer
        self.function_error = function_error
        self.active = 0
        self.max_active = 0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.requests.append(kwargs)
        try:
            time.sleep(self.delay_s)
        finally:
            with self._lock:
                self.active -= 1
        response: dict[str, Any] = {
            "StatusCode": 200,
            "Payload": io.BytesIO(json.dumps(self.answer).encode()),
        }
        if self.function_error:
            response["FunctionError"] = self.function_error
        return response


def test_lambda_invoke_never_blocks_the_loop_and_the_pool_is_bounded() -> None:
    client = SlowLambda(0.1)
    transport = LambdaTransport(NAMES, client=client, max_workers=2)

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick = asyncio.create_task(ticker())
        answers = await asyncio.gather(
            *(transport.invoke("score_turn", {"n": n}, 2.0) for n in range(6))
        )
        tick.cancel()
        assert answers == [{"decision": "allow"}] * 6
        return ticks

    t0 = time.monotonic()
    ticks = run(scenario())
    elapsed = time.monotonic() - t0
    assert client.max_active == 2  # bounded: 6 calls, 2 at a time
    assert elapsed >= 0.3  # three waves of 0.1 s
    assert ticks >= 30  # the loop kept ticking (5 ms) the whole time
    request = client.requests[0]
    assert request["FunctionName"] == "fn-score"
    assert request["InvocationType"] == "RequestResponse"
    assert json.loads(request["Payload"]) in [{"n": n} for n in range(6)]
    transport.shutdown()


def test_a_lambda_answer_waits_in_the_loops_inbox_for_the_next_frame() -> None:
    transport = LambdaTransport(NAMES, client=SlowLambda(0.01), max_workers=1)

    async def scenario() -> None:
        call = asyncio.ensure_future(transport.invoke("score_turn", {"n": 1}, 2.0))
        await asyncio.sleep(0)  # submitted
        time.sleep(0.2)  # the loop busy with audio: the answer arrives meanwhile
        inbox = loop_inbox()
        assert len(inbox.pending) == 1 and not call.done()
        inbox.drain()  # what the relay's next frame handler does
        assert await call == {"decision": "allow"}

    run(scenario())
    transport.shutdown()


@pytest.mark.parametrize(
    ("client", "timeout_s", "kind"),
    [
        (SlowLambda(0.5), 0.05, "timeout"),
        (SlowLambda(0.0, function_error="Unhandled"), 1.0, "function_error"),
        (SlowLambda(0.0, answer={"error": {"type": "state_unavailable"}}), 1.0, "error_response"),
        (SlowLambda(0.0, answer=[1, 2]), 1.0, "invalid_response"),
    ],
)
def test_lambda_failures_raise_function_error(
    client: SlowLambda, timeout_s: float, kind: str
) -> None:
    transport = LambdaTransport(NAMES, client=client, max_workers=1)
    t0 = time.monotonic()
    with pytest.raises(FunctionError) as info:
        run(transport.invoke("gate_tool", {}, timeout_s))
    assert info.value.kind == kind and info.value.name == "gate_tool"
    assert time.monotonic() - t0 < 0.4  # a timeout does not wait for the slow thread
    transport.shutdown()


def test_in_process_handlers_are_serialized_per_container_and_time_out() -> None:
    seen: list[int] = []
    lock = threading.Lock()
    active = 0

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal active
        with lock:
            active += 1
            seen.append(active)
        time.sleep(0.02 if event["n"] else 0.3)
        with lock:
            active -= 1
        assert context.get_remaining_time_in_millis() >= 0
        return {"n": event["n"]}

    transport = InProcessTransport({"score_turn": handler})  # one container

    async def scenario() -> None:
        with pytest.raises(FunctionError) as info:
            await transport.invoke("score_turn", {"n": 0}, 0.05)
        assert info.value.kind == "timeout"
        # the container is still busy with the timed-out call: the next one waits for it
        assert await transport.invoke("score_turn", {"n": 1}, 2.0) == {"n": 1}

    run(scenario())
    assert max(seen) == 1
    transport.shutdown()


@pytest.fixture
def handler_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_handler_env(monkeypatch, call_state_table, "mirror-bridge-transport-test")


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_in_process_transport_runs_the_real_score_turn_against_moto(
    handler_env: str, dynamodb_client: Any
) -> None:
    event = json.loads((REPO_ROOT / "events" / "score_turn_block.json").read_text())
    event["turn_id"] = "turn-1"
    transport = InProcessTransport(containers=1)
    verdict = run(transport.invoke("score_turn", event, 30.0))
    assert verdict["decision"] == "block" and verdict["blocked_tool_call_ids"]
    store = DynamoDBStateStore(handler_env, client=dynamodb_client)
    ctx = CallContext(call_id=event["call_id"], tenant_id=event.get("tenant_id") or "default")
    stored = store.get_verdict(ctx, "turn-1", time.time())
    assert stored is not None and stored.decision == "block"
    bad = run(_invoke_expecting_error(transport))
    assert bad.kind == "error_response" and bad.detail == "invalid_event"
    transport.shutdown()


async def _invoke_expecting_error(transport: InProcessTransport) -> FunctionError:
    try:
        await transport.invoke("score_turn", {"customer_text": 5}, 10.0)
    except FunctionError as e:
        return e
    raise AssertionError("an invalid event must raise")
