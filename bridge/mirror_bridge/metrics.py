"""The bridge's CloudWatch metrics, written as Embedded Metric Format (EMF) documents.

Fargate ships the task's stdout to CloudWatch Logs (the `awslogs` driver), where a JSON line
with an `_aws` envelope becomes metrics. The bridge image carries no Powertools, so the
documents are written by hand (the format is documented: a `CloudWatchMetrics` directive naming
the namespace, the dimension sets and the metrics, whose values are top-level members).

Two kinds of document, never one per frame:

* one per call, when its relay returns (`call_finished`), from the session's `counts` and the
  relay's `RelayStats`: `Calls`, `Turns`, `FailOpens`, interventions and their outcomes, gate
  requests and holds, hold-budget expiries, frames skipped, and the CallEnded outcome read from
  the session's `CallEnd` result (retries, left pending for the sweeper, lost: counted here
  only; `CallEnd` itself only logs them); plus
  one document per fail-open kind (`Kind` dimension) and per intervention outcome (`Outcome`);
* one per process every `interval_s` (60 s) (`run`): `ActiveCalls` (Plivo streams open on this
  task) and the relay latency percentiles. The relay latency is measured by a probe, not per
  frame: every `probe_s` the loop is asked to wake the probe, and how late it wakes is how long
  a frame arriving then waited before the relay could handle it (every call shares the loop).

Every metric has the `Service` dimension (`bridge`); the call's id, tenant and end reason ride
along as plain members (searchable in Logs Insights, not dimensions: no per-call metric cost).
Documents go to `write` (default `logs.write_line`: the JSON logs' queue, off the loop) and the
last `KEEP` are kept in `recent` (tests, debugging). The metric names below are the ones
template.yaml's alarms and dashboard use (tests/unit/test_template_alarms.py checks both).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mirror_bridge import logs

log = logging.getLogger("mirror_bridge.metrics")

NAMESPACE = "Mirror"
"""The functions' Powertools namespace too (template.yaml's POWERTOOLS_METRICS_NAMESPACE)."""
SERVICE_DIMENSION = "Service"
SERVICE = "bridge"
KIND_DIMENSION = "Kind"
OUTCOME_DIMENSION = "Outcome"

# --- per call ------------------------------------------------------------------------------
CALLS = "Calls"
TURNS = "Turns"
FAIL_OPENS = "FailOpens"
"""Turns the bridge let through unscored (ScoreTurn failed: the call went on unsupervised)."""
INTERVENTIONS = "Interventions"
INTERVENTION_OUTCOMES = "InterventionOutcomes"
"""With the `Outcome` dimension (`OUTCOMES`)."""
GATE_REQUESTS = "GateRequests"
GATE_HOLDS = "GateHolds"
GATE_FAILURES = "GateFailures"
HOLD_BUDGET_EXPIRED = "HoldBudgetExpired"
CALL_ENDED_RETRIES = "CallEndedRetries"
CALL_ENDED_PENDING = "CallEndedPending"
"""Calls whose CallEnded the bridge could not publish, marked pending for the sweeper."""
CALL_ENDED_LOST = "CallEndedLost"
"""Calls whose CallEnded was neither published nor marked pending: no report will come."""
INTERNAL_ERRORS = "InternalErrors"
FRAMES_SKIPPED = "FramesSkipped"
MESSAGES_LOST = "MessagesLost"

# --- per process ---------------------------------------------------------------------------
ACTIVE_CALLS = "ActiveCalls"
RELAY_LATENCY_P50 = "RelayLatencyP50"
RELAY_LATENCY_P99 = "RelayLatencyP99"
RELAY_LATENCY_MAX = "RelayLatencyMax"

COUNT = "Count"
MILLISECONDS = "Milliseconds"

# Per-call metric -> the session `counts` keys it sums.
COUNTS: dict[str, tuple[str, ...]] = {
    TURNS: ("turns",),
    FAIL_OPENS: ("score_failures",),
    INTERVENTIONS: ("interventions",),
    GATE_REQUESTS: ("gate_requests",),
    GATE_HOLDS: ("gate_hold",),
    GATE_FAILURES: ("gate_failures",),
    HOLD_BUDGET_EXPIRED: ("budget_expired",),
    INTERNAL_ERRORS: ("internal_errors",),
    MESSAGES_LOST: ("agent_messages_lost", "plivo_frames_lost"),
}
FAIL_OPEN_KIND_PREFIX = "score_failure_"
# Intervention outcome (the `Outcome` dimension) -> the session `counts` key.
OUTCOMES: dict[str, str] = {
    "completed": "interventions_completed",
    "superseded": "interventions_superseded",
    "correction_failed": "correction_failures",
    "tts_failed": "tts_failures",
    "checkpoint_timeout": "checkpoint_timeouts",
}

KEEP = 200


@dataclass(frozen=True, slots=True)
class CallEndedOutcome:
    """What became of a call's CallEnded (`call_end.CallEndResult`)."""

    retries: int = 0
    pending: bool = False
    lost: bool = False

    @classmethod
    def of(cls, call_end: Any) -> CallEndedOutcome:
        """From a session's `CallEnd` whose one run has finished (else: nothing to count)."""
        task = getattr(call_end, "run", None)  # CallEnd's one run, set when the call ended
        if not isinstance(task, asyncio.Task) or not task.done() or task.cancelled():
            return cls()
        if task.exception() is not None:
            return cls(lost=True)
        result = task.result()
        emitted = bool(getattr(result, "event_emitted", True))
        pending = bool(getattr(result, "event_pending", False))
        return cls(
            retries=_as_int(getattr(result, "event_retries", 0)),
            pending=pending and not emitted,
            lost=not emitted and not pending,
        )


