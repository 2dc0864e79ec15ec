"""Bridge figures: N concurrent simulated calls through the real bridge app on loopback.

The bridge (`mirror_bridge.app.create_app` with the production `CallSession`) runs under uvicorn
in a **subprocess** with its own event loop, as one Fargate task runs it; this process runs the
load: N Plivo peers (the client side of Plivo's bidirectional stream, V3-signed upgrade, `start`,
20 ms μ-law `media` frames on a fixed 20 ms schedule, each call at its own phase of it as
independent calls are (`--aligned`: all on two phases), `clearedAudio` for every `clearAudio`,
`playedStream` for every checkpoint once the queued audio has "played") and an echo agent (the
WebSocket server the bridge dials per call; it plays every caller frame straight back as
`playAudio`). Every frame carries its index in its audio bytes, so each one is matched on the
far side. The load shares the machine with the bridge, so it is kept cheap: plain asyncio
transports with websockets' sans-I/O protocol, every frame handled in `data_received` as it is
parsed, each caller frame sent from a timer callback at its slot, frames pre-encoded, uvloop when
installed, and its heap frozen before the calls start (its own collections would stall frames).

Figures (one JSON line with --json):
- `relay_p50_ms` / `relay_p99_ms`: a frame sent by one side to its arrival at the other through
  the bridge, both directions (caller media → agent, agent playAudio → Plivo). Frames the session
  holds or drops on purpose (the audio of a turn being scored or intervened on) are not relay
  samples.
- `late_frames`: frames that arrive more than 20 ms after their schedule. A caller frame's
  schedule is its slot on Plivo's 20 ms clock (so the load generator's own lag counts against
  the figure); an agent frame's is the moment the agent sent it.
- `clear_after_verdict_ms`: on the calls that make a scripted mistake (the agent reads back an
  item the caller took back), ScoreTurn's verdict arriving in the bridge to the `clearAudio`
  arriving at the Plivo peer (p50; max alongside). Both stamps are CLOCK_MONOTONIC, which Linux
  shares across processes.
- `verdict_ms`: the turn annotation arriving in the session to ScoreTurn's verdict (p50), with
  the local transport: the real ScoreTurn and GenerateCorrection handlers run in-process
  (`InProcessTransport`) with their state in the core's `InMemoryStateStore` (not moto: a moto
  round trip alone costs ~15 ms; `make demo` shows the moto path). The handler runs on the
  transport's thread pool as `make demo` runs it; `verdict_handler_ms` is its own time in that
  thread (p50; `verdict_handler_cpu_ms` the thread's CPU time, the same when nothing took the
  GIL from it), the rest is the hop there (`verdict_to_handler_ms`: the annotation to the
  handler starting in its thread) and back (`verdict_from_handler_ms`: the handler's end to the
  verdict on the loop), each p50 on its own.
- CPUs: the bridge runs on one CPU (`--bridge-cpus`, default the first), as its Fargate task
  has one vCPU (`Cpu: "1024"` in template.yaml), and the load, which stands in for Plivo and
  the agent (elsewhere in a real call), on the others (`--load-cpus`); `any` turns pinning off.
  On a single-CPU machine nothing is pinned.
- `host_stall_max_ms` and `host_stalls` (the five longest: CPU, seconds after the calls began,
  ms): a process on each CPU in use that only sleeps 2 ms at a time, woken more than 5 ms late.
  A sleeper normally wakes within a fraction of a millisecond even on a busy CPU; a gap of
  10 ms or more, above all one seen on both CPUs at the same moment, is the VM's vCPUs not
  running (the host's other work). One such stall puts every call's frames behind at once,
  and relay p99 and late frames with them.
- Context for all of them: `bridge_cpu_s` and `bridge_cpu_us_per_frame` (the bridge process's
  CPU from its first call; one event loop can give one core), `load_cpu_us_per_frame`,
  `bridge_gc_max_ms` (the longest garbage collection in the bridge once calls run),
  `loadavg_1m_before` (other work on the machine skews every figure), both event loops.

    python benchmarks/bridge.py --json                       # 200 calls, 10 s
    python benchmarks/bridge.py --calls 50 --seconds 5
    python benchmarks/bridge.py --json --profile /tmp/bridge.prof   # cProfile of the bridge
    python benchmarks/bridge.py --json --loop asyncio         # the bridge without uvloop
    python benchmarks/bridge.py --json --bridge-cpus any --load-cpus any   # no pinning
    python benchmarks/bridge.py --json --aligned              # every call's frames in 2 bursts
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets' pure-Python fallback
    from websockets.utils import apply_mask

REPO = Path(__file__).resolve().parent.parent
BRIDGE_DIR = REPO / "bridge"
# mirror_bridge, and mirror_dev (the Plivo peer, the in-process transport) also without .venv
sys.path[:0] = [str(BRIDGE_DIR), str(REPO / "dev")]
# The frames the load writes and its between-frames check are the bridge's own (tested against
# websockets' parser in tests/integration/test_push.py), not a second copy.
from mirror_bridge.compat import between_frames  # noqa: E402
from mirror_bridge.framing import frame  # noqa: E402

AUTH_TOKEN = "bench-auth-token"
NUMBER = "14155550100"
TENANT = "bench"
FRAME_S = 0.020
FRAME_BYTES = 160
LATE_S = 0.020
MISTAKE_CUSTOMER = "I'd like a large pepperoni, actually make it medium, and a garlic bread."
MISTAKE_AGENT = "One large pepperoni pizza and a garlic bread, coming right up."

DEPLOYED_WS = "mirror_bridge.plivo_socket:PlivoWebSocketProtocol"
"""uvicorn's `ws` as the image runs it (`plivo_socket.WS_PROTOCOL`; a test keeps them equal)."""

