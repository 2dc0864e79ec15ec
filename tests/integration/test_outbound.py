"""The relay's Plivo queue as the session uses it (`enqueue`, `purge`): one ordered queue that
never makes the session wait, and an intervention drops the agent's audio still waiting in it."""

from __future__ import annotations

import asyncio

import pytest

from mirror_bridge.outbound import _Writer
from tests.conftest import run
from tests.fakes.session import CALL_ID, frame, make_session, start_event, turn, until
from tests.fakes.transport import CORRECTION, INTERVENE, FakeTransport

pytestmark = pytest.mark.integration


class BusySocket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)


def test_enqueue_never_waits_keeps_order_past_the_size_and_offers_wait_behind_it() -> None:
    async def scenario() -> None:
        socket = BusySocket()
        queue = _Writer("plivo", socket.send, 2, call_id=CALL_ID)
        assert all(
            queue.enqueue({"event": "checkpoint", "name": str(n)}, "mirror") for n in range(5)
        )
        assert not queue.offer({"event": "checkpoint", "name": "late"})  # full: it would wait
        socket.gate.set()
        await until(lambda: len(socket.sent) == 5)
        await queue.finish(1.0)
        assert [t.split('"name":"')[1][0] for t in socket.sent] == list("01234")
        assert not queue.enqueue({"event": "checkpoint", "name": "x"})  # closing: dropped

    run(scenario())


def test_purge_drops_only_the_tagged_messages_not_yet_written() -> None:
    async def scenario() -> None:
        socket = BusySocket()
        queue = _Writer("plivo", socket.send, 10, call_id=CALL_ID)
        for n, tag in enumerate(["agent", "agent", "mirror", "agent", "mirror"]):
            queue.enqueue({"event": "checkpoint", "name": f"{tag}{n}"}, tag)
        assert queue.purge("agent") == 2  # the first one is being written: not dropped
        socket.gate.set()
        await queue.finish(1.0)
        assert [t.split('"name":"')[1].split('"')[0] for t in socket.sent] == [
            "agent0",
            "mirror2",
            "mirror4",
        ]

    run(scenario())


def test_an_intervention_drops_the_agents_audio_still_queued_for_plivo() -> None:
    async def scenario() -> None:
        transport = FakeTransport(
            {"score_turn": [(0.05, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = make_session(transport, hold_budget_s=0.01)
        socket = BusySocket()
        queue = _Writer("plivo", socket.send, 100, call_id=CALL_ID)
        session.io = type(session.io)(plivo=queue, send_agent=wire.send_agent)
        await session.on_start(start_event())
        await session.on_mirror_message(turn("t1"))
        for n in range(4):
            await session.on_agent_audio(frame(n))
        await until(lambda: session.counts["budget_expired"] == 1)  # released: in the queue
        await until(lambda: session.counts["interventions"] == 1)
        assert session.counts["agent_frames_dropped"] == 3  # all but the one being written
        socket.gate.set()
        await until(lambda: any('"clearAudio"' in t for t in socket.sent))
        agent_payloads = [frame(n)["media"]["payload"] for n in range(4)]
        sent_agent = [p for p in agent_payloads if any(p in t for t in socket.sent)]
        assert sent_agent == agent_payloads[:1]  # only the frame already being written
        await session.close("stop")
        await queue.finish(1.0)

    run(scenario())
