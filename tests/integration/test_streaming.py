"""Streaming scoring: sentence boundaries, when partials fire, and how they are recorded.

Recording runs under both state stores (memory and moto DynamoDB); the clock is fixed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mirror.models import (
    AgentMessage,
    CallContext,
    Message,
    MirrorConfig,
    ScoreTurnEvent,
    Verdict,
)
from mirror.service import ScoreTurnService
from mirror.state import InMemoryStateStore, StateStore
from mirror.streaming import (
    FunctionScorer,
    ServiceScorer,
    StreamingScorer,
    first_sentence_end,
    partial_turn_id,
    without_require,
)
from tests.support.state import STORE_KINDS, store_of

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
TENANT = "pizzeria"
CALL = "CA-stream-1"
CTX = CallContext(call_id=CALL, tenant_id=TENANT)
CONFIG = MirrorConfig(tenant_id=TENANT)
SAMPLE_CALL = Path(__file__).resolve().parents[2] / "events" / "sample_call.json"

TOTAL = "Your total is $31.50. Shall I place the order?"

ALLOW = Verdict(decision="allow", score=0.0)
INTERVENE = Verdict(decision="intervene", score=0.9, buffer_text="One moment.")

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")


def tokens(text: str) -> list[str]:
    """LLM-like chunks: words and single punctuation marks, so "$31.50." arrives as
    " $", "31", ".", "50", "."."""
    out = _TOKEN.findall(text)
    assert "".join(out) == text
    return out


def growing(chunks: list[str]) -> list[str]:
    """The text so far after each chunk."""
    out, text = [], ""
    for c in chunks:
        text += c
        out.append(text)
    return out


def ends(text: str, *, final: bool = False) -> list[int]:
    """Every boundary, scanning on from each one as the scorer does."""
    out: list[int] = []
    while (e := first_sentence_end(text, out[-1] if out else 0, final=final)) is not None:
        out.append(e)
    return out


# --- boundaries -------------------------------------------------------------------------------

FIRES = [
    (TOTAL, "Your total is $31.50."),
    ("Is that right? Yes.", "Is that right?"),
    ("Great! Your order is in.", "Great!"),
    ("Really?! Yes.", "Really?!"),
    ('He said "stop." Then he left.', 'He said "stop."'),
    ("(That includes tax.) Anything else?", "(That includes tax.)"),
    ("Let me check... Yes, it's available.", "Let me check..."),
    ("Let me check\u2026 Yes.", "Let me check\u2026"),
    ("We open at 9 a.m. Shall I book it?", "We open at 9 a.m."),
    ("We open at 10.30 a.m. Shall I book it?", "We open at 10.30 a.m."),
    ("Pizzas, drinks, etc. Anything else?", "Pizzas, drinks, etc."),
    ("The table is yours at 10:30. See you then.", "The table is yours at 10:30."),
    ("Visit www.example.com. Anything else?", "Visit www.example.com."),
    ("I sent it to jo.smith@mail.com. Did it arrive?", "I sent it to jo.smith@mail.com."),
    ("No. That's not on the menu.", "No."),
    ("I'll take 2. Thanks!", "I'll take 2."),
    ("That's $31.50. 2 pizzas are on the way.", "That's $31.50."),
    ("Sizes:\n1. Small\n2. Large. Which one?", "Sizes:\n1. Small\n2. Large."),
    ("1. Pepperoni. Anything else?", "1. Pepperoni."),
    ("Dr. Smith is in. Shall I put you through?", "Dr. Smith is in."),
    ("Done.\nAnything else?", "Done."),
    ("Done.   Anything else?", "Done."),
]

WAITS = [
    "Your total is $31.",  # the next chunk may be "50"
    "Your total is $31. ",  # the next sentence has not started
    "Your total is $31.50",
    "It weighs 3.5 kilos.",  # punctuation at the end is undecided until the stream ends
    "See you at 10.30 a.m. tomorrow",
    "We open at 9 a.m. on Monday",
    "Dr. Smith will call you",
    "Mr. and Mrs. Jones are booked",
    "Ms. Lee is here",
    "It's on St. Mark's Place",
    "Toppings, e.g. Pepperoni or ham",
    "Fruit, i.e. Apples",
    "Liverpool vs. Everton tonight",
    "Table No. 5 is free",
    "It takes approx. 30 minutes",
    "It ships with the U.S. Postal Service",
    "Ask for John J. Smith",
    "1. Pepperoni pizza",
    "Options: 2. Large",
    "Hmm... let me check",
    "Write to jo.smith@mail.com",
    "Go to www.example.com",
    'He asked "why?" and left',
    "Is that right?",
]


@pytest.mark.parametrize(("text", "sentence"), FIRES, ids=[s for s, _ in FIRES])
def test_boundary_fires_after_the_first_sentence(text: str, sentence: str) -> None:
    assert (end := first_sentence_end(text)) is not None
    assert text[:end] == sentence


@pytest.mark.parametrize("text", WAITS)
def test_no_boundary_yet(text: str) -> None:
    assert first_sentence_end(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Your total is $31.", "Your total is $31."),
        ("See you at 10 a.m.", "See you at 10 a.m."),
        ("Please hold for Dr.", "Please hold for Dr."),
        ("Thanks! ", "Thanks!"),
        ('She said "yes."', 'She said "yes."'),
        ("Your total is $31.50", None),  # no punctuation: the flush scores it anyway
        ("Hmm... let me check", None),
    ],
)
def test_end_of_stream_is_a_boundary_after_punctuation(text: str, expected: str | None) -> None:
    end = first_sentence_end(text, final=True)
    assert (None if end is None else text[:end]) == expected


def test_start_skips_earlier_sentences() -> None:
    text = "Yes. Dr. Smith is in. Shall I?"
    first = first_sentence_end(text)
    assert first == 4
    second = first_sentence_end(text, first)
    assert second is not None and text[:second] == "Yes. Dr. Smith is in."
    assert first_sentence_end(text, second) is None
    assert ends(text, final=True) == [4, second, len(text)]


STREAMS = [
    TOTAL,
    "Sure! One large pepperoni and a garlic bread. What's the address?",
    "Dr. Lee sees you at 10.30 a.m. tomorrow. Write to jo.smith@mail.com... Thanks!",
    "Sizes:\n1. Small\n2. Large. It's approx. 30 min. from the U.S. border, e.g. Tijuana. Ok?",
]


@pytest.mark.parametrize("text", STREAMS)
def test_boundaries_never_change_as_text_arrives(text: str) -> None:
    """Every cut of the stream finds a prefix of the whole text's boundaries: a decision is
    never revised by a later chunk, so partial ids name the same prefix on a redelivery."""
    full = ends(text)
    assert full  # each stream has at least one boundary before its end
    for i in range(len(text) + 1):
        found = ends(text[:i])
        assert found == full[: len(found)], text[:i]


# --- StreamingScorer with a fake scorer -------------------------------------------------------


class Recorder:
    """A TurnScorer that logs its calls; intervenes when the text has a trigger word."""

    def __init__(self, trigger: str = "guaranteed") -> None:
        self.trigger = trigger
        self.calls: list[tuple[Any, ...]] = []

    def _judge(self, text: str) -> Verdict:
        return INTERVENE if self.trigger in text else ALLOW

    def partial(self, agent_text: str, sentences: int) -> Verdict:
        self.calls.append(("partial", agent_text, sentences))
        return self._judge(agent_text)

    def final(self, agent_text: str, decided: Verdict | None) -> Verdict:
        self.calls.append(("final", agent_text, decided))
        return decided if decided is not None else self._judge(agent_text)


def test_token_stream_fires_once_per_sentence_never_inside_the_amount() -> None:
    rec = Recorder()
    scorer = StreamingScorer(rec)
    fired = []
    for text in growing(tokens(TOTAL)):
        if scorer.score_partial(text) is not None:
            fired.append(text)
    # the boundary after "$31.50." is known when "Shall" arrives, not at "$31." or "$31.50."
    assert fired == ["Your total is $31.50. Shall"]
    assert rec.calls == [("partial", "Your total is $31.50.", 1)]
    assert scorer.sentences == 1

    assert scorer.flush(TOTAL) is ALLOW
    assert rec.calls[-1] == ("final", TOTAL, None)
    assert len(rec.calls) == 2


def test_char_by_char_stream_scores_each_prefix_once() -> None:
    text = "Dr. Lee sees you at 10.30 a.m. tomorrow. That's $31.50. Shall I book it?"
    rec = Recorder()
    scorer = StreamingScorer(rec)
    for i in range(1, len(text) + 1):
        scorer.score_partial(text[:i])
    assert rec.calls == [
        ("partial", "Dr. Lee sees you at 10.30 a.m. tomorrow.", 1),
        ("partial", "Dr. Lee sees you at 10.30 a.m. tomorrow. That's $31.50.", 2),
    ]


def test_several_sentences_in_one_chunk_are_scored_together() -> None:
    rec = Recorder()
    scorer = StreamingScorer(rec)
    assert scorer.score_partial("Hi. Yes. No") is ALLOW
    assert rec.calls == [("partial", "Hi. Yes.", 2)]
    assert scorer.score_partial("Hi. Yes. No") is None  # the same prefix is not rescored
    assert scorer.score_partial("Hi. Yes. No, thanks") is None
    assert len(rec.calls) == 1


def test_an_intervention_stops_scoring_and_stands_for_the_turn() -> None:
    rec = Recorder()
    scorer = StreamingScorer(rec)
    assert scorer.score_partial("Sure. Delivery is guaranteed. Wh") is INTERVENE
    assert scorer.stopped
    calls = list(rec.calls)
    assert scorer.score_partial("Sure. Delivery is guaranteed. What else? Any") is INTERVENE
    assert rec.calls == calls  # not rescored
    final = "Sure. Delivery is guaranteed. What else? Anything?"
    assert scorer.flush(final) is INTERVENE
    assert rec.calls[-1] == ("final", final, INTERVENE)


def test_flush_reuses_a_partial_that_scored_exactly_the_final_text() -> None:
    rec = Recorder()
    scorer = StreamingScorer(rec)
    scorer.score_partial("All set. Good")
    assert scorer.flush("All set. ") is ALLOW  # the agent was cut off after the sentence
    assert rec.calls[-1] == ("final", "All set. ", ALLOW)


def test_flush_without_partials_scores_the_whole_text_once() -> None:
    rec = Recorder()
    scorer = StreamingScorer(rec)
    assert scorer.score_partial("Delivery is guaranteed") is None
    assert scorer.flush("Delivery is guaranteed") is INTERVENE
    assert scorer.flush("Delivery is guaranteed") is INTERVENE
    assert rec.calls == [("final", "Delivery is guaranteed", None)]
    assert scorer.verdict is INTERVENE
    with pytest.raises(RuntimeError):
        scorer.score_partial("Delivery is guaranteed. More")


def test_streamed_text_must_grow() -> None:
    scorer = StreamingScorer(Recorder())
    scorer.score_partial("One pizza. Two")
    with pytest.raises(ValueError, match="extend"):
        scorer.score_partial("Two pizzas. Three")


def test_function_scorer_scores_partials_and_the_whole() -> None:
    seen: list[str] = []

    def score(text: str) -> Verdict:
        seen.append(text)
        return ALLOW

    scorer = StreamingScorer(FunctionScorer(score))
    scorer.score_partial("One. Two")
    scorer.flush("One. Two.")
    assert seen == ["One.", "One. Two."]


# --- recording through ScoreTurnService -------------------------------------------------------


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> StateStore:
    return store_of(request)


@pytest.fixture
def service(store: StateStore) -> ScoreTurnService:
    return ScoreTurnService(store, clock=lambda: T0)


def event(customer_text: str, **extra: Any) -> ScoreTurnEvent:
    return ScoreTurnEvent.model_validate(
        {"call_id": CALL, "tenant_id": TENANT, "customer_text": customer_text, **extra}
    )


def lines(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in messages]


def stream(scorer: StreamingScorer, text: str) -> list[tuple[str, Verdict]]:
    """Feed the text token by token; the (text so far, verdict) pairs that fired."""
    return [(t, v) for t in growing(tokens(text)) if (v := scorer.score_partial(t)) is not None]


def verdict_ids(store: StateStore) -> list[tuple[str, str]]:
    return [(v.turn_id, v.verdict.decision) for v in store.list_verdicts(CTX, T0)]


def test_partials_and_the_turn_are_recorded_the_history_once(
    service: ScoreTurnService, store: StateStore
) -> None:
    ev = event("How much is that?")
    scorer = StreamingScorer.for_service(service, ev, CONFIG, "t1")
    fired = stream(scorer, TOTAL)
    assert [(t, v.decision) for t, v in fired] == [("Your total is $31.50. Shall", "allow")]
    assert store.get_history(CTX, T0, 50) == []  # partials record their verdicts only
    assert verdict_ids(store) == [("t1#p1", "allow")]

    assert scorer.flush(TOTAL).decision == "allow"
    assert verdict_ids(store) == [("t1#p1", "allow"), ("t1", "allow")]
    assert lines(store.get_history(CTX, T0, 50)) == [
        ("customer", "How much is that?"),
        ("agent", TOTAL),
    ]

    # a redelivered stream (another scorer, other chunks) replays and records nothing new
    recorder = ServiceScorer(service, ev, CONFIG, "t1")
    again = StreamingScorer(recorder)
    assert again.score_partial(TOTAL) is not None  # the first sentence: "?" is still open
    assert again.flush(TOTAL).decision == "allow"
    assert [(r.turn_id, r.replayed) for r in recorder.results] == [("t1#p1", True), ("t1", True)]
    assert verdict_ids(store) == [("t1#p1", "allow"), ("t1", "allow")]
    assert len(store.get_history(CTX, T0, 50)) == 2


def test_partial_ids_name_the_prefix_not_the_call_order(
    service: ScoreTurnService, store: StateStore
) -> None:
    text = "Hello. Your total is $31.50. Shall I place the order?"
    ev = event("How much is that?")
    first = StreamingScorer.for_service(service, ev, CONFIG, "t1")
    stream(first, text)
    first.flush(text)
    assert verdict_ids(store) == [("t1#p1", "allow"), ("t1#p2", "allow"), ("t1", "allow")]

    # redelivered in one chunk: its first partial covers two sentences, and replays "#p2"
    recorder = ServiceScorer(service, ev, CONFIG, "t1")
    again = StreamingScorer(recorder)
    again.score_partial(text)
    again.flush(text)
    assert [(r.turn_id, r.replayed) for r in recorder.results] == [("t1#p2", True), ("t1", True)]
    assert len(store.list_verdicts(CTX, T0)) == 3


def _sample_retraction() -> tuple[str, str]:
    """The recorded call's first exchange: the caller retracts "large", the agent reads it."""
    messages = json.loads(SAMPLE_CALL.read_text())
    assert messages[0]["role"] == "customer" and "actually make it medium" in messages[0]["text"]
    assert messages[1]["role"] == "agent"
    return messages[0]["text"], messages[1]["text"]


