"""Bridge figures: N concurrent simulated calls through the real bridge app on loopback.

The bridge (`mirror_bridge.app.create_app` with the production `CallSession`) runs under uvicorn
in a **subprocess** with its own event loop, as one Fargate task runs it; this process runs the
load: N Plivo peers (the client side of Plivo's bidirectional stream, V3-signed upgrade, `start`,
20 ms μ-law `media` frames on a fixed 20 ms schedule, `clearedAudio` for every `clearAudio`,
`playedStream` for every checkpoint once the queued audio has "played") and an echo agent (the
WebSocket server the bridge dials per call; it plays every caller frame straight back as
`playAudio`). Every frame carries its index in its audio bytes, so each one is matched on the
far side.

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
  round trip alone costs ~15 ms; `make demo` shows the moto path).

    python benchmarks/bridge.py --json                       # 200 calls, 10 s
    python benchmarks/bridge.py --calls 50 --seconds 5
    python benchmarks/bridge.py --json --profile /tmp/bridge.prof   # cProfile of the bridge
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
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

REPO = Path(__file__).resolve().parent.parent
BRIDGE_DIR = REPO / "bridge"

AUTH_TOKEN = "bench-auth-token"
NUMBER = "14155550100"
TENANT = "bench"
FRAME_S = 0.020
FRAME_BYTES = 160
LATE_S = 0.020
MISTAKE_CUSTOMER = "I'd like a large pepperoni, actually make it medium, and a garlic bread."
MISTAKE_AGENT = "One large pepperoni pizza and a garlic bread, coming right up."

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


def serve(port: int, agent_url: str, profile: str | None, ws: str) -> None:
    """The bridge as `mirror_bridge.wiring` builds it (`BRIDGE_MODE=local`: in-process
    functions, offline speech) on 127.0.0.1:port, plus GET /bench/stats and POST /bench/stop."""
    sys.path[:0] = [str(BRIDGE_DIR), str(REPO)]
    import logging

    import uvicorn
    from mirror_bridge.app import create_app
    from mirror_bridge.call_end import InMemoryEventSink
    from mirror_bridge.settings import Settings
    from mirror_bridge.tenants import StaticTenants, TenantConfig
    from mirror_bridge.transport import SCORE_TURN, InProcessTransport, load_handler_module
    from mirror_bridge.tts import OfflineTTS
    from mirror_bridge.wiring import build_session_factory

    from mirror.correction import CorrectionService
    from mirror.service import ScoreTurnService
    from mirror.state import InMemoryStateStore

    logging.basicConfig(level=logging.ERROR)
    store = InMemoryStateStore()
    # The real handlers, two "containers" each, their services on the in-memory store (their
    # own `service()` would build a DynamoDB client).
    handlers: dict[str, Any] = {"score_turn": [], "generate_correction": []}
    for _ in range(2):
        score = load_handler_module("score_turn")
        score._service = ScoreTurnService(store)
        handlers["score_turn"].append(score.lambda_handler)
        correction = load_handler_module("generate_correction")
        correction._service = CorrectionService(store)
        handlers["generate_correction"].append(correction.lambda_handler)
    base = InProcessTransport(handlers, containers=2)
    stamps: dict[str, dict[str, Any]] = {}
    cpu: dict[str, float] = {}

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
        return {"stamps": stamps, "call_ended": len(sink.events), "bridge_cpu_s": round(used, 2)}

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


class EchoAgent:
    """The agent side: per call, echo caller audio as playAudio. On a mistake call it annotates
    the mistaken turn after caller frame `mistake_at` (later echoes are the bridge's to drop)."""

    def __init__(self, calls: dict[str, CallStats]) -> None:
        self.calls = calls
        self.server: Any = None
        self.verdicts = 0

    async def start(self) -> str:
        from websockets.asyncio.server import serve

        self.server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_queue=None)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/agent"

    async def _handle(self, conn: Any) -> None:
        stats: CallStats | None = None
        try:
            async for text in conn:
                now = time.monotonic()
                msg = json.loads(text)
                event = msg.get("event")
                if event == "media":
                    assert stats is not None
                    payload = msg["media"]["payload"]
                    n = frame_index(payload)
                    stats.in_arrived[n] = now
                    reply = (
                        '{"event":"playAudio","media":{"contentType":"audio/x-mulaw",'
                        f'"sampleRate":8000,"payload":"{payload}"}}}}'
                    )
                    stats.out_sent[n] = time.monotonic()
                    await conn.send(reply)
                    if stats.mistake_at is not None and n == stats.mistake_at:
                        stats.annotated_at = time.monotonic()
                        await conn.send(
                            json.dumps(
                                {
                                    "event": "mirror.turn",
                                    "turn_id": "t1",
                                    "customer_text": MISTAKE_CUSTOMER,
                                    "agent_text": MISTAKE_AGENT,
                                }
                            )
                        )
                elif event == "start":
                    stats = self.calls[msg["start"]["callId"]]
                elif event == "mirror.verdict":
                    self.verdicts += 1
        except Exception as e:  # the bridge closed the socket: the call is over
            if stats is not None and not isinstance(e, (ConnectionError, asyncio.CancelledError)):
                with contextlib.suppress(Exception):
                    from websockets.exceptions import ConnectionClosed

                    if not isinstance(e, ConnectionClosed):
                        stats.errors.append(f"agent: {e!r}")


