"""The bridge's JSON log lines (`mirror_bridge.logs`) and EMF documents (`mirror_bridge.metrics`)
in-process: which call a line names, what is redacted, the error fields, and the process
document's values. The image-level check (uvicorn CLI, stdout) is tests/e2e/test_bridge_logs.py;
a whole call's documents, tests/integration/test_bridge_metrics.py."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import Any

import pytest

from mirror_bridge import logs, metrics
from mirror_bridge.metrics import BridgeMetrics, percentile
from mirror_bridge.tasks import spawn

pytestmark = pytest.mark.unit

FORMATTER = logs.JsonFormatter()


def record(msg: str, *args: Any, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("mirror_bridge.relay", level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def line(rec: logging.LogRecord) -> dict[str, Any]:
    out = FORMATTER.format(rec)
    assert "\n" not in out  # one object per line, whatever the message holds
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def test_a_line_has_the_fields_and_names_the_call_from_extra() -> None:
    # the binding lives in the calling context: a fresh one, so no other test sees it
    doc = contextvars.Context().run(
        lambda: (
            logs.bind_call("call-x", "stream-x", "tenant-x"),
            line(record("CallEnded not emitted", call_id="call-x", error="TimeoutError: slow")),
        )[1]
    )
    assert doc["level"] == "INFO" and doc["logger"] == "mirror_bridge.relay"
    assert doc["message"] == "CallEnded not emitted" and doc["time"].endswith("Z")
    fields = (doc["call_id"], doc["stream_id"], doc["tenant_id"])
    assert fields == ("call-x", "stream-x", "tenant-x")
    assert doc["error"] == "TimeoutError: slow"


def test_a_line_without_a_call_has_no_call_fields() -> None:
    async def main() -> dict[str, Any]:
        return line(record("start-up"))  # a task not named for a call, nothing bound

    doc = asyncio.run(main())
    assert not {"call_id", "stream_id", "tenant_id"} & doc.keys()


def test_the_call_comes_from_the_binding_and_from_the_task_name() -> None:
    async def bound() -> tuple[dict[str, Any], dict[str, Any]]:
        logs.bind_call("call-b", "stream-b", "acme")
        here = line(record("in the relay task"))

        async def child() -> dict[str, Any]:  # a task the call starts inherits the binding
            return line(record("in a call task"))

        return here, await asyncio.create_task(child())

    async def named() -> dict[str, Any]:
        logs.bind_call("call-n", "stream-n", "globex")

        async def job() -> dict[str, Any]:
            return line(record("push-path handler"))

        # a fresh context (a push-path callback's): only the task's name says the call
        task = spawn(job(), name="call-n::plivo-handler")
        return await task

    here, child = asyncio.run(bound())
    assert here["call_id"] == child["call_id"] == "call-b"
    assert child["tenant_id"] == "acme" and child["stream_id"] == "stream-b"
    doc = contextvars.Context().run(asyncio.run, named())
    assert (doc["call_id"], doc["tenant_id"]) == ("call-n", "globex")


def test_caller_pii_is_redacted_in_message_error_and_traceback() -> None:
    try:
        raise ValueError("card 4111 1111 1111 1111 for +1 415 555 0123")
    except ValueError:
        rec = record(
            "no tenant config for number %s (%s)", "14155550123", "jane@example.com",
            level=logging.WARNING, exc_info=True,
        )  # fmt: skip
        rec.exc_info = __import__("sys").exc_info()
    doc = line(rec)
    text = json.dumps(doc)
    for secret in ("14155550123", "4155550123", "jane@example.com", "4111", "555 0123"):
        assert secret not in text, secret
    assert doc["message"] == "no tenant config for number [phone] ([email])"
    assert doc["error"].startswith("ValueError: card [card]")
    assert "Traceback" in doc["traceback"]


def test_identifiers_are_not_taken_for_phone_numbers() -> None:
    """The allow twin: a call's UUID and small numbers stay readable."""
    call = "84ab3050-1f95-40c4-8d69-9d717770002f"
    doc = line(record("call %s: %d descriptors, 200 calls", call, 4096))
    assert doc["message"] == f"call {call}: 4096 descriptors, 200 calls"


def test_a_bad_format_string_still_gives_a_line() -> None:
    doc = line(record("call %s stream %s", "only-one"))
    assert "unformattable" in doc["message"]