TARGETS: dict[str, float] = {
    "calls": 200,
    "relay_p99_ms": 5.0,
    "late_frames": 0,
    "clear_after_verdict_ms": 5.0,
    "verdict_ms": 2.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


# --- the bridge (subprocess) ----------------------------------------------------------------


def serve(
    port: int, agent_url: str, profile: str | None, ws: str, loop: str, cpus: set[int]
) -> None:
    """The bridge as `mirror_bridge.wiring` builds it (`BRIDGE_MODE=local`: in-process
    functions, offline speech) on 127.0.0.1:port, plus GET /bench/stats and POST /bench/stop."""
    if cpus:
        os.sched_setaffinity(0, cpus)  # before any thread starts: they all inherit it
    import logging

    import uvicorn

    from mirror.correction import CorrectionService
    from mirror.service import ScoreTurnService
    from mirror.state import InMemoryStateStore
    from mirror_bridge.app import create_app
    from mirror_bridge.call_end import InMemoryEventSink
    from mirror_bridge.settings import Settings
    from mirror_bridge.tenants import StaticTenants, TenantConfig
    from mirror_bridge.transport import SCORE_TURN
    from mirror_bridge.tts import OfflineTTS
    from mirror_bridge.wiring import build_session_factory
    from mirror_dev.in_process import InProcessTransport, load_handler_module

    logging.basicConfig(level=logging.ERROR)
    stamps: dict[str, dict[str, Any]] = {}
    cpu: dict[str, float] = {}

    def timed(handler: Any) -> Any:
        """ScoreTurn's own time, in the worker thread that runs it."""

        def run(event: dict[str, Any], context: Any) -> Any:
            began = time.monotonic()
            start = time.perf_counter()
            cpu_start = time.thread_time()
            try:
                return handler(event, context)
            finally:
                entry = stamps.setdefault(str(event.get("call_id")), {})
                entry["handler_s"] = time.perf_counter() - start
                entry["handler_cpu_s"] = time.thread_time() - cpu_start
                entry["handler_began"] = began
                entry["handler_ended"] = time.monotonic()

        return run

    gc_pauses: list[float] = []
    gc_started: list[float] = []

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        """Each collection's pause once calls run: a full one stalls every call's audio."""
        if phase == "start":
            gc_started[:] = [time.perf_counter()]
        elif gc_started and cpu:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(gc_timer)
    store = InMemoryStateStore()
    # The real handlers, two "containers" each, their services on the in-memory store (their
    # own `service()` would build a DynamoDB client).
    handlers: dict[str, Any] = {"score_turn": [], "generate_correction": []}
    swaps = contextlib.ExitStack()  # for the run's life: the containers' services swapped in
    for _ in range(2):
        score = load_handler_module("score_turn")
        swaps.enter_context(score.deps.using(scorer=ScoreTurnService(store)))
        handlers["score_turn"].append(timed(score.lambda_handler))
        correction = load_handler_module("generate_correction")
        swaps.enter_context(correction.deps.using(corrections=CorrectionService(store)))
        handlers["generate_correction"].append(correction.lambda_handler)
    base = InProcessTransport(handlers, containers=2)

    class StampedTransport:
        """ScoreTurn's answer time, stamped the moment it is back on the bridge's loop."""

        async def invoke(self, name: str, payload: dict[str, Any], timeout_s: float) -> Any:
            answer = await base.invoke(name, payload, timeout_s)
            if name == SCORE_TURN:
                entry = stamps.setdefault(payload["call_id"], {})
                entry["verdict_at"] = time.monotonic()
                entry["decision"] = answer.get("decision")
            return answer

    settings = Settings(
        auth_token=AUTH_TOKEN,
        public_base_url=f"http://127.0.0.1:{port}",
        signature_mode="enforce",
        mode="local",
        close_drain_s=2.0,
    )
    sink = InMemoryEventSink()
    supervision = build_session_factory(
        settings,
        transport=StampedTransport(),  # type: ignore[arg-type]
        tts=OfflineTTS(espeak=""),  # the pre-rendered clips: no subprocess per correction
        store=store,
        events=sink,
        environ={},
    )

    def factory(ctx: Any, io: Any) -> Any:
        """The production factory; the turn annotation's arrival in the session is stamped."""
        cpu.setdefault("first_call", time.process_time())
        session = supervision(ctx, io)
        on_mirror_message = session.on_mirror_message

        async def stamped(message: Any) -> None:
            if getattr(message, "event", None) == "mirror.turn":
                stamps.setdefault(ctx.call_id, {})["annotation_at"] = time.monotonic()
            await on_mirror_message(message)

        session.on_mirror_message = stamped  # type: ignore[method-assign]
        return session

    tenants = StaticTenants({NUMBER: TenantConfig(tenant_id=TENANT, agent_url=agent_url)})
    app = create_app(
        settings,
        tenants=tenants,
        store=store,
        session_factory=factory,
        lifespan=supervision.lifespan,
    )

    @app.get("/bench/stats")
    async def stats() -> dict[str, Any]:
        used = time.process_time() - cpu.get("first_call", time.process_time())
        loop = type(asyncio.get_running_loop())
        return {
            "stamps": stamps,
            "call_ended": len(sink.events),
            "bridge_cpu_s": round(used, 2),
            "gc_max_s": max(gc_pauses, default=0.0),
            "gc_frozen": gc.get_freeze_count(),
            "loop": f"{loop.__module__}.{loop.__qualname__}",
        }

    @app.post("/bench/stop")
    async def stop() -> dict[str, bool]:
        server.should_exit = True  # a graceful exit, so a profile gets written
        return {"ok": True}

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="error",
            ws=ws,  # type: ignore[arg-type]
            loop=loop,  # type: ignore[arg-type]
            ws_ping_interval=None,
            access_log=False,
        )
    )
    # Handlers print Powertools EMF lines on stdout: keep them out of the parent's pipe.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    if profile:
        import cProfile

        cProfile.runctx("server.run()", globals(), {"server": server}, profile)
    else:
        server.run()


