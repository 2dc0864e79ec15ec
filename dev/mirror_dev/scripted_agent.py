"""A scripted voice agent: the WebSocket server the bridge connects to for each call.

It receives the relayed Plivo events, and per call runs a script (an async function of
`AgentCall`) that sends agent audio (playAudio, checkpoints), Mirror turn annotations and
tool-gate requests. Canned scripts: `echo` (plays caller audio straight back; benchmarks),
`clean_order` (a correct order) and `retracted_item_order` (the scripted mistake: the caller
takes the garlic bread back, and `place_order` keeps it), and `retracted_pizza_order`: a mistake
the real Tier 0 judge catches with no LLM (its retraction check reads a take-back within one
sentence, so "... garlic bread. Actually, no garlic bread." is not one; ScoreTurn allows that
turn). tests/e2e/test_e2e.py plays `retracted_pizza_order` against the real handlers.
Standard library plus `websockets`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

FRAME_BYTES = 160
TONE = bytes(range(0, 256, 2))[:80] * 2  # not silence: distinguishable in `heard`


@dataclass
class AgentCall:
    """One call as the agent sees it."""

    conn: ServerConnection
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stream_id: str | None = None
    call_id: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._arrived = asyncio.Event()

    def events(self, *names: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if not names or m.get("event") in names]

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.conn.send(message if isinstance(message, str) else json.dumps(message))

    async def say(self, frames: int = 5, audio: bytes = TONE, checkpoint: str | None = None,
                  frame_bytes: int = FRAME_BYTES) -> None:  # fmt: skip
        """Agent speech: `frames` playAudio messages (20 ms each by default), then a checkpoint."""
        chunk = audio[:frame_bytes].ljust(frame_bytes, b"\xff")
        for _ in range(frames):
            await self.send({"event": "playAudio", "media": {
                "contentType": "audio/x-mulaw", "sampleRate": 8000,
                "payload": base64.b64encode(chunk).decode(),
            }})  # fmt: skip
        if checkpoint:
            await self.send({"event": "checkpoint", "streamId": self.stream_id, "name": checkpoint})

    async def turn(self, turn_id: str, customer_text: str, agent_text: str,
                   tool_calls: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
        await self.send({"event": "mirror.turn", "turn_id": turn_id,
                         "customer_text": customer_text, "agent_text": agent_text,
                         "tool_calls": tool_calls or []})  # fmt: skip

    async def tool_gate(self, request_id: str, tool_calls: list[dict[str, Any]],
                        customer_text: str = "", agent_text: str = "") -> None:  # fmt: skip
        await self.send({"event": "mirror.tool_gate", "request_id": request_id,
                         "customer_text": customer_text, "agent_text": agent_text,
                         "tool_calls": tool_calls})  # fmt: skip

    async def wait_event(self, name: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        """The `count`-th received message with this event (waits for it)."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"agent never got {count}x {name}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return found[count - 1]

    def _record(self, message: dict[str, Any]) -> None:
        self.received.append((time.monotonic(), message))
        if message.get("event") == "start":
            start = message.get("start") or {}
            self.stream_id, self.call_id = start.get("streamId"), start.get("callId")
        self._arrived.set()


Script = Callable[[AgentCall], Awaitable[None]]


async def idle(call: AgentCall) -> None:
    """Say nothing; just record."""
    await call.closed.wait()


async def echo(call: AgentCall) -> None:
    """Play every inbound media frame straight back (the benchmarks' echo agent)."""
    seen = 0
    while not call.closed.is_set():
        media = call.events("media")
        for m in media[seen:]:
            await call.send({"event": "playAudio", "media": {
                "contentType": "audio/x-mulaw", "sampleRate": 8000,
                "payload": m["media"]["payload"]}})  # fmt: skip
        seen = len(media)
        call._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call._arrived.wait(), 0.5)


ORDER_CUSTOMER = "Two large pepperoni pizzas and garlic bread. Actually, no garlic bread."


def order_call(item_kept: bool) -> dict[str, Any]:
    items = [{"sku": "pizza-pepperoni-large", "qty": 2}]
    if item_kept:
        items.append({"sku": "garlic-bread", "qty": 1})
    return {"id": "call-1", "name": "place_order", "args": {"items": items}}


def _order_script(mistake: bool) -> Script:
    async def script(call: AgentCall) -> None:
        await call.wait_event("media")
        agent_text = (
            "Two large pepperoni pizzas and a garlic bread, placing that now."
            if mistake
            else "Two large pepperoni pizzas, no garlic bread, placing that now."
        )
        await call.turn("t1", ORDER_CUSTOMER, agent_text, [order_call(item_kept=mistake)])
        await call.say(frames=10, checkpoint="agent-t1")
        await call.tool_gate("g1", [order_call(item_kept=mistake)], ORDER_CUSTOMER, agent_text)
        await call.closed.wait()

    return script


clean_order = _order_script(mistake=False)
retracted_item_order = _order_script(mistake=True)


PIZZA_CUSTOMER = "A large pepperoni, actually no, make that a cheese pizza."
PIZZA_MISTAKE = "One large pepperoni, I'm placing your order now."


def pizza_order() -> dict[str, Any]:
    """`place_order` with the item the caller took back."""
    return {"id": "c1", "name": "place_order",
            "args": {"items": [{"sku": "pepperoni-large", "qty": 1}]}}  # fmt: skip


async def retracted_pizza_order(call: AgentCall) -> None:
    """After the caller's first words: the turn reading back the retracted "large pepperoni"
    (ScoreTurn: intervene), its audio (10 frames and checkpoint `agent-t1`), then, once the
    override came (or 10 s passed), a tool-gate request `g1` for `place_order` still with the
    retracted item (GateTool: block)."""
    await call.wait_event("media")
    await call.turn("t1", PIZZA_CUSTOMER, PIZZA_MISTAKE)
    await call.say(frames=10, checkpoint="agent-t1")
    with contextlib.suppress(TimeoutError):
        await call.wait_event("mirror.override", timeout=10)
    await call.tool_gate("g1", [pizza_order()], PIZZA_CUSTOMER, PIZZA_MISTAKE)
    await call.closed.wait()


class ScriptedAgent:
    """`async with ScriptedAgent(script) as agent:` serves ws://127.0.0.1:{agent.port}."""

    def __init__(self, script: Script = idle, host: str = "127.0.0.1") -> None:
        self.script = script
        self.host = host
        self.calls: list[AgentCall] = []
        self.connected = asyncio.Event()
        self._server: Server | None = None
        self.request_headers: list[dict[str, str]] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/agent"

    async def __aenter__(self) -> ScriptedAgent:
        self._server = await serve(self._handle, self.host, 0, compression=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, conn: ServerConnection) -> None:
        call = AgentCall(conn)
        if conn.request is not None:
            self.request_headers.append(dict(conn.request.headers.raw_items()))
        self.calls.append(call)
        self.connected.set()
        task = asyncio.create_task(self._run_script(call))
        try:
            async for frame in conn:
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                call._record(message)
        except Exception:
            pass
        finally:
            call.closed.set()
            call._arrived.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)

    async def _run_script(self, call: AgentCall) -> None:
        await call.wait_event("start", timeout=10)
        with contextlib.suppress(Exception):  # the socket may close under the script
            await self.script(call)
