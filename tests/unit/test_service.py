"""ScoreTurnService over the in-memory store: history modes, idempotency, cooldown, races.

The clock is injected, so cooldown expiry is exact and nothing here sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mirror.judge import Finding
from mirror.models import (
    AgentMessage,
    CallContext,
    CustomerMessage,
    Message,
    MirrorConfig,
    ScoreTurnEvent,
    ToolMessage,
)
from mirror.service import ScoredTurn, ScoreTurnService
from mirror.state import InMemoryStateStore
from tests.fakes.tiers import FakeTier

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
CALL = "CA-svc-1"
TENANT = "pizzeria"
CTX = CallContext(call_id=CALL, tenant_id=TENANT)
CONFIG = MirrorConfig(tenant_id=TENANT, policies=['FORBID "guaranteed"'])

ORDER = {"items": ["pepperoni pizza", "mushroom pizza"], "size": "large"}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(
    turn_id: str | None,
    customer_text: str = "",
    agent_text: str = "",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
    call_id: str = CALL,
) -> ScoreTurnEvent:
    return ScoreTurnEvent.model_validate(
        {
            "call_id": call_id,
            "tenant_id": TENANT,
            "turn_id": turn_id,
            "customer_text": customer_text,
            "agent_text": agent_text,
            "tool_calls": tool_calls or [],
            "history": history or [],
        }
    )


def tool_call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "args": args}


def lines(messages: list[Message]) -> list[tuple[str, str]]:
    """(role, text) per message; an agent turn without words shows its tool call names."""
    out = []
    for m in messages:
        if isinstance(m, AgentMessage) and not m.text:
            out.append(("agent", "+".join(c.name for c in m.tool_calls)))
        elif isinstance(m, ToolMessage):
            out.append(("tool", m.name))
        else:
            out.append((m.role, m.text))
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore()


@pytest.fixture
def service(store: InMemoryStateStore, clock: Clock) -> ScoreTurnService:
    return ScoreTurnService(store, clock=clock)


def score(service: ScoreTurnService, ev: ScoreTurnEvent, config: MirrorConfig = CONFIG) -> Any:
    assert ev.turn_id is not None
    return service.score(ev, config, ev.turn_id)


# --- stored-history mode ------------------------------------------------------------------------


def _order_flow(confirm_again: str) -> list[ScoreTurnEvent]:
    """Order, yes, a price lookup, then the write: the lookup and the write are two agent turns
    behind the same caller line (or, with `confirm_again=""`, the write carries no caller line)."""
    return [
        event(
            "t1",
            "Two large pizzas please, one pepperoni and one mushroom.",
            "Two large pizzas, one pepperoni and one mushroom. Shall I place the order?",
        ),
        event("t2", "Yes, please.", tool_calls=[tool_call("quote_price", "c1", **ORDER)]),
        event("t3", confirm_again, tool_calls=[tool_call("place_order", "c2", **ORDER)]),
    ]


@pytest.mark.parametrize("confirm_again", ["Yes, please.", ""], ids=["same-line", "no-line"])
def test_stored_history_confirms_a_later_write_with_an_earlier_yes(
    service: ScoreTurnService, store: InMemoryStateStore, confirm_again: str
) -> None:
    results = [score(service, ev) for ev in _order_flow(confirm_again)]

    assert [r.verdict.decision for r in results] == ["allow", "allow", "allow"]
    assert all(not r.replayed for r in results)
    assert lines(store.get_history(CTX, T0, 200)) == [
        ("customer", "Two large pizzas please, one pepperoni and one mushroom."),
        ("agent", "Two large pizzas, one pepperoni and one mushroom. Shall I place the order?"),
        ("customer", "Yes, please."),  # once, although t2 and t3 both carry it
        ("agent", "quote_price"),
        ("agent", "place_order"),
    ]
    assert [v.turn_id for v in store.list_verdicts(CTX, T0)] == ["t1", "t2", "t3"]


def test_stored_history_without_a_yes_blocks_the_write(service: ScoreTurnService) -> None:
    """The contrast case: the same write after no yes is held for confirmation."""
    score(service, event("t1", "Two large pizzas please.", "Two large pizzas. Shall I order?"))
    r = score(
        service,
        event("t2", "Hmm, let me think.", tool_calls=[tool_call("place_order", "c1", **ORDER)]),
    )
    assert r.verdict.decision == "block"
    assert r.verdict.blocked_tool_call_ids == ["c1"]
    assert r.verdict.reasons[0].code == "no_confirmation_yet"


def test_stored_history_carries_a_retraction_into_later_turns(service: ScoreTurnService) -> None:
    """Only the stored history knows the caller took 'large' back two turns ago."""
    score(
        service,
        event("t1", "A large pepperoni, actually make it medium.", "Got it. Anything else?"),
    )
    r = score(
        service,
        event("t2", "No, that's all.", "One large pepperoni pizza. Shall I place the order?"),
    )
    assert r.verdict.decision == "intervene"
    assert r.verdict.reasons[0].check == "retraction"
    assert "large" in r.verdict.reasons[0].evidence

    # a different call with the same turn has no such history
    fresh = score(
        service,
        event(
            "t2",
            "No, that's all.",
            "One large pepperoni pizza. Shall I place the order?",
            call_id="CA-other",
        ),
    )
    assert fresh.verdict.decision == "allow"


def test_agent_words_between_identical_caller_lines_keep_both(
    service: ScoreTurnService, store: InMemoryStateStore
) -> None:
    """The same caller text after agent speech is a new line, not the current one."""
    score(service, event("t1", "Yes.", "Anything else?"))
    score(service, event("t2", "Yes.", "What else would you like?"))
    assert lines(store.get_history(CTX, T0, 200)) == [
        ("customer", "Yes."),
        ("agent", "Anything else?"),
        ("customer", "Yes."),
        ("agent", "What else would you like?"),
    ]


# --- event-history mode -------------------------------------------------------------------------

RETRACTED_HISTORY = [
    {"role": "customer", "text": "A large pepperoni, actually make it medium."},
    {"role": "agent", "text": "Got it. Anything else?"},
    {"role": "customer", "text": "No, that's all."},
]


def test_event_history_is_judged_and_only_the_turn_is_recorded(
    service: ScoreTurnService, store: InMemoryStateStore
) -> None:
    r = score(
        service,
        event(
            "t1",
            "No, that's all.",
            "One large pepperoni pizza. Shall I place the order?",
            history=RETRACTED_HISTORY,
        ),
    )
    assert r.verdict.decision == "intervene"  # from the event's history: the store was empty
    assert r.verdict.reasons[0].check == "retraction"
    # the store gets this turn's caller line and agent turn, not the event's whole history
    assert lines(store.get_history(CTX, T0, 200)) == [
        ("customer", "No, that's all."),
        ("agent", "One large pepperoni pizza. Shall I place the order?"),
    ]


def test_event_history_wins_over_the_stored_one(service: ScoreTurnService) -> None:
    score(service, event("t1", "A large pepperoni, actually make it medium.", "Got it."))
    clean_history = [{"role": "customer", "text": "One large pepperoni, please."}]
    r = score(
        service,
        event(
            "t2",
            "One large pepperoni, please.",
            "One large pepperoni pizza. Shall I place the order?",
            history=clean_history,
        ),
    )
    assert r.verdict.decision == "allow"  # the stored retraction is not consulted


def test_event_history_tool_output_grounds_a_write(service: ScoreTurnService) -> None:
    history = [
        {"role": "customer", "text": "Cancel my latest order please."},
        {"role": "agent", "text": "", "tool_calls": [tool_call("list_orders", "c1")]},
        {"role": "tool", "name": "list_orders", "text": '{"orders": [{"order_id": "W5199551"}]}'},
        {"role": "agent", "text": "Order W5199551 is pending. Shall I cancel it?"},
        {"role": "customer", "text": "Yes, go ahead."},
    ]
    write = [tool_call("cancel_pending_order", "c2", order_id="W5199551")]
    r = score(service, event("t1", "Yes, go ahead.", tool_calls=write, history=history))
    assert r.verdict.decision == "allow"


def test_stored_history_tool_results_ground_a_later_write(service: ScoreTurnService) -> None:
    lookup = [tool_call("list_orders", "c1")]
    score(service, event("t1", "Cancel my latest order please.", tool_calls=lookup))
    result = {"role": "tool", "name": "list_orders", "text": '{"orders": ["W5199551"]}'}
    read_back = "Order W5199551 is pending. Shall I cancel it?"
    e = event("t2", "Cancel my latest order please.", read_back).model_copy(
        update={"tool_results": [ToolMessage.model_validate(result)]}
    )
    score(service, e)
    write = [tool_call("cancel_pending_order", "c2", order_id="W5199551")]
    r = score(service, event("t3", "Yes, go ahead.", tool_calls=write))
    assert r.verdict.decision == "allow", r.verdict.reasons
    roles = [m.role for m in service.store.get_history(CTX, service.clock(), 50)]
    assert roles == ["customer", "agent", "tool", "agent", "customer", "agent"]
    # without the tool result the id is grounded nowhere: the same write is blocked
    other = CallContext(call_id="other", tenant_id=TENANT)
    for turn_id, text, agent in (
        ("u1", "Cancel my latest order please.", ""),
        ("u2", "Cancel my latest order please.", read_back),
    ):
        score(service, event(turn_id, text, agent, call_id=other.call_id))
    blocked = score(service, event("u3", "Yes, go ahead.", tool_calls=write, call_id="other"))
    assert blocked.verdict.decision == "block"


# --- idempotency --------------------------------------------------------------------------------


def test_a_retried_turn_returns_the_stored_verdict_and_records_nothing(
    service: ScoreTurnService, store: InMemoryStateStore, clock: Clock
) -> None:
    ev = event("t1", "Two large pizzas.", "Two large pizzas, delivery guaranteed.")
    first = score(service, ev)
    assert first.verdict.decision == "intervene" and not first.replayed
    history = store.get_history(CTX, T0, 200)

    clock.now += 2  # inside the cooldown the first delivery claimed
    again = score(service, ev)
    assert again.replayed
    assert again.verdict == first.verdict  # same latency too: not re-judged
    assert again.verdict.decision == "intervene"  # not suppressed by its own cooldown

    # the turn id is the key: different content under the same id is still a retry
    changed = score(service, event("t1", "Something else.", "All fine."))
    assert changed.replayed and changed.verdict == first.verdict

    assert store.get_history(CTX, clock.now, 200) == history
    assert [v.turn_id for v in store.list_verdicts(CTX, clock.now)] == ["t1"]


def test_turn_ids_are_per_call(service: ScoreTurnService) -> None:
    a = score(service, event("t1", "Two large pizzas.", "Two large pizzas, guaranteed."))
    b = score(service, event("t1", "Two large pizzas.", "Two large pizzas.", call_id="CA-2"))
    assert not a.replayed and not b.replayed
    assert (a.verdict.decision, b.verdict.decision) == ("intervene", "allow")


# --- cooldown -----------------------------------------------------------------------------------

COOLDOWN = MirrorConfig(tenant_id=TENANT, policies=['FORBID "guaranteed"'], cooldown_s=5)


def _rude(turn_id: str) -> ScoreTurnEvent:
    return event(turn_id, "When will it arrive?", f"Delivery is guaranteed ({turn_id}).")


def test_cooldown_suppresses_then_expires(
    service: ScoreTurnService, store: InMemoryStateStore, clock: Clock
) -> None:
    first = service.score(_rude("t1"), COOLDOWN, "t1").verdict
    assert first.decision == "intervene" and first.buffer_text

    clock.now = T0 + 4.999
    second = service.score(_rude("t2"), COOLDOWN, "t2").verdict
    assert second.decision == "allow"
    assert second.cooldown_suppressed and second.buffer_text is None
    assert second.reasons and second.reasons[0].check == "operator_rule"  # still reported

    clock.now = T0 + 5.0  # the cooldown ends exactly cooldown_s after the intervention
    third = service.score(_rude("t3"), COOLDOWN, "t3").verdict
    assert third.decision == "intervene" and not third.cooldown_suppressed

    clock.now = T0 + 6.0  # and the new intervention started a new cooldown
    assert service.score(_rude("t4"), COOLDOWN, "t4").verdict.cooldown_suppressed

    decisions = [v.verdict.decision for v in store.list_verdicts(CTX, clock.now)]
    assert decisions == ["intervene", "allow", "intervene", "allow"]


def test_a_suppressed_turn_does_not_extend_the_cooldown(
    service: ScoreTurnService, clock: Clock
) -> None:
    service.score(_rude("t1"), COOLDOWN, "t1")
    clock.now = T0 + 4
    assert service.score(_rude("t2"), COOLDOWN, "t2").verdict.cooldown_suppressed
    clock.now = T0 + 5  # 5 s after the intervention, 1 s after the suppressed turn
    assert service.score(_rude("t3"), COOLDOWN, "t3").verdict.decision == "intervene"


def test_blocks_are_not_subject_to_the_cooldown(service: ScoreTurnService, clock: Clock) -> None:
    service.score(_rude("t1"), COOLDOWN, "t1")
    clock.now = T0 + 1
    write = [tool_call("place_order", "c1", **ORDER)]
    r = service.score(event("t2", "Hmm, maybe.", tool_calls=write), COOLDOWN, "t2")
    assert r.verdict.decision == "block" and r.verdict.blocked_tool_call_ids == ["c1"]


# --- races --------------------------------------------------------------------------------------


class RacingStore(InMemoryStateStore):
    """Holds every scorer after its cooldown read until all have read it, so all of them see no
    cooldown and the conditional claim alone must pick the one that intervenes."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties)

    def cooldown_active(self, ctx: CallContext, now: float, owner: str = "") -> bool:
        active = super().cooldown_active(ctx, now, owner)
        self.barrier.wait(timeout=5)
        return active


