"""`mirror.observability`: the metric every handler counts with, and the tracer left out where
tracing is off."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from mirror.observability import count, function_metrics, traced
from tests.support.handlers import emf_documents, emf_metric

pytestmark = pytest.mark.unit


def test_count_is_one_document_with_its_own_dimensions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MirrorTest")
    count("GateFailures", kind="timeout")
    [(directive, doc)] = emf_metric(emf_documents(capsys.readouterr().out), "GateFailures")
    assert directive["Namespace"] == "MirrorTest"
    assert any("kind" in dims for dims in directive["Dimensions"])
    assert doc["kind"] == "timeout" and doc["GateFailures"] in ([1.0], 1.0)


def test_a_metric_that_cannot_be_emitted_never_fails_the_call(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)  # Powertools refuses
    with caplog.at_level(logging.WARNING, logger="mirror.observability"):
        count("GateFailures", kind="timeout")
    assert emf_documents(capsys.readouterr().out) == []
    assert any("metric not emitted: GateFailures" in r.getMessage() for r in caplog.records)


def test_two_copies_of_a_function_keep_their_metrics_apart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two handler copies in one process (the bridge's in-process containers): one's flush
    neither takes nor clears the other's metrics."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MirrorTest")
    score, gate = function_metrics(), function_metrics()
    score.add_metric(name="Verdicts", unit=MetricUnit.Count, value=1)
    gate.add_metric(name="GateRequests", unit=MetricUnit.Count, value=1)
    gate.flush_metrics()
    docs = emf_documents(capsys.readouterr().out)
    assert emf_metric(docs, "GateRequests") and not emf_metric(docs, "Verdicts")
    score.flush_metrics()  # its metric was neither flushed nor cleared by the other copy
    docs = emf_documents(capsys.readouterr().out)
    assert emf_metric(docs, "Verdicts") and not emf_metric(docs, "GateRequests")


class _Tracer:
    """Powertools' Tracer as `traced` uses it: `disabled`, and the decorator it applies."""

    def __init__(self, disabled: bool) -> None:
        self.disabled = disabled
        self.wrapped: list[tuple[str, bool | None]] = []

    def capture_lambda_handler(self, capture_response: bool | None = None) -> Any:
        def decorate(handler: Any) -> Any:
            self.wrapped.append((handler.__name__, capture_response))

            def in_subsegment(event: Any, context: Any) -> Any:
                return ("traced", handler(event, context))

            return in_subsegment

        return decorate


def _handler(event: Any, context: Any) -> Any:
    return event


def test_traced_wraps_only_where_tracing_is_on() -> None:
    off = _Tracer(disabled=True)
    assert traced(off)(_handler) is _handler and off.wrapped == []  # type: ignore[arg-type]

    on = _Tracer(disabled=False)
    handler = traced(on)(_handler)  # type: ignore[arg-type]
    assert on.wrapped == [("_handler", False)]  # the response is never put in a trace
    assert handler({"a": 1}, None) == ("traced", {"a": 1})


def test_a_flush_without_a_namespace_is_logged_and_never_raised(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`@log_metrics` flushes after the handler answered: a raise there failed the answer."""
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    metrics = function_metrics()

    @metrics.log_metrics
    def handler(event: Any, context: Any) -> dict[str, str]:
        metrics.add_dimension(name="decision", value="allow")
        metrics.add_metric(name="Verdicts", unit=MetricUnit.Count, value=1)
        return {"decision": "allow"}

    with caplog.at_level(logging.WARNING, logger="mirror.observability"):
        assert handler({}, None) == {"decision": "allow"}
        assert handler({}, None) == {"decision": "allow"}  # nothing left over to fail on
    assert emf_documents(capsys.readouterr().out) == []
    assert any("metrics not emitted" in r.getMessage() for r in caplog.records)


def test_an_empty_flush_publishes_nothing_and_does_not_warn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outcome whose counts are all documents of their own leaves the set empty (the Api's
    per-route document): expected, so no "No application metrics to publish" UserWarning."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MirrorTest")
    metrics = function_metrics()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics.flush_metrics()
        metrics.add_metric(name="Verdicts", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        metrics.flush_metrics()  # flushed already: nothing more
    assert [str(w.message) for w in caught] == []
    assert len(emf_metric(emf_documents(capsys.readouterr().out), "Verdicts")) == 1