def test_a_retraction_intervenes_before_the_rest_of_the_reply_arrives(
    service: ScoreTurnService, store: StateStore
) -> None:
    caller, reply = _sample_retraction()
    scorer = StreamingScorer.for_service(service, event(caller), CONFIG, "t1")
    fired = stream(scorer, reply)
    # "Sure!" is clean; the read-back of "large" intervenes
    assert [v.decision for _, v in fired][:2] == ["allow", "intervene"]
    text_then, verdict = fired[1]
    assert "address" not in text_then  # the question after the read-back has not arrived
    assert verdict.reasons[0].check == "retraction" and "large" in verdict.reasons[0].evidence
    assert verdict.buffer_text == CONFIG.buffer_text
    assert all(v == verdict for _, v in fired[1:])  # later partials: the same verdict
    assert verdict_ids(store) == [("t1#p1", "allow"), ("t1#p2", "intervene")]

    final = scorer.flush(reply)
    assert final == verdict  # not rescored: the partial's verdict stands for the turn
    assert verdict_ids(store)[-1] == ("t1", "intervene")
    assert store.get_verdict(CTX, "t1", T0) == verdict
    agent_lines = [m.text for m in store.get_history(CTX, T0, 50) if isinstance(m, AgentMessage)]
    assert agent_lines == [reply]

    # the partial claimed the call's cooldown: the next turn's intervention is suppressed
    nxt = service.score(event("Medium!", agent_text="One large pepperoni, then."), CONFIG, "t2")
    assert nxt.verdict.decision == "allow" and nxt.verdict.cooldown_suppressed