def _race(n: int, fn: Callable[[int], ScoredTurn]) -> list[ScoredTurn]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n), timeout=10))


def test_concurrent_intervening_turns_have_one_winner(clock: Clock) -> None:
    n = 8
    store = RacingStore(n)
    service = ScoreTurnService(store, clock=clock)
    results = _race(n, lambda i: service.score(_rude(f"t{i}"), CONFIG, f"t{i}"))

    winners = [r for r in results if r.verdict.decision == "intervene"]
    losers = [r for r in results if r.verdict.decision != "intervene"]
    assert len(winners) == 1
    assert all(r.verdict.decision == "allow" for r in losers)
    assert all(r.verdict.cooldown_suppressed and r.verdict.buffer_text is None for r in losers)
    assert not any(r.replayed for r in results)
    # every turn is recorded, with the decision its scorer returned
    recorded = {v.turn_id: v.verdict for v in store.list_verdicts(CTX, T0)}
    assert recorded == {r.turn_id: r.verdict for r in results}
    history = store.get_history(CTX, T0, 200)
    agent_lines = sorted(m.text for m in history if isinstance(m, AgentMessage))
    assert agent_lines == sorted(f"Delivery is guaranteed (t{i})." for i in range(n))
    # each scorer read the history before any wrote, so each appends the caller line too
    assert {m.text for m in history if isinstance(m, CustomerMessage)} == {"When will it arrive?"}


