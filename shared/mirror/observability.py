"""What every function does alike with Powertools' metrics and tracer.

Imported by the Lambda handlers only (Powertools is in their layer; the bridge's image does not
carry it). The handlers run on the turn's clock: ScoreTurn's time is audio held back from the
caller, and in the bridge's local run it is GIL time taken from every call's audio. With cold
caches, as a handler meets them between turns, one `single_metric` costs ~150 µs and a dummy
X-Ray subsegment as much again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


class SafeEMFProvider(AmazonCloudWatchEMFProvider):
    """The EMF provider whose failures are logged and swallowed: a metric that cannot be
    emitted (no `POWERTOOLS_METRICS_NAMESPACE`, too many dimensions, a bad value) never fails
    the call it counts, so it can never change a verdict or a gate decision. `@log_metrics`
    flushes after the handler returned its answer: a raise there would turn the answer into a
    failed invocation (the bridge's local run, which sets no namespace, failed every turn open).
    A flush that fails drops the invocation's metrics, so they do not pile up."""

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().add_metric(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a metric never fails the call
            logger.warning("metric not added", exc_info=True)

    def add_dimension(self, name: str, value: str) -> None:
        try:
            super().add_dimension(name, value)
        except Exception:  # noqa: BLE001
            logger.warning("metric dimension not added: %s", name, exc_info=True)

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if not self.metric_set and not raise_on_empty_metrics:
            # Nothing to publish, as Powertools would publish nothing, but without its
            # UserWarning: here an empty set is expected. An outcome whose counts all carry
            # dimensions of their own (`count`: fresh gate decisions) or that counts nothing (a
            # replayed verdict, a call not found) leaves the Api route's own document
            # (`usecases.emit.flushed_metrics`) or ScoreTurn's empty.
            return
        try:
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)
        except Exception:  # noqa: BLE001
            logger.warning("metrics not emitted", exc_info=True)
            try:
                self.clear_metrics()
            except Exception:  # noqa: BLE001
                logger.warning("metrics not cleared", exc_info=True)


def function_metrics() -> Metrics:
    """A function's `Metrics`, with a metric set of its own. Powertools keeps one set per process
    for every `Metrics()`: two handler copies run side by side in one process (the bridge's
    in-process functions, two "containers" each) would flush or clear each other's metrics, and
    a flush that finds the set emptied under it raises, failing the call. In Lambda, one
    invocation per process, nothing changes. Namespace and service come from the environment
    (`POWERTOOLS_METRICS_NAMESPACE`, `POWERTOOLS_SERVICE_NAME`), as for `Metrics()`; a metric
    that cannot be emitted is logged, never raised (`SafeEMFProvider`)."""
    return Metrics(provider=SafeEMFProvider())


def count(name: str, **dimensions: str) -> None:
    """One Count metric with its own dimensions, as its own EMF document now. A metrics failure
    (a missing namespace, too many dimensions) is logged and never fails the call: a metric
    must not change a verdict or a gate decision."""
    try:
        with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
            for key, value in dimensions.items():
                metric.add_dimension(name=key, value=value)
    except Exception:  # noqa: BLE001 - whatever Powertools raises, the call goes on
        logger.warning("metric not emitted: %s", name, exc_info=True)


def traced(tracer: Tracer) -> Callable[[Handler], Handler]:
    """`tracer.capture_lambda_handler(capture_response=False)` where tracing is on (in Lambda
    with `Tracing: Active`); the handler unwrapped where it is off (locally, in tests, in the
    bridge's in-process functions), where Powertools would still open and close a dummy
    subsegment on every call. `tracer.disabled` is read once, at import, as Powertools does."""

    def decorate(handler: Handler) -> Handler:
        if tracer.disabled:
            return handler
        wrapped: Handler = tracer.capture_lambda_handler(capture_response=False)(handler)
        return wrapped

    return decorate