def test_write_line_is_a_no_op_until_configured_and_metrics_never_raise() -> None:
    seen: list[str] = []
    m = BridgeMetrics(write=lambda s: (_ for _ in ()).throw(OSError("pipe closed")))
    m.count("Anything", 1)  # a failing writer is logged, never raised
    assert m.recent and m.recent[-1]["Anything"] == 1
    m2 = BridgeMetrics(write=seen.append, clock=lambda: 1_800_000_000.0)
    m2.call_started()
    m2.call_finished(call_id=None, tenant_id=None, end_reason="plivo_closed", counts={},
                     skipped={"plivo_before_start": 2})  # fmt: skip
    (doc,) = [json.loads(s) for s in seen]
    assert doc[metrics.CALLS] == 0 and doc[metrics.FRAMES_SKIPPED] == 2  # no call started
    assert doc["_aws"]["Timestamp"] == 1_800_000_000_000 and m2.active == 0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 or percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 99.0 or percentile(values, 0.99) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_the_process_document_has_active_calls_and_relay_latency() -> None:
    seen: list[str] = []
    m = BridgeMetrics(write=seen.append, interval_s=0.2, probe_s=0.01)
    m.call_started()
    m.call_started()

    async def main() -> None:
        task = asyncio.create_task(m.run())
        await asyncio.sleep(0.05)
        # the loop is blocked for 60 ms: the probe sees it late (what every frame then waits)
        import time

        time.sleep(0.06)
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(main())
    docs = [json.loads(s) for s in seen]
    assert docs and all(d[metrics.ACTIVE_CALLS] == 2 for d in docs)
    (cw,) = docs[0]["_aws"]["CloudWatchMetrics"]
    assert cw["Namespace"] == metrics.NAMESPACE and cw["Dimensions"] == [["Service"]]
    assert {x["Name"]: x["Unit"] for x in cw["Metrics"]}[metrics.RELAY_LATENCY_P99] == (
        "Milliseconds"
    )
    worst = max(d[metrics.RELAY_LATENCY_MAX] for d in docs)
    assert worst >= 40  # the blocked loop is visible
    assert min(d[metrics.RELAY_LATENCY_P50] for d in docs) < 40  # and not every sample


@pytest.mark.parametrize(
    ("emitted", "pending", "retries", "expected"),
    [
        (True, False, 2, (2, 0, 0)),  # sent after two retries
        (False, True, 3, (3, 1, 0)),  # left for the sweeper
        (False, False, 3, (3, 0, 1)),  # neither: lost
    ],
)
def test_a_calls_call_ended_outcome_is_counted_from_its_call_end(
    emitted: bool, pending: bool, retries: int, expected: tuple[int, int, int]
) -> None:
    from mirror_bridge.call_end import CallEndResult

    class Relay:  # what relay_finished reads of a CallRelay that has returned
        end_reason = "stop"
        stats = type("Stats", (), {"skipped": {"plivo_malformed": 1}})()

        def __init__(self, session: Any) -> None:
            self.session = session

    async def main() -> list[str]:
        async def finish() -> CallEndResult:
            return CallEndResult({}, True, emitted, pending, retries)

        task = asyncio.create_task(finish())
        await task
        call_end = type("CallEnd", (), {"run": task})()
        ctx = type("Ctx", (), {"call_id": "c1", "tenant_id": "acme"})()
        session = type("S", (), {"ctx": ctx, "counts": {"turns": 3}, "call_end": call_end})()
        seen: list[str] = []
        BridgeMetrics(write=seen.append).relay_finished(Relay(session))
        return seen

    (doc,) = [json.loads(s) for s in asyncio.run(main())]
    got = (doc[metrics.CALL_ENDED_RETRIES], doc[metrics.CALL_ENDED_PENDING],
           doc[metrics.CALL_ENDED_LOST])  # fmt: skip
    assert got == expected
    assert (doc["call_id"], doc["tenant_id"], doc[metrics.TURNS]) == ("c1", "acme", 3)
    assert doc[metrics.FRAMES_SKIPPED] == 1


def test_a_line_saying_call_names_that_call() -> None:
    """The answer route's line runs in no call's task: its `call %s` argument names it."""
    rec = record("answer: call %s number %s tenant %s", "call-a", "14155550123", "acme")
    doc = contextvars.Context().run(line, rec)
    assert doc["call_id"] == "call-a"
    assert doc["message"] == "answer: call call-a number [phone] tenant acme"
    # a 100%% literal before it does not shift the argument; no `call %s`, no call
    rec = record("100%% of call %s", "call-b")
    assert contextvars.Context().run(line, rec)["call_id"] == "call-b"
    assert "call_id" not in contextvars.Context().run(line, record("calls: %s", "x"))


def test_configured_logging_writes_json_and_its_shutdown_flushes_and_undoes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge_log = logging.getLogger("mirror_bridge")
    before = (bridge_log.level, list(bridge_log.handlers))
    logs.configure_logging("INFO", core=False)
    try:
        assert logs.configured() and bridge_log.level == logging.INFO
        logging.getLogger("mirror_bridge.test").info("call %s started", "call-z")
        assert logs.write_line('{"_aws": {}}')
    finally:
        logs.shutdown_logging()  # the app's shutdown: queued lines written, then undone
    out = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.startswith("{")]
    assert out[0]["call_id"] == "call-z" and out[0]["message"] == "call call-z started"
    assert out[1] == {"_aws": {}}
    assert (bridge_log.level, list(bridge_log.handlers)) == before
    assert not logs.configured() and logs.write_line("{}") is False