class OrderedStore(InMemoryStateStore):
    """Two deliveries of one turn: 'A' claims the cooldown first, 'B' records the turn first."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2)
        self.a_claimed = threading.Event()
        self.b_recorded = threading.Event()

    def cooldown_active(self, ctx: CallContext, now: float, owner: str = "") -> bool:
        active = super().cooldown_active(ctx, now, owner)
        self.barrier.wait(timeout=5)
        return active

    def claim_cooldown(
        self, ctx: CallContext, now: float, cooldown_s: float, ttl_s: int, owner: str = ""
    ) -> bool:
        if threading.current_thread().name == "B":
            assert self.a_claimed.wait(timeout=5)
        won = super().claim_cooldown(ctx, now, cooldown_s, ttl_s, owner)
        if threading.current_thread().name == "A":
            self.a_claimed.set()
        return won

    def record_turn(self, *args: Any, **kwargs: Any) -> bool:
        if threading.current_thread().name == "A":
            assert self.b_recorded.wait(timeout=5)
        recorded = super().record_turn(*args, **kwargs)
        if threading.current_thread().name == "B":
            self.b_recorded.set()
        return recorded


def test_concurrent_deliveries_of_one_intervening_turn_still_intervene(clock: Clock) -> None:
    store = OrderedStore()
    service = ScoreTurnService(store, clock=clock)
    results: dict[str, ScoredTurn] = {}

    def deliver() -> None:
        results[threading.current_thread().name] = service.score(_rude("t1"), CONFIG, "t1")

    threads = [threading.Thread(target=deliver, name=name) for name in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert set(results) == {"A", "B"}
    assert results["A"].verdict == results["B"].verdict  # retries agree (this part holds)
    assert results["A"].verdict.decision == "intervene"


def test_remote_tiers_come_from_the_factory_once_per_config_and_decide() -> None:
    breach = Finding("tier2_llm", "not_allowed_by_policy", 0.9, "breach", None, "tier2")
    tier, built = FakeTier(result=[breach]), []  # finds a breach in every turn
    svc = ScoreTurnService(
        InMemoryStateStore(), remote_tiers_for=lambda cfg: built.append(cfg) or [tier]
    )
    cfg = MirrorConfig(policies=["Never promise a refund date."])
    for i in range(2):
        event = ScoreTurnEvent.model_validate(
            {"call_id": "c1", "customer_text": "hi", "agent_text": f"Hello {i}."}
        )
        scored = svc.score(event, cfg, f"t{i}")
        assert scored.verdict.decided_by == "tier2"
        assert scored.verdict.tiers_run == ["tier0", "tier2"]
    assert len(built) == 1 and tier.calls == 2
    # The first intervention claimed the cooldown: the second is recorded as suppressed.
    assert svc.store.get_verdict(event.context(), "t1", svc.clock()).cooldown_suppressed
