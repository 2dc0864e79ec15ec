"""Interventions under duplicate and late Plivo events (issue 13, item 12): an intervention
always ends with the correction or an explicit hand-back, never in silence; a note delivered
is a note consumed."""

from __future__ import annotations

import asyncio
import time

import pytest

from mirror.models import CallContext
from mirror.state import InMemoryStateStore
from tests.conftest import run
from tests.fakes.session import CALL_ID, frame, make_session, played, start_event, turn, until
from tests.fakes.transport import CORRECTION, INTERVENE, FakeTransport

pytestmark = pytest.mark.unit

CLEARED = {"event": "clearedAudio", "streamId": "s"}


async def _to_buffer(transport: FakeTransport, **kw: object):  # type: ignore[no-untyped-def]
    session, wire, sink = make_session(transport, hold_budget_s=0.5, **kw)  # type: ignore[arg-type]
    await session.on_start(start_event())
    await session.on_mirror_message(turn("t1"))
    for n in range(3):
        await session.on_agent_audio(frame(n))
    await until(lambda: len(wire.checkpoints()) == 1)
    return session, wire, sink


def _overrides(wire: object) -> list[dict[str, object]]:
    return [m for m in wire.agent if m["event"] == "mirror.override"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("duplicates", [1, 3])
def test_a_duplicate_cleared_audio_never_cancels_the_intervention(duplicates: int) -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _to_buffer(transport, checkpoint_margin_s=5.0)
        buffer_name = wire.checkpoints()[0]
        await session.on_plivo_event(CLEARED)  # answers Mirror's clearAudio
        for _ in range(duplicates):  # Plivo repeats it, or a late one arrives
            await session.on_plivo_event(CLEARED)
        await asyncio.sleep(0.02)
        assert session.checkpoints.pending == [buffer_name]  # the buffer line still plays
        await session.on_plivo_event(played(buffer_name))
        await until(lambda: len(wire.checkpoints()) == 2)  # the correction is played
        await session.on_plivo_event(played(wire.checkpoints()[1]))
        await until(lambda: bool(_overrides(wire)))
        assert _overrides(wire)[0]["note"] == CORRECTION["override_note"]
        assert session.interventions[0].outcome == "completed"
        assert session.counts["unsolicited_cleared"] == duplicates
        await session.close("stop")

    run(scenario())


def test_late_events_after_an_intervention_leave_the_next_one_whole() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _to_buffer(transport, checkpoint_margin_s=5.0)
        first = wire.checkpoints()[0]
        await session.on_plivo_event(CLEARED)
        await session.on_plivo_event(played(first))
        await until(lambda: len(wire.checkpoints()) == 2)
        await session.on_plivo_event(played(wire.checkpoints()[1]))
        await until(lambda: len(_overrides(wire)) == 1)
        # a second intervention; meanwhile the first one's events arrive again, late
        await session.on_mirror_message(turn("t2"))
        await until(lambda: len(wire.checkpoints()) == 3)
        await session.on_plivo_event(CLEARED)  # answers the second clearAudio
        await session.on_plivo_event(played(first))  # late duplicate ack
        await session.on_plivo_event(CLEARED)  # late duplicate clearedAudio
        await session.on_plivo_event(start_event())  # a late, repeated start changes nothing
        await session.on_plivo_event(played(wire.checkpoints()[2]))
        await until(lambda: len(wire.checkpoints()) == 4)
        await session.on_plivo_event(played(wire.checkpoints()[3]))
        await until(lambda: len(_overrides(wire)) == 2)
        assert [iv.outcome for iv in session.interventions] == ["completed", "completed"]
        await session.close("stop")

    run(scenario())


def test_a_queue_cleared_under_the_buffer_line_still_ends_with_a_hand_back() -> None:
    """Mirror's own clear (a newer intervention) supersedes: the newer one hands back. A
    buffer line whose ack never comes (Plivo dropped it) times out and the intervention goes
    on to the correction and the hand-back: never silence."""

    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _to_buffer(transport, checkpoint_margin_s=0.05)
        # no ack for the buffer line: the watchdog, then the correction, then the hand-back
        await until(lambda: len(wire.checkpoints()) == 2, timeout=3)
        await until(lambda: bool(_overrides(wire)), timeout=3)
        assert session.interventions[0].outcome == "completed"
        assert session.counts["checkpoint_timeouts"] == 2
        await session.close("stop")

    run(scenario())


# --- a note delivered is a note consumed ------------------------------------------------------


def _store_with_note(note: str) -> InMemoryStateStore:
    store = InMemoryStateStore()
    store.put_override(CallContext(call_id=CALL_ID, tenant_id="acme"), note, time.time(), 3600)
    return store


def test_the_stored_note_is_consumed_once_the_bridge_delivered_it() -> None:
    async def scenario() -> None:
        store = _store_with_note(CORRECTION["override_note"])  # as GenerateCorrection stored it
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = await _to_buffer(
            transport, checkpoint_margin_s=5.0, extra={"notes": store}
        )
        await session.on_plivo_event(played(wire.checkpoints()[0]))
        await until(lambda: len(wire.checkpoints()) == 2)
        await session.on_plivo_event(played(wire.checkpoints()[1]))
        await until(lambda: session.counts["override_notes_consumed"] == 1)
        assert _overrides(wire)[0]["note"] == CORRECTION["override_note"]
        ctx = CallContext(call_id=CALL_ID, tenant_id="acme")
        assert store.take_override(ctx, time.time()) is None  # cannot be taken again
        await session.close("stop")

    run(scenario())


def test_a_note_the_bridge_did_not_deliver_is_left_for_the_agent() -> None:
    """The allow twin: a correction whose note was not stored (the fallback path) takes
    nothing from the store."""

    async def scenario() -> None:
        store = _store_with_note("an operator's note")
        unstored = {**CORRECTION, "note_stored": False}
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, unstored)]}
        )
        session, wire, _ = await _to_buffer(
            transport, checkpoint_margin_s=5.0, extra={"notes": store}
        )
        await session.on_plivo_event(played(wire.checkpoints()[0]))
        await until(lambda: len(wire.checkpoints()) == 2)
        await session.on_plivo_event(played(wire.checkpoints()[1]))
        await until(lambda: bool(_overrides(wire)))
        await asyncio.sleep(0.05)
        ctx = CallContext(call_id=CALL_ID, tenant_id="acme")
        assert store.take_override(ctx, time.time()) == "an operator's note"
        assert session.counts["override_notes_consumed"] == 0
        await session.close("stop")

    run(scenario())