# --- the load (this process) ----------------------------------------------------------------


@dataclass
class CallStats:
    index: int
    frames: int
    mistake_at: int | None
    """The frame index after which the agent annotates its mistaken turn (None: a clean call)."""
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    t0: float = 0.0
    in_sent: list[float] = field(default_factory=list)
    in_arrived: dict[int, float] = field(default_factory=dict)
    out_sent: dict[int, float] = field(default_factory=dict)
    out_arrived: dict[int, float] = field(default_factory=dict)
    annotated_at: float | None = None
    clear_at: float | None = None
    errors: list[str] = field(default_factory=list)


def frame_audio(n: int) -> bytes:
    """160 μ-law bytes carrying the frame index (any byte is a valid μ-law sample)."""
    return struct.pack(">I", n) + b"\xff" * (FRAME_BYTES - 4)


def frame_index(payload_b64: str) -> int:
    return int(struct.unpack(">I", base64.b64decode(payload_b64[:8])[:4])[0])


MAX_SIZE = 2**20
_FIN_TEXT = 0x81  # a final text frame's first byte


class _Socket(asyncio.Protocol):
    """One WebSocket on a plain asyncio transport, with websockets' sans-I/O protocol for the
    handshake, control frames and the close: every frame is handled in `data_received` as it
    is parsed (no task wake-up, no message queue per frame), so the load costs little beside
    the bridge. Once the handshake is done and websockets' parser sits between frames, whole
    unfragmented text frames are parsed here and text is written as frames directly (the same
    checks and bytes as websockets'); the first other frame (a ping, the close) hands the rest
    of the stream to websockets for good."""

    def __init__(self, protocol: ClientProtocol | ServerProtocol) -> None:
        self.protocol = protocol
        self.transport: asyncio.Transport | None = None
        self.open = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self._masked_in = isinstance(protocol, ServerProtocol)  # a client masks its frames
        self._fast = False
        self._slow = False
        self._rx = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self._fast:
            rest = self._fast_frames(self._rx + data if self._rx else data, now)
            if self._fast or not rest:
                self._rx = rest  # an incomplete frame, kept for the next read
                return
            data = rest
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self.on_text(event.data.decode(), now)
            elif isinstance(event, Request):
                assert isinstance(protocol, ServerProtocol)
                protocol.send_response(protocol.accept(event))
                self._opened()
            elif isinstance(event, Response):
                if protocol.handshake_exc is not None:
                    self._fail(protocol.handshake_exc)
                else:
                    self._opened()
        self.flush()  # pongs, the close handshake
        if protocol.close_expected() and self.transport is not None:
            self.transport.close()
        if not self._slow and self.open.done() and between_frames(protocol):
            self._fast = True

    def _fast_frames(self, data: bytes, now: float) -> bytes:
        """Handle the whole text frames at the front of `data`; returns what is left (an
        incomplete frame, or, with `_fast` now off, everything from the first other frame)."""
        pos, n = 0, len(data)
        while n - pos >= 2:
            head1, head2 = data[pos], data[pos + 1]
            length = head2 & 0x7F
            start = pos + 2
            if length == 126:
                if n - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                start += 2
            elif length == 127:
                if n - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8])
                start += 8
            masked = head2 & 0x80
            if head1 != _FIN_TEXT or bool(masked) != self._masked_in or length > MAX_SIZE:
                self._fast, self._slow = False, True
                return data[pos:]
            if masked:
                start += 4
            end = start + length
            if end > n:
                break
            payload = data[start:end]
            if masked:
                payload = apply_mask(payload, data[start - 4 : start])
            self.on_text(payload.decode(), now)
            pos = end
        return data[pos:] if pos else data

    def _opened(self) -> None:
        if not self.open.done():
            self.open.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.open.done():
            self.open.set_exception(exc)

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            data = self.protocol.data_to_send()
            if data:
                self.transport.write(b"".join(data))

    def send(self, text: str) -> None:
        if self.protocol.state is State.OPEN:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(frame(text.encode(), masked=not self._masked_in))

    def close(self) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()
        self._fail(ConnectionError("closed before the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_closed()

    def on_text(self, text: str, now: float) -> None:
        raise NotImplementedError

    def on_closed(self) -> None:
        return None


MEDIA_PREFIX = '{"event":"media"'
PAYLOAD_KEY = '"payload":"'
ECHO_HEAD = (
    '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"'
)
ECHO_TAIL = '"}}'


def _payload(text: str) -> str | None:
    """The media payload of a frame shaped as the load sends them, found without parsing it."""
    start = text.find(PAYLOAD_KEY)
    if start < 0:
        return None
    start += len(PAYLOAD_KEY)
    end = text.find('"', start)
    return text[start:end] if end > 0 else None


class EchoAgentSocket(_Socket):
    """The agent side of one call: echo each caller frame at once as playAudio; on a mistake
    call, annotate the mistaken turn after caller frame `mistake_at` (the echoes after it are
    the bridge's to drop). Caller frames are recognised by the text the peer sent them with
    (the bridge forwards them unchanged); anything else is parsed."""

    def __init__(self, calls: dict[str, CallStats]) -> None:
        super().__init__(ServerProtocol(max_size=2**20))
        self.calls = calls
        self.stats: CallStats | None = None
        self.verdicts = 0

    def on_text(self, text: str, now: float) -> None:
        stats = self.stats
        payload = _payload(text) if text.startswith(MEDIA_PREFIX) else None
        if payload is None:
            msg = json.loads(text)
            event = msg.get("event")
            if event == "start":
                self.stats = self.calls[msg["start"]["callId"]]
            elif event == "mirror.verdict":
                self.verdicts += 1
            elif event == "media" and stats is not None:
                stats.errors.append("agent: a media frame not as the peer sent it")
            return
        assert stats is not None
        n = frame_index(payload)
        stats.in_arrived[n] = now
        stats.out_sent[n] = time.monotonic()
        self.send(ECHO_HEAD + payload + ECHO_TAIL)
        if n == stats.mistake_at:
            stats.annotated_at = time.monotonic()
            self.send(
                json.dumps(
                    {
                        "event": "mirror.turn",
                        "turn_id": "t1",
                        "customer_text": MISTAKE_CUSTOMER,
                        "agent_text": MISTAKE_AGENT,
                    }
                )
            )


class PeerSocket(_Socket):
    """One call on Plivo's side: media on a fixed 20 ms schedule (each frame sent from a timer
    callback at its slot), a playout model for checkpoints, clearAudio answered."""

    def __init__(self, url: str, stats: CallStats) -> None:
        super().__init__(ClientProtocol(parse_uri(url), max_size=2**20))
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.play_end = 0.0
        self.acks: list[asyncio.TimerHandle] = []
        self.seq = 0
        self.sent_all = self.loop.create_future()
        self._head = (
            '{"event":"media","sequenceNumber":%d,"streamId":"' + stats.stream_id + '",'
            '"media":{"track":"inbound","timestamp":"%d","chunk":%d,"payload":"%s"},'
            '"extra_headers":"mirrorNumber=' + NUMBER + '"}'
        )
        self._payloads = [base64.b64encode(frame_audio(n)).decode() for n in range(stats.frames)]

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(json.dumps(message))

    def start(self) -> None:
        s = self.stats
        self.send_json(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "callId": s.call_id,
                    "streamId": s.stream_id,
                    "accountId": "MABENCHXXXXXXXXXXXXX",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": f"mirrorNumber={NUMBER}",
            }
        )
        s.t0 = time.monotonic() + 0.05
        self.loop.call_at(self._at(0), self._media, 0)

    def _at(self, n: int) -> float:
        """Frame n's slot on the loop's clock (time.monotonic, as the loop's on Linux)."""
        return self.loop.time() + (self.stats.t0 + n * FRAME_S - time.monotonic())

    def _media(self, n: int) -> None:
        s = self.stats
        if self.protocol.state is not State.OPEN:
            if not self.sent_all.done():
                self.sent_all.set_result(None)
            return
        text = self._head % (self._next(), int(time.time() * 1000), n + 1, self._payloads[n])
        s.in_sent.append(time.monotonic())
        self.send(text)
        if n + 1 < s.frames:
            self.loop.call_at(self._at(n + 1), self._media, n + 1)
        elif not self.sent_all.done():
            self.sent_all.set_result(None)

    def on_text(self, text: str, now: float) -> None:
        s = self.stats
        if text.startswith(ECHO_HEAD) and text.endswith(ECHO_TAIL):
            payload = text[len(ECHO_HEAD) : -len(ECHO_TAIL)]
            event = "playAudio"
            msg: dict[str, Any] = {}
        else:
            msg = json.loads(text)
            event = msg.get("event")
            payload = msg["media"]["payload"] if event == "playAudio" else ""
        if event == "playAudio":
            size = len(payload) * 3 // 4 - payload[-2:].count("=")
            self.play_end = max(now, self.play_end) + size / 8000
            if size == FRAME_BYTES:  # an echoed caller frame (Mirror's speech is longer)
                s.out_arrived.setdefault(frame_index(payload), now)
        elif event == "checkpoint":
            name = msg.get("name")
            delay = max(0.0, self.play_end - now)
            self.acks.append(self.loop.call_later(delay, self._played, name))
        elif event == "clearAudio":
            if s.clear_at is None:
                s.clear_at = now
            for handle in self.acks:
                handle.cancel()
            self.acks.clear()
            self.play_end = now
            self.send_json(
                {"sequenceNumber": self._next(), "event": "clearedAudio", "streamId": s.stream_id}
            )

    def _played(self, name: str) -> None:
        self.send_json(
            {
                "event": "playedStream",
                "sequenceNumber": self._next(),
                "streamId": self.stats.stream_id,
                "name": name,
            }
        )

    def on_closed(self) -> None:
        for handle in self.acks:
            handle.cancel()
        if not self.sent_all.done():
            self.sent_all.set_result(None)

    async def run(self, url: str, start_at: float) -> None:
        """Connect (V3-signed upgrade) at `start_at`, start, send every frame, stop after the
        last echoes, and wait for the bridge to close the stream."""
        from mirror_dev.plivo_peer import signed_headers

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        uri = parse_uri(url)
        await self.loop.create_connection(lambda: self, uri.host, uri.port)
        request = self.protocol.connect()  # type: ignore[union-attr]
        http_url = url.replace("ws://", "http://", 1)
        for key, value in signed_headers(AUTH_TOKEN, http_url).items():
            request.headers[key] = value
        self.protocol.send_request(request)  # type: ignore[union-attr]
        self.flush()
        await asyncio.wait_for(self.open, 30)
        try:
            self.start()
            await self.sent_all
            await asyncio.sleep(0.3)  # the last echoes
            self.send_json(
                {"event": "stop", "sequenceNumber": self._next(), "streamId": self.stats.stream_id}
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 5.0)
        finally:
            self.close()
            if self.transport is not None and not self.closed.done():
                self.transport.close()


class AgentServer:
    """The echo agent the bridge dials, one `EchoAgentSocket` per call."""

    def __init__(self, calls: dict[str, CallStats]) -> None:
        self.calls = calls
        self.server: asyncio.Server | None = None
        self.sockets: list[EchoAgentSocket] = []

    def _socket(self) -> EchoAgentSocket:
        sock = EchoAgentSocket(self.calls)
        self.sockets.append(sock)
        return sock

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._socket, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/agent"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()

    @property
    def verdicts(self) -> int:
        return sum(s.verdicts for s in self.sockets)


STALL_PROBE = """
import json, os, sys, time
cpu, until, step, late = (float(a) for a in sys.argv[1:5])
cpu = int(cpu)
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
gaps, prev = [], time.monotonic()
while prev < until:
    time.sleep(step)
    now = time.monotonic()
    if now - prev > step + late:
        gaps.append([prev, now - prev - step])
    prev = now
print(json.dumps(gaps))
"""
"""A process that only sleeps `STALL_STEP_S` at a time on one CPU, and notes each wake-up more
than `STALL_S` late: the CPU was not there for it (see `host_stall_max_ms` above)."""
STALL_STEP_S = 0.002
STALL_S = 0.005


def start_stall_probes(cpus: set[int], until: float) -> list[tuple[int, subprocess.Popen]]:
    """One probe per CPU the bridge and the load use (-1: unpinned), until CLOCK_MONOTONIC
    `until` (Linux shares it across processes, as the frames' stamps do)."""
    return [
        (
            cpu,
            subprocess.Popen(
                [sys.executable, "-c", STALL_PROBE, str(cpu), str(until)]
                + [str(STALL_STEP_S), str(STALL_S)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            ),
        )
        for cpu in sorted(cpus) or [-1]
    ]


def host_stalls(probes: list[tuple[int, subprocess.Popen]]) -> list[tuple[int, float, float]]:
    """(cpu, start, ms) for every stall a probe saw."""
    stalls: list[tuple[int, float, float]] = []
    for cpu, probe in probes:
        out, _ = probe.communicate(timeout=60)
        stalls += [(cpu, start, gap * 1000) for start, gap in json.loads(out or "[]")]
    return stalls


def start_bridge(
    port: int, agent_url: str, profile: str | None, ws: str, loop: str, cpus: set[int], log: Any
) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        CALL_TABLE="mirror-bench",
        POWERTOOLS_SERVICE_NAME="mirror-bench",
        POWERTOOLS_METRICS_NAMESPACE="MirrorBench",
        POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_TRACE_DISABLED="1",
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "MIRROR_CONFIG", "OPENAI_API_KEY"):
        env.pop(name, None)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port), agent_url]
    command += ["--ws", ws, "--loop", loop, "--bridge-cpus", format_cpus(cpus)]
    if profile:
        command += ["--profile", profile]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)


