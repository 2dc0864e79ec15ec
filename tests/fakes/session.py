"""Fakes for the bridge session tests: a scripted function transport, a TTS, recording sockets,
and a session built on them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mirror.models import CallContext
from mirror_bridge.call_end import InMemoryEventSink
from mirror_bridge.session import BridgeSessionConfig, CallSession, SessionIO
from mirror_bridge.transport import FunctionError

STREAM_ID = "87654321-4321-4321-4321-cba987654321"
CALL_ID = "12345678-1234-1234-1234-123456789abc"

ALLOW: dict[str, Any] = {"decision": "allow", "score": 0.0}
INTERVENE: dict[str, Any] = {
    "decision": "intervene",
    "score": 0.9,
    "reasons": [],
    "buffer_text": "Let me make sure I got that right.",
}
CORRECTION: dict[str, Any] = {  # a whole CorrectionResult: the session validates answers
    "call_id": CALL_ID,
    "tenant_id": "acme",
    "turn_id": "t1",
    "correction_text": "Sorry, that was the medium, not the large.",
    "override_note": "The caller retracted the large; confirm the medium.",
    "source": "template",
    "note_source": "template",
    "reason_code": "wrong_variant",
    "check": None,
    "note_stored": True,
}

Script = dict[str, Any] | FunctionError | Callable[[dict[str, Any]], Any]


@dataclass
class Call:
    name: str
    payload: dict[str, Any]
    started: float
    finished: float | None = None


@dataclass
class FakeTransport:
    """Answers per function name from a list of (delay_s, answer) steps; the last repeats.
    An answer may be a dict, a FunctionError to raise, or a callable of the payload."""

    script: dict[str, list[tuple[float, Script]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    async def invoke(self, name: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        call = Call(name, payload, time.monotonic())
        self.calls.append(call)
        steps = self.script.get(name) or [(0.0, FunctionError(name, "transport", "unscripted"))]
        index = min(sum(1 for c in self.calls if c.name == name) - 1, len(steps) - 1)
        delay, answer = steps[index]
        try:
            if delay > timeout_s:
                await asyncio.sleep(timeout_s)
                raise FunctionError(name, "timeout", "scripted timeout")
            await asyncio.sleep(delay)
            if isinstance(answer, FunctionError):
                raise answer
            return dict(answer(payload) if callable(answer) else answer)
        finally:
            call.finished = time.monotonic()

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


@dataclass
class FakeTTS:
    """Deterministic "speech": one byte value per text, 8 bytes per character (1 ms each)."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0

    async def synthesize(self, text: str, voice: str) -> bytes:
        self.calls.append((text, voice))
        await asyncio.sleep(self.delay_s)
        return bytes([len(text) % 200 + 1]) * (8 * len(text))


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