def emf(
    metrics: Mapping[str, tuple[float, str]],
    dimensions: Mapping[str, str],
    *,
    timestamp_ms: int,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One EMF document: `metrics` name -> (value, unit), one dimension set."""
    doc: dict[str, Any] = dict(properties or {})
    doc.update(dimensions)
    doc.update({name: value for name, (value, _) in metrics.items()})
    doc["_aws"] = {
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [
            {
                "Namespace": NAMESPACE,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
            }
        ],
    }
    return doc


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _as_int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


class BridgeMetrics:
    """The bridge's metrics (module docstring). One per app; loop-only, no locks."""

    def __init__(
        self,
        *,
        write: Callable[[str], Any] = logs.write_line,
        interval_s: float = 60.0,
        probe_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.write = write
        self.interval_s = interval_s
        self.probe_s = probe_s
        self.clock = clock
        self.active = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._lag_ms: list[float] = []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BridgeMetrics:
        """`METRICS_INTERVAL_S` (default 60) sets the process document's period."""
        raw = (environ.get("METRICS_INTERVAL_S") or "").strip()
        try:
            interval = float(raw) if raw else 60.0
        except ValueError:
            interval = 60.0
        return cls(interval_s=interval if interval > 0 else 60.0)

    def _emit(self, doc: dict[str, Any]) -> None:
        self.recent.append(doc)
        try:
            self.write(json.dumps(doc, separators=(",", ":"), default=str))
        except Exception as e:  # a metric never fails a call
            log.warning("metric document not written: %s", e)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- per call ----------------------------------------------------------------------------

    def call_started(self) -> None:
        self.active += 1

    def call_finished(
        self,
        *,
        call_id: str | None,
        tenant_id: str | None,
        end_reason: str | None,
        counts: Mapping[str, Any],
        skipped: Mapping[str, int],
        call_ended: CallEndedOutcome | None = None,
    ) -> None:
        """The stream closed: one call's documents (module docstring). `counts` are the
        session's (empty for a stream that never started a call)."""
        self.active = max(0, self.active - 1)
        now = self._now_ms()
        service = {SERVICE_DIMENSION: SERVICE}
        props = {"call_id": call_id, "tenant_id": tenant_id, "end_reason": end_reason}
        values: dict[str, tuple[float, str]] = {CALLS: (1 if call_id else 0, COUNT)}
        for metric, keys in COUNTS.items():
            values[metric] = (sum(_as_int(counts.get(k)) for k in keys), COUNT)
        ended = call_ended or CallEndedOutcome()
        values[CALL_ENDED_RETRIES] = (ended.retries, COUNT)
        values[CALL_ENDED_PENDING] = (int(ended.pending), COUNT)
        values[CALL_ENDED_LOST] = (int(ended.lost), COUNT)
        values[FRAMES_SKIPPED] = (sum(_as_int(v) for v in skipped.values()), COUNT)
        self._emit(emf(values, service, timestamp_ms=now, properties=props))
        for key, value in sorted(counts.items()):
            if key.startswith(FAIL_OPEN_KIND_PREFIX) and _as_int(value) > 0:
                kind = key[len(FAIL_OPEN_KIND_PREFIX) :]
                dims = {**service, KIND_DIMENSION: kind}
                self._emit(
                    emf({FAIL_OPENS: (_as_int(value), COUNT)}, dims, timestamp_ms=now,
                        properties=props)
                )  # fmt: skip
        for outcome, key in OUTCOMES.items():
            if (n := _as_int(counts.get(key))) > 0:
                dims = {**service, OUTCOME_DIMENSION: outcome}
                self._emit(
                    emf({INTERVENTION_OUTCOMES: (n, COUNT)}, dims, timestamp_ms=now,
                        properties=props)
                )  # fmt: skip

    def relay_finished(self, relay: Any) -> None:
        """`call_finished` from a `CallRelay` that has returned: its session's counts (after
        its close: the CallEnded outcome counted too) and its stats."""
        session = getattr(relay, "session", None)
        ctx = getattr(session, "ctx", None)
        counts = getattr(session, "counts", None)
        self.call_finished(
            call_id=getattr(ctx, "call_id", None),
            tenant_id=getattr(ctx, "tenant_id", None),
            end_reason=getattr(relay, "end_reason", None),
            counts=counts if isinstance(counts, Mapping) else {},
            skipped=relay.stats.skipped,
            call_ended=CallEndedOutcome.of(getattr(session, "call_end", None)),
        )

    def count(self, name: str, value: float) -> None:
        """One count now, in its own document (`call_end.MetricSink`'s signature)."""
        self._emit(emf({name: (value, COUNT)}, {SERVICE_DIMENSION: SERVICE},
                       timestamp_ms=self._now_ms()))  # fmt: skip

    # --- per process -------------------------------------------------------------------------

    def process_document(self) -> dict[str, Any]:
        """Active calls and the relay latency since the last document (its samples reset)."""
        samples = sorted(self._lag_ms)
        self._lag_ms = []
        values: dict[str, tuple[float, str]] = {ACTIVE_CALLS: (self.active, COUNT)}
        if samples:
            values[RELAY_LATENCY_P50] = (round(percentile(samples, 0.50), 3), MILLISECONDS)
            values[RELAY_LATENCY_P99] = (round(percentile(samples, 0.99), 3), MILLISECONDS)
            values[RELAY_LATENCY_MAX] = (round(samples[-1], 3), MILLISECONDS)
        doc = emf(
            values, {SERVICE_DIMENSION: SERVICE}, timestamp_ms=self._now_ms(),
            properties={"latency_samples": len(samples)},
        )  # fmt: skip
        self._emit(doc)
        return doc

    async def run(self) -> None:
        """The process document every `interval_s`, with the loop-lag probe between; runs
        until cancelled (the app's shutdown)."""
        loop = asyncio.get_running_loop()
        next_doc = loop.time() + self.interval_s
        while True:
            expected = loop.time() + self.probe_s
            await asyncio.sleep(self.probe_s)
            now = loop.time()
            self._lag_ms.append(max(0.0, (now - expected) * 1000))
            if now >= next_doc:
                next_doc = now + self.interval_s
                self.process_document()