REFUND = MirrorConfig(
    tenant_id=TENANT, policies=['REQUIRE "5 to 7 business days" WHEN customer "refund"']
)
REFUND_REPLY = "I can help with that. Refunds take 5 to 7 business days. Anything else?"


def test_required_phrases_wait_for_the_flush(service: ScoreTurnService, store: StateStore) -> None:
    caller = "I'd like a refund for my order."
    ev = event(caller)
    # judged as a whole turn, the first sentence alone breaks the rule...
    alone = event(caller, agent_text="I can help with that.", call_id="CA-alone")
    assert service.score(alone, REFUND, "t1").verdict.decision == "intervene"
    assert without_require(REFUND).policies == []
    # ...but as a partial it may still come later in the turn
    scorer = StreamingScorer.for_service(service, ev, REFUND, "t1")
    assert [v.decision for _, v in stream(scorer, REFUND_REPLY)] == ["allow", "allow"]
    assert scorer.flush(REFUND_REPLY).decision == "allow"

    # and the flush judges the rule: a turn that never says it intervenes
    short_ev = event(caller, call_id="CA-short")
    other = StreamingScorer.for_service(service, short_ev, REFUND, "t1")
    short = "I can help with that. Anything else?"
    assert [v.decision for _, v in stream(other, short)] == ["allow"]
    assert other.flush(short).decision == "intervene"