def wait_ready(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bridge exited with {process.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        time.sleep(0.05)
    raise RuntimeError("the bridge did not start")


def fetch_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/stats", timeout=10) as r:
        return json.loads(r.read())


def stop_bridge(port: int, process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/bench/stop", method="POST")
        urllib.request.urlopen(request, timeout=5).close()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def load(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from mirror_bridge.tuning import reserve_fd_table

    # as the bridge does at start-up: the table growing past 255 descriptors mid-ramp would
    # stall the load's loop (~10 ms), and its late frames count against the bridge
    reserve_fd_table()
    frames = max(1, round(args.seconds / FRAME_S))
    step = max(1, args.calls // args.mistakes) if args.mistakes else 0
    calls: list[CallStats] = []
    for i in range(args.calls):
        mistake = step and i % step == step - 1 and len(calls) < args.calls
        calls.append(CallStats(i, frames, mistake_at=(frames * 3 // 4) if mistake else None))
    by_id = {c.call_id: c for c in calls}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    load_cpu0 = usage.ru_utime + usage.ru_stime
    loadavg_before = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    agent = AgentServer(by_id)
    agent_url = await agent.start()
    port = free_port()
    process = start_bridge(port, agent_url, args.profile, args.ws, args.loop, args.bridge_cpus, log)
    try:
        await asyncio.to_thread(wait_ready, port, process)
        url = f"ws://127.0.0.1:{port}/plivo/stream"
        begin = time.monotonic() + 0.2
        starts = call_starts(begin, args.ramp, len(calls), aligned=args.aligned)
        probes = start_stall_probes(
            args.bridge_cpus | args.load_cpus, begin + args.ramp + args.seconds + FRAME_S
        )
        peers = [PeerSocket(url, c) for c in calls]
        # the load's own full collections would stall frames and count against the bridge
        gc.collect()
        gc.freeze()
        results = await asyncio.gather(
            *(p.run(url, start) for p, start in zip(peers, starts, strict=True)),
            return_exceptions=True,
        )
        for c, r in zip(calls, results, strict=True):
            if isinstance(r, BaseException):
                c.errors.append(f"peer: {r!r}")
        await asyncio.sleep(0.5)
        server = await asyncio.to_thread(fetch_stats, port)
        server["host_stalls"] = await asyncio.to_thread(host_stalls, probes)
        server["calls_began"] = begin
    finally:
        await asyncio.to_thread(stop_bridge, port, process)
        agent.close()
    me = resource.getrusage(resource.RUSAGE_SELF)
    server["load_cpu_s"] = round(me.ru_utime + me.ru_stime - load_cpu0, 2)
    server["loadavg_before"] = loadavg_before
    loop = type(asyncio.get_running_loop())
    server["load_loop"] = f"{loop.__module__}.{loop.__qualname__}"
    return summarize(args, calls, server)


def summarize(args: argparse.Namespace, calls: list[CallStats], server: dict) -> dict[str, Any]:
    stalls = server.get("host_stalls", [])
    began = server.get("calls_began", 0.0)
    relay: list[float] = []
    late = 0
    lost = 0
    send_lag: list[float] = []
    frames = 0
    for c in calls:
        for n, sent in enumerate(c.in_sent):
            frames += 1
            send_lag.append(sent - (c.t0 + n * FRAME_S))
            arrived = c.in_arrived.get(n)
            if arrived is None:
                lost += 1
                continue
            relay.append(arrived - sent)
            late += arrived - (c.t0 + n * FRAME_S) > LATE_S
        for n, sent in c.out_sent.items():
            if c.mistake_at is not None and n >= c.mistake_at:
                continue  # held, then dropped by the intervention: by design, not relay
            frames += 1
            arrived = c.out_arrived.get(n)
            if arrived is None:
                lost += 1
                continue
            relay.append(arrived - sent)
            late += arrived - sent > LATE_S
    stamps = server.get("stamps", {})
    clear_after: list[float] = []
    verdict: list[float] = []
    verdict_sent: list[float] = []
    handler: list[float] = []
    handler_cpu: list[float] = []
    to_handler: list[float] = []
    from_handler: list[float] = []
    interventions = 0
    for c in calls:
        stamp = stamps.get(c.call_id) or {}
        if "verdict_at" in stamp and "annotation_at" in stamp:
            verdict.append(stamp["verdict_at"] - stamp["annotation_at"])
        if "verdict_at" in stamp and c.annotated_at is not None:
            verdict_sent.append(stamp["verdict_at"] - c.annotated_at)
        if "handler_s" in stamp:
            handler.append(stamp["handler_s"])
            handler_cpu.append(stamp["handler_cpu_s"])
        if "handler_began" in stamp and "annotation_at" in stamp:
            to_handler.append(stamp["handler_began"] - stamp["annotation_at"])
        if "handler_ended" in stamp and "verdict_at" in stamp:
            from_handler.append(stamp["verdict_at"] - stamp["handler_ended"])
        if c.mistake_at is None:
            continue
        if stamp.get("decision") == "intervene" and c.clear_at is not None:
            interventions += 1
            clear_after.append(c.clear_at - stamp["verdict_at"])
    mistakes = sum(c.mistake_at is not None for c in calls)
    errors = [e for c in calls for e in c.errors]
    result: dict[str, Any] = {
        "calls": len(calls),
        "seconds": args.seconds,
        "frames": frames,
        "relay_p50_ms": ms(percentile(relay, 50)),
        "relay_p99_ms": ms(percentile(relay, 99)),
        "relay_max_ms": ms(max(relay) if relay else None),
        "late_frames": late,
        "lost_frames": lost,
        "client_send_lag_p99_ms": ms(percentile(send_lag, 99)),
        "mistake_calls": mistakes,
        "interventions": interventions,
        "clear_after_verdict_ms": ms(percentile(clear_after, 50)),
        "clear_after_verdict_max_ms": ms(max(clear_after) if clear_after else None),
        "verdict_ms": ms(percentile(verdict, 50)),
        "verdict_max_ms": ms(max(verdict) if verdict else None),
        "verdict_from_agent_send_ms": ms(percentile(verdict_sent, 50)),
        "verdict_handler_ms": ms(percentile(handler, 50)),
        "verdict_handler_cpu_ms": ms(percentile(handler_cpu, 50)),
        "verdict_to_handler_ms": ms(percentile(to_handler, 50)),
        "verdict_from_handler_ms": ms(percentile(from_handler, 50)),
        "verdict_transport": "in-process handlers (InProcessTransport), InMemoryStateStore",
        "call_ended_events": server.get("call_ended"),
        "errors": len(errors),
        "bridge_cpu_s": server.get("bridge_cpu_s"),
        "bridge_cpu_us_per_frame": round(server["bridge_cpu_s"] / frames * 1e6, 1)
        if frames and server.get("bridge_cpu_s") is not None
        else None,
        "bridge_gc_max_ms": ms(server.get("gc_max_s")),
        "bridge_gc_frozen": server.get("gc_frozen"),
        "load_cpu_s": server.get("load_cpu_s"),
        "load_cpu_us_per_frame": round(server["load_cpu_s"] / frames * 1e6, 1)
        if frames and server.get("load_cpu_s") is not None
        else None,
        "bridge_loop": server.get("loop"),
        "load_loop": server.get("load_loop"),
        "cpus": os.cpu_count(),
        "phases": "aligned" if args.aligned else "spread",
        "bridge_cpus": sorted(args.bridge_cpus) or "any",
        "load_cpus": sorted(args.load_cpus) or "any",
        "loadavg_1m_before": server.get("loadavg_before"),
        "host_stall_max_ms": round(max((ms for _, _, ms in stalls), default=0.0), 1),
        "host_stalls": [
            {"cpu": cpu, "at_s": round(at - began, 2), "ms": round(ms, 1)}
            for cpu, at, ms in sorted(stalls, key=lambda s: -s[2])[:5]
        ],
        "targets": TARGETS,
    }
    met = {
        "calls": len(calls) >= TARGETS["calls"] and not errors and lost == 0,
        "relay_p99_ms": result["relay_p99_ms"] is not None
        and result["relay_p99_ms"] <= TARGETS["relay_p99_ms"],
        "late_frames": late <= TARGETS["late_frames"] and lost == 0,
        "clear_after_verdict_ms": result["clear_after_verdict_ms"] is not None
        and interventions == mistakes
        and result["clear_after_verdict_ms"] <= TARGETS["clear_after_verdict_ms"],
        "verdict_ms": result["verdict_ms"] is not None
        and result["verdict_ms"] <= TARGETS["verdict_ms"],
    }
    result["met"] = met
    if errors:
        result["first_errors"] = errors[:3]
    return result


def call_starts(begin: float, ramp: float, n: int, *, aligned: bool = False) -> list[float]:
    """When each call starts: spread over `ramp` seconds, each at its own phase of the 20 ms
    frame clock, as independent calls start (the golden-ratio sequence spreads the phases
    evenly). `aligned` starts them on the ramp's steps alone: with the default 2 s for 200 calls
    that is every 10 ms, so every call's frames fall into the same two slots of each 20 ms."""
    golden = 0.6180339887498949
    return [
        begin + ramp * i / max(1, n) + (0.0 if aligned else (i * golden) % 1.0 * FRAME_S)
        for i in range(n)
    ]


def parse_cpus(text: str) -> set[int]:
    """'0,2' -> {0, 2}; 'any' -> set() (no pinning)."""
    if text.strip().lower() == "any":
        return set()
    try:
        cpus = {int(c) for c in text.split(",") if c.strip()}
    except ValueError:
        message = f"not a CPU list: {text!r} (e.g. 0 or 0,1, or any)"
        raise argparse.ArgumentTypeError(message) from None
    available = set(range(os.cpu_count() or 1))
    if not cpus or not cpus <= available:
        raise argparse.ArgumentTypeError(f"CPUs {text!r} are not among {sorted(available)}")
    return cpus


def format_cpus(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus))) or "any"


def default_cpus() -> tuple[set[int], set[int]]:
    """The bridge on one CPU (its Fargate task has one vCPU: template.yaml's `Cpu: "1024"`),
    the load on the rest; no pinning on a single CPU."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(), set()
    return {available[0]}, set(available[1:])


def load_loop_factory() -> Any:
    """uvloop for the load when it is installed (it shares the machine with the bridge)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bridge.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="caller audio per call")
    parser.add_argument("--mistakes", type=int, default=20, help="calls with a scripted mistake")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls start")
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="start calls on the ramp's steps only, not each at its own phase of the 20 ms frame "
        "clock (the default ramp then sends every call's frames in two bursts per 20 ms)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON line")
    parser.add_argument("--profile", help="write a cProfile of the bridge process here")
    parser.add_argument(
        "--ws",
        default=DEPLOYED_WS,
        help="uvicorn's WebSocket implementation (default: the bridge's, as deployed; auto: "
        "uvicorn's own, without the relay's push path)",
    )
    parser.add_argument(
        "--loop",
        default="auto",
        help="uvicorn's event loop for the bridge (default: auto, as deployed: uvloop if present)",
    )
    bridge_cpus, load_cpus = default_cpus()
    parser.add_argument(
        "--bridge-cpus",
        type=parse_cpus,
        default=bridge_cpus,
        help="CPUs the bridge process may run on, e.g. 0 or 0,1; 'any' for no pinning (default: "
        "one CPU, as its 1-vCPU Fargate task runs it, when the machine has two or more)",
    )
    parser.add_argument(
        "--load-cpus",
        type=parse_cpus,
        default=load_cpus,
        help="CPUs the load (the Plivo peers and the echo agent, which run elsewhere in a real "
        "call) may run on; 'any' for no pinning (default: the other CPUs)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "AGENT_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.profile, args.ws, args.loop, args.bridge_cpus)
        return 0
    if args.load_cpus:
        os.sched_setaffinity(0, args.load_cpus)  # before the loop and its threads start
    if args.calls < 1 or args.seconds <= 0 or not 0 <= args.mistakes <= args.calls:
        parser.error("need calls >= 1, seconds > 0 and 0 <= mistakes <= calls")
    with tempfile.TemporaryFile("w+") as log:
        result = asyncio.run(load(args, log), loop_factory=load_loop_factory())
        if (result["errors"] or result["lost_frames"]) and not args.json:
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
