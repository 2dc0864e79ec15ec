"""A bridge session on recording sockets (the scripted transport and TTS of transport.py and
tts.py), and the Plivo and agent messages the session tests send it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mirror.models import CallContext
from mirror_bridge.call_end import InMemoryEventSink
from mirror_bridge.session import BridgeSessionConfig, CallSession, SessionIO
from tests.fakes.transport import CALL_ID, FakeTransport
from tests.fakes.tts import FakeTTS

STREAM_ID = "87654321-4321-4321-4321-cba987654321"


@dataclass
class Wire:
    """Both sockets, recorded with arrival times."""

    plivo: list[dict[str, Any]] = field(default_factory=list)
    agent: list[dict[str, Any]] = field(default_factory=list)
    plivo_at: list[float] = field(default_factory=list)

    def enqueue(self, message: dict[str, Any], tag: str | None = None) -> bool:
        """The Plivo queue (`outbound.PlivoQueue`): written at once."""
        self.plivo.append(message)
        self.plivo_at.append(time.monotonic())
        return True

    def purge(self, tag: str) -> int:
        return 0  # nothing waits here

    async def send_agent(self, message: dict[str, Any]) -> None:
        self.agent.append(message)

    def io(self) -> SessionIO:
        return SessionIO(plivo=self, send_agent=self.send_agent)

    def events(self) -> list[str]:
        return [m["event"] for m in self.plivo]

    def checkpoints(self) -> list[str]:
        return [m["name"] for m in self.plivo if m["event"] == "checkpoint"]


def start_event(bidirectional: bool | None = None) -> dict[str, Any]:
    start: dict[str, Any] = {
        "callId": CALL_ID,
        "streamId": STREAM_ID,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    }
    if bidirectional is not None:
        start["bidirectional"] = bidirectional
    return {"event": "start", "sequenceNumber": 1, "start": start, "extra_headers": ""}


def frame(n: int) -> dict[str, Any]:
    """A distinct agent playAudio (payload encodes n)."""
    payload = f"{n:04d}".encode().hex()[:8].ljust(8, "A")
    return {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload},
    }


def turn(turn_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": "mirror.turn",
        "turn_id": turn_id,
        "customer_text": "a medium please, not the large",
        "agent_text": "One large coming up.",
        **fields,
    }


def played(name: str) -> dict[str, Any]:
    return {"event": "playedStream", "streamId": STREAM_ID, "name": name}


PLACE: dict[str, Any] = {"id": "c1", "name": "place_order", "args": {"item": "large"}}
LOOKUP: dict[str, Any] = {"id": "c2", "name": "lookup_order", "args": {"order": "42"}}


def gate_request(*calls: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "mirror.tool_gate",
        "request_id": "r1",
        "customer_text": "yes please",
        "tool_calls": list(calls),
    }


def make_session(
    transport: FakeTransport,
    *,
    tts: FakeTTS | None = None,
    events: InMemoryEventSink | None = None,
    extra: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[CallSession, Wire, InMemoryEventSink]:
    """A session on recording sockets; `extra` goes to CallSession (state=, rest=)."""
    wire = Wire()
    sink = events or InMemoryEventSink()
    config.setdefault("checkpoint_margin_s", 0.5)
    session = CallSession(
        CallContext(call_id=CALL_ID, tenant_id="acme"),
        wire.io(),
        functions=transport,
        tts=tts or FakeTTS(),
        events=sink,
        config=BridgeSessionConfig(**config),
        **(extra or {}),
    )
    return session, wire, sink


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)