def test_tool_calls_are_judged_at_the_flush(service: ScoreTurnService, store: StateStore) -> None:
    caller, _ = _sample_retraction()
    reply = "One large pepperoni and a garlic bread. Let me check the address."
    check = {"id": "c1", "name": "check_delivery_area", "args": {"address": "12 Elm Street"}}
    scorer = StreamingScorer.for_service(service, event(caller, tool_calls=[check]), CONFIG, "t1")
    assert {v.decision for _, v in stream(scorer, reply)} == {"intervene"}
    final = scorer.flush(reply)
    # judged again with the call; the partial's cooldown (same turn) does not suppress it
    assert final.decision == "intervene" and not final.cooldown_suppressed
    assert store.get_verdict(CTX, "t1", T0) == final

    order = {"id": "c2", "name": "place_order", "args": {"items": ["pepperoni pizza"]}}
    blocked = StreamingScorer.for_service(
        service, event(caller, tool_calls=[order], call_id="CA-2"), CONFIG, "t1"
    )
    assert {v.decision for _, v in stream(blocked, reply)} == {"intervene"}  # speech only
    verdict = blocked.flush(reply)
    assert verdict.decision == "block" and verdict.blocked_tool_call_ids == ["c2"]


def test_partial_turn_ids() -> None:
    assert partial_turn_id("t1", 3) == "t1#p3"
    with pytest.raises(ValueError, match="id"):
        StreamingScorer.for_service(
            ScoreTurnService(InMemoryStateStore()), event("Hi."), CONFIG, "t" * 256
        )
