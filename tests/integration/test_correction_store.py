"""CorrectionService's one-shot note in both state stores (in-memory, and DynamoDB under
in-process moto): stored and read once, expired with its TTL, never stacked or resurrected."""

from __future__ import annotations

import pytest

from mirror.correction import CorrectionService
from mirror.state import StateStore
from tests.fakes.llm import correction_llm
from tests.support.corrections import NOW, SAMPLE, ctx, event, generate
from tests.support.state import STORE_KINDS, store_of

pytestmark = pytest.mark.integration


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest) -> StateStore:
    return store_of(request, moto_client=True)


# --- the note in the store, idempotency -------------------------------------------------------


def test_note_is_stored_and_read_once(any_store: StateStore) -> None:
    result = generate(CorrectionService(any_store, correction_llm(), clock=lambda: NOW)).result
    assert result.note_stored
    assert any_store.take_override(ctx(), NOW + 1) == result.override_note
    assert any_store.take_override(ctx(), NOW + 2) is None


def test_note_expires_with_its_ttl(any_store: StateStore) -> None:
    service = CorrectionService(any_store, clock=lambda: NOW, note_ttl_s=60)
    generate(service)
    assert any_store.take_override(ctx(), NOW + 61) is None


def test_regenerating_the_same_turn_neither_asks_again_nor_stacks_notes(
    any_store: StateStore,
) -> None:
    llm = correction_llm()
    clock = iter([NOW, NOW + 1, NOW + 2, NOW + 3])
    service = CorrectionService(any_store, llm, clock=lambda: next(clock))
    first = generate(service).result
    assert any_store.take_override(ctx(), NOW + 1.5) == first.override_note  # the next turn

    again = generate(service).result  # a retry after the agent took the note
    assert again.replayed and not first.replayed
    assert again.model_dump(exclude={"replayed"}) == first.model_dump(exclude={"replayed"})
    assert len(llm.calls) == 1
    assert any_store.take_override(ctx(), NOW + 2.5) is None  # not resurrected

    other = generate(service, turn_id="t-0004").result  # a new turn's correction
    assert not other.replayed and len(llm.calls) == 2
    assert any_store.take_override(ctx(), NOW + 3.5) == other.override_note
    assert any_store.take_override(ctx(), NOW + 3.6) is None


def test_a_newer_correction_replaces_an_untaken_note(any_store: StateStore) -> None:
    service = CorrectionService(any_store, clock=lambda: NOW)
    generate(service, turn_id="t1")
    second = generate(
        service, event(verdict={**SAMPLE["verdict"], "reasons": []}), turn_id="t2"
    ).result
    assert any_store.take_override(ctx(), NOW + 1) == second.override_note
    assert any_store.take_override(ctx(), NOW + 1) is None
