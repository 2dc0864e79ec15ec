"""`mirror.sweeper.sweep`'s rules on in-memory fakes: what is re-sent, with which source and
detail, what is only unindexed, and that one call's failure neither stops the run nor clears
its mark. (The DynamoDB index and the handler: tests/integration/test_call_ended_delivery.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mirror.events import PENDING_FIELD, SOURCE_API, SOURCE_BRIDGE, EventPublishError
from mirror.sweeper import PendingCallEnded, split_key, sweep
from mirror.usecases.failure import Failure
from mirror.usecases.sweep import SweepEvent, SweepOutcome, SweepSettings, sweep_call_ended

pytestmark = pytest.mark.unit


@dataclass
class FakeIndex:
    marks: list[PendingCallEnded]
    clear_fails: set[str] = field(default_factory=set)
    cleared: list[str] = field(default_factory=list)
    asked: list[tuple[str, float, int]] = field(default_factory=list)

    def find(self, source: str, before: float, limit: int) -> list[PendingCallEnded]:
        self.asked.append((source, before, limit))
        return [m for m in self.marks if m.source == source and m.since <= before][:limit]

    def clear(self, pending: PendingCallEnded) -> bool:
        if pending.call_id in self.clear_fails:
            raise ConnectionError("reset")
        self.cleared.append(pending.call_id)
        return True


@dataclass
class FakePublisher:
    fail_for: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: dict[str, Any]) -> int:
        if detail["call_id"] in self.fail_for:
            raise EventPublishError("CallEnded not published (InternalFailure)", attempts=4)
        self.sent.append(detail)
        return 1


def mark(call_id: str, source: str = SOURCE_BRIDGE, since: float = 100.0, **meta: Any) -> Any:
    return PendingCallEnded("acme", call_id, source, since, {PENDING_FIELD: True, **meta})


def test_a_bridge_mark_is_resent_with_the_detail_the_bridge_built() -> None:
    index = FakeIndex([mark("c1", ended_at=90, end_reason="hangup", bridge_turns=3,
                            bridge_score_failure_timeout=1, agent_id="a")])  # fmt: skip
    bridge, api = FakePublisher(), FakePublisher()
    result = sweep(index, {SOURCE_BRIDGE: bridge, SOURCE_API: api}, now=1000, min_age_s=300,
                   limit=10)  # fmt: skip
    assert (result.swept, result.cleared, result.failed, result.retries) == (["c1"], [], {}, 1)
    assert bridge.sent == [{"tenant_id": "acme", "call_id": "c1", "ended_at": 90.0,
                            "reason": "hangup",
                            "counts": {"turns": 3, "score_failure_timeout": 1}}]  # fmt: skip
    assert api.sent == [] and index.cleared == ["c1"]
    assert [(s, b) for s, b, _ in index.asked] == [(SOURCE_BRIDGE, 700), (SOURCE_API, 700)]


def test_an_api_mark_without_a_reason_says_api_and_a_cleared_flag_is_not_resent() -> None:
    index = FakeIndex([mark("c1", SOURCE_API, ended_at=5), mark("c2", SOURCE_API)])
    index.marks[1].meta[PENDING_FIELD] = False  # the Api published it after all
    api = FakePublisher()
    result = sweep(index, {SOURCE_API: api}, now=1000, min_age_s=0, limit=10)
    assert [d["reason"] for d in api.sent] == ["api"] and result.swept == ["c1"]
    assert result.cleared == ["c2"] and index.cleared == ["c1", "c2"]


def test_one_failing_call_keeps_its_mark_and_the_run_goes_on() -> None:
    index = FakeIndex([mark("bad"), mark("ok"), mark("unclearable")],
                      clear_fails={"unclearable"})  # fmt: skip
    publisher = FakePublisher(fail_for={"bad"})
    result = sweep(index, {SOURCE_BRIDGE: publisher}, now=1000, min_age_s=0, limit=10)
    assert result.swept == ["ok"]
    assert result.failed == {"bad": "EventPublishError", "unclearable": "ConnectionError"}
    assert index.cleared == ["ok"]  # "bad" is retried next run; "unclearable" re-sent then too


def test_a_source_without_a_publisher_is_a_failure_not_a_silent_skip() -> None:
    result = sweep(FakeIndex([mark("c1", SOURCE_API)]), {}, now=1000, min_age_s=0, limit=10)
    assert result.failed == {"c1": "LookupError"}


def test_young_marks_and_the_limit_are_respected() -> None:
    index = FakeIndex([mark(f"c{i}", since=900.0 + i) for i in range(5)])
    publisher = FakePublisher()
    result = sweep(index, {SOURCE_BRIDGE: publisher}, now=1000, min_age_s=98, limit=2)
    assert result.swept == ["c0", "c1"]  # c0..c2 are old enough; at most 2 per source


def test_the_use_case_applies_overrides_and_turns_an_unreadable_index_into_a_failure() -> None:
    index = FakeIndex([mark("c1", since=0.0)])
    out = sweep_call_ended(index, {SOURCE_BRIDGE: FakePublisher()}, SweepSettings(),
                           SweepEvent.parse({"limit": 1}), clock=lambda: 10.0)  # fmt: skip
    assert out == SweepOutcome(swept=[], cleared=[], failed={}, retries=0)  # 10 s < 300 s
    out = sweep_call_ended(index, {SOURCE_BRIDGE: FakePublisher()}, SweepSettings(),
                           SweepEvent.parse({"min_age_s": 0}), clock=lambda: 10.0)  # fmt: skip
    assert isinstance(out, SweepOutcome) and out.swept == ["c1"]

    class Broken(FakeIndex):
        def find(self, source: str, before: float, limit: int) -> list[PendingCallEnded]:
            raise RuntimeError("bug")

    failure = sweep_call_ended(Broken([]), {}, SweepSettings(), SweepEvent.parse({}))
    assert isinstance(failure, Failure) and failure.kind == "internal_error"


def test_call_keys_split_back_into_tenant_and_call() -> None:
    assert split_key("acme#CA-1#x") == ("acme", "CA-1#x")
    for bad in ("acme", "#c", "acme#"):
        with pytest.raises(ValueError):
            split_key(bad)