class Peer:
    """One call on Plivo's side: paced media, playout model for checkpoints, clear handling."""

    def __init__(self, url: str, stats: CallStats) -> None:
        self.url = url
        self.stats = stats
        self.ws: Any = None
        self.play_end = 0.0
        self.acks: list[asyncio.TimerHandle] = []
        self.seq = 0

    async def run(self, start_at: float) -> None:
        from websockets.asyncio.client import connect

        sys.path.insert(0, str(REPO))
        from tests.bridge.plivo_peer import signed_headers

        s = self.stats
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        http_url = self.url.replace("ws://", "http://", 1)
        self.ws = await connect(
            self.url,
            additional_headers=signed_headers(AUTH_TOKEN, http_url),
            compression=None,
            open_timeout=30,
            max_queue=None,
        )
        reader = asyncio.create_task(self._reader())
        try:
            await self._send(
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
            head = (
                '{"event":"media","sequenceNumber":%d,"streamId":"' + s.stream_id + '",'
                '"media":{"track":"inbound","timestamp":"%d","chunk":%d,"payload":"%s"},'
                '"extra_headers":"mirrorNumber=' + NUMBER + '"}'
            )
            payloads = [base64.b64encode(frame_audio(n)).decode() for n in range(s.frames)]
            s.t0 = time.monotonic() + 0.05
            for n in range(s.frames):
                delay = s.t0 + n * FRAME_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                text = head % (self._next(), int(time.time() * 1000), n + 1, payloads[n])
                s.in_sent.append(time.monotonic())
                await self.ws.send(text)
            await asyncio.sleep(0.3)  # the last echoes
            await self._send(
                {"event": "stop", "sequenceNumber": self._next(), "streamId": s.stream_id}
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 5.0)
        finally:
            reader.cancel()
            await self.ws.close()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def _reader(self) -> None:
        s = self.stats
        async for text in self.ws:
            now = time.monotonic()
            msg = json.loads(text)
            event = msg.get("event")
            if event == "playAudio":
                payload = msg["media"]["payload"]
                size = len(payload) * 3 // 4 - payload[-2:].count("=")
                self.play_end = max(now, self.play_end) + size / 8000
                if size == FRAME_BYTES:  # an echoed caller frame (Mirror's speech is longer)
                    s.out_arrived.setdefault(frame_index(payload), now)
            elif event == "checkpoint":
                loop = asyncio.get_running_loop()
                name = msg.get("name")
                self.acks.append(
                    loop.call_at(
                        max(loop.time(), loop.time() + self.play_end - now),
                        lambda n=name: asyncio.ensure_future(self._played(n)),
                    )
                )
            elif event == "clearAudio":
                if s.clear_at is None:
                    s.clear_at = now
                for handle in self.acks:
                    handle.cancel()
                self.acks.clear()
                self.play_end = now
                await self._send(
                    {
                        "sequenceNumber": self._next(),
                        "event": "clearedAudio",
                        "streamId": s.stream_id,
                    }
                )

    async def _played(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._send(
                {
                    "event": "playedStream",
                    "sequenceNumber": self._next(),
                    "streamId": self.stats.stream_id,
                    "name": name,
                }
            )


def start_bridge(
    port: int, agent_url: str, profile: str | None, ws: str, log: Any
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
    command += ["--ws", ws]
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
    agent = EchoAgent(by_id)
    agent_url = await agent.start()
    port = free_port()
    process = start_bridge(port, agent_url, args.profile, args.ws, log)
    try:
        await asyncio.to_thread(wait_ready, port, process)
        url = f"ws://127.0.0.1:{port}/plivo/stream"
        begin = time.monotonic() + 0.2
        ramp = args.ramp
        peers = [Peer(url, c) for c in calls]
        results = await asyncio.gather(
            *(p.run(begin + ramp * i / max(1, len(peers))) for i, p in enumerate(peers)),
            return_exceptions=True,
        )
        for c, r in zip(calls, results, strict=True):
            if isinstance(r, BaseException):
                c.errors.append(f"peer: {r!r}")
        await asyncio.sleep(0.5)
        server = await asyncio.to_thread(fetch_stats, port)
    finally:
        await asyncio.to_thread(stop_bridge, port, process)
        agent.server.close()
    me = resource.getrusage(resource.RUSAGE_SELF)
    server["load_cpu_s"] = round(me.ru_utime + me.ru_stime - load_cpu0, 2)
    server["loadavg_before"] = loadavg_before
    return summarize(args, calls, server)


def summarize(args: argparse.Namespace, calls: list[CallStats], server: dict) -> dict[str, Any]:
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
    interventions = 0
    for c in calls:
        stamp = stamps.get(c.call_id) or {}
        if "verdict_at" in stamp and "annotation_at" in stamp:
            verdict.append(stamp["verdict_at"] - stamp["annotation_at"])
        if "verdict_at" in stamp and c.annotated_at is not None:
            verdict_sent.append(stamp["verdict_at"] - c.annotated_at)
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
        "verdict_transport": "in-process handlers (InProcessTransport), InMemoryStateStore",
        "call_ended_events": server.get("call_ended"),
        "errors": len(errors),
        "bridge_cpu_s": server.get("bridge_cpu_s"),
        "bridge_cpu_us_per_frame": round(server["bridge_cpu_s"] / frames * 1e6, 1)
        if frames and server.get("bridge_cpu_s") is not None
        else None,
        "load_cpu_s": server.get("load_cpu_s"),
        "cpus": os.cpu_count(),
        "loadavg_1m_before": server.get("loadavg_before"),
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bridge.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="caller audio per call")
    parser.add_argument("--mistakes", type=int, default=20, help="calls with a scripted mistake")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls start")
    parser.add_argument("--json", action="store_true", help="one JSON line")
    parser.add_argument("--profile", help="write a cProfile of the bridge process here")
    parser.add_argument(
        "--ws",
        default="auto",
        help="uvicorn's WebSocket implementation (default: auto, as deployed)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "AGENT_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.profile, args.ws)
        return 0
    if args.calls < 1 or args.seconds <= 0 or not 0 <= args.mistakes <= args.calls:
        parser.error("need calls >= 1, seconds > 0 and 0 <= mistakes <= calls")
    with tempfile.TemporaryFile("w+") as log:
        result = asyncio.run(load(args, log))
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
