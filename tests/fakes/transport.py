"""The bridge's function transport (ScoreTurn, GateTool, GenerateCorrection) with scripted
answers, and the answers most tests script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mirror_bridge.transport import FunctionError

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


def gate_result(decision: str) -> dict[str, Any]:
    """A whole GateResult for tool call c1 (place_order, irreversible): the session validates
    GateTool's answer."""
    line = None if decision == "allow" else "Let me check."
    return {
        "call_id": "c",
        "tenant_id": "acme",
        "decision": decision,
        "spoken_line": line,
        "decisions": [
            {
                "tool_call_id": "c1",
                "name": "place_order",
                "decision": decision,
                "irreversible": True,
                "reasons": [],
                "spoken_line": line,
                "decided_by": "tier0",
                "failure": None,
            }
        ],
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
