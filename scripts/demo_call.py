"""`make demo`: one phone call through the whole Mirror stack on this machine, offline.

What runs, all on 127.0.0.1:
- moto in server mode: the call table (created from template.yaml's `CallStateTable`), the
  number's tenant item in it, and an EventBridge rule that sends `CallEnded` to an SQS queue;
- the bridge app under uvicorn, with the production `CallSession` per call: ScoreTurn, GateTool
  and GenerateCorrection run in-process (`mirror_dev.in_process`, the real handlers from
  `functions/`) against the moto server, the final call state goes to the same table and
  `CallEnded` to moto's EventBridge;
- the scripted agent (`mirror_dev.scripted_agent`), a WebSocket server the bridge dials;
- the Plivo peer (`mirror_dev.plivo_peer`): Plivo's answer webhook, then the signed
  bidirectional audio stream; it plays what it gets faster than real time (`--speed`).

The call has one mistake: the caller changes "large" to "medium"; the agent reads it back
right, then, when the caller says yes, says "large" again and plans `place_order` with the large
pizza. Mirror intervenes on the speech (clearAudio, the buffer line, the correction, the
override note to the agent) and GateTool blocks the tool call; the agent recovers and the
corrected order goes through. The demo prints the timeline, the stored call state read back
from moto, and the `CallEnded` event read back from the queue, and exits non-zero if the call
did not go as scripted.

Extension point: `run_demo(out, after_call=[...])` (and the module-level `AFTER_CALL` list) run
callables with the `DemoResult` while the stack is still up (moto holds the call's state and
its CallEnded event); `run_demo(..., keep_alive=True)` leaves it up until `result.stack.close()`.

    python scripts/demo_call.py [--speed 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.local_stack import (  # noqa: E402
    DUMMY_ENV,
    BridgeServer,
    MotoServer,
    add_paths,
    environment,
    free_port,
)

add_paths()

TENANT_ID = "pizzeria"
NUMBER = "14155550123"
AUTH_TOKEN = "demo-plivo-auth-token"
TABLE_NAME = "mirror-demo-call-state"
QUEUE_NAME = "mirror-demo-call-ended"
DEFAULT_SPEED = 4.0

CALLER_1 = "Hi, I'd like a large pepperoni, actually make it medium, and a garlic bread."
AGENT_1 = "Sure! One medium pepperoni pizza and a garlic bread. Shall I place the order?"
CALLER_2 = "Yes, please."
AGENT_2 = "Great, placing your order for one large pepperoni pizza and a garlic bread now."
AGENT_3 = "Sorry about that: one medium pepperoni pizza and a garlic bread. Is that right?"
CALLER_3 = "Yes, that's right."
AGENT_4 = "Thanks! Placing your order now."
AGENT_FRAMES = 25  # 0.5 s of agent speech per turn (20 ms playAudio frames)
CALLER_FRAMES = (100, 40, 50)  # the caller's three lines, in 20 ms media frames
EXPECTED_VERDICTS = {"t1": "allow", "t2": "intervene", "t3": "allow", "t4": "allow"}
EXPECTED_GATES = {"g1": "block", "g2": "allow"}

ESPEAK_HINT = (
    "espeak-ng is not installed: Mirror's lines are pre-rendered clips (the correction is the "
    "generic 'one moment'). Install it for real offline speech: `sudo apt-get install "
    "espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)."
)
QUIET_ENV = {
    "CALL_TABLE": TABLE_NAME,
    "POWERTOOLS_SERVICE_NAME": "mirror-demo",
    "POWERTOOLS_METRICS_NAMESPACE": "MirrorDemo",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_TRACE_DISABLED": "1",
}
UNSET = (  # "" unsets: no profile, no real endpoint, no LLM keys (Tier 0 and templates only)
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "MIRROR_CONFIG", "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "BEDROCK_MODEL_ID", "MIRROR_LLM_PROVIDER",
    "MIRROR_LLM_MODEL", "HF_TOKEN", "POWERTOOLS_DEV", "POWERTOOLS_LOGGER_LOG_EVENT",
)  # fmt: skip
FUNCTION_LABELS = {
    "score_turn": "ScoreTurn",
    "gate_tool": "GateTool",
    "generate_correction": "GenerateCorrection",
}


class DemoFailed(Exception):
    """The stack could not run the call at all (as opposed to a call that went wrong)."""


# --- recording what crosses each wire -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    at: float
    """time.monotonic(); every part of the stack runs in this process."""
    lane: str
    event: str
    message: dict[str, Any]


@dataclass
class Recorder:
    entries: list[Entry] = field(default_factory=list)

    def add(self, at: float, lane: str, message: dict[str, Any]) -> None:
        self.entries.append(Entry(at, lane, str(message.get("event")), message))


class RecordingTransport:
    """The bridge's function transport, with every call and answer on the timeline."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    async def invoke(self, name: str, payload: dict[str, Any], timeout_s: float) -> Any:
        started = time.monotonic()
        try:
            answer = await self.inner.invoke(name, payload, timeout_s)
        except Exception as e:
            self.recorder.add(
                time.monotonic(), "function",
                {"event": name, "payload": payload, "error": str(e), "started": started},
            )  # fmt: skip
            raise
        self.recorder.add(
            time.monotonic(), "function",
            {"event": name, "payload": payload, "answer": answer, "started": started},
        )  # fmt: skip
        return answer


class RecordingSink:
    """CallEnded to moto's EventBridge, and onto the timeline."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.emitted = 0

    async def put_event(self, detail_type: str, detail: Any) -> None:
        await self.inner.put_event(detail_type, detail)
        self.emitted += 1
        self.recorder.add(time.monotonic(), "aws", {"event": detail_type, "detail": dict(detail)})


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}"[:300])


# --- the stack ------------------------------------------------------------------------------


@dataclass
class DemoStack:
    """Everything `run_demo` started; `close()` stops it and restores the environment."""

    moto: MotoServer
    bridge: BridgeServer
    app: Any
    supervision: Any
    """`mirror_bridge.wiring.Supervision`: the session factory and its shared parts."""
    transport: Any
    recorder: Recorder
    sink: RecordingSink
    tts_engine: str
    log: ListHandler
    _restore_env: Callable[[], None]
    _stdout: TextIO
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.bridge.stop()
            self.transport.shutdown()
            self.moto.stop()
        finally:
            logging.getLogger().removeHandler(self.log)
            sys.stdout = self._stdout
            self._restore_env()


def _warm_handlers() -> dict[str, list[Any]]:
    """The three handlers from functions/, each invoked once on a warm-up call (its own
    partition, tenant `warm-up`) so the demo call meets warm containers, as a Lambda with
    provisioned concurrency would: the first verdicts come within the 100 ms hold budget."""
    from mirror_dev.in_process import LambdaContext, load_handler_module

    turn = {
        "call_id": "warm-up", "tenant_id": "warm-up", "turn_id": "w1",
        "customer_text": "A large, actually a small coffee.", "agent_text": "One large coffee.",
    }  # fmt: skip
    events = {
        "score_turn": turn,
        "gate_tool": {
            **{k: v for k, v in turn.items() if k != "turn_id"},
            "tool_calls": [order("small", "warm-up-1")],
        },
        "generate_correction": {
            **turn,
            "verdict": {
                "decision": "intervene",
                "score": 0.9,
                "reasons": [
                    {
                        "check": "retraction",
                        "tier": "tier0",
                        "code": "wrong_variant",
                        "score": 0.9,
                        "evidence": "the agent says 'large', which the caller took back",
                    }
                ],
            },
        },  # fmt: skip
    }
    handlers: dict[str, list[Any]] = {}
    for name, event in events.items():
        module = load_handler_module(name)
        answer = module.lambda_handler(event, LambdaContext(name, deadline=time.monotonic() + 30))
        if "error" in answer:
            raise DemoFailed(f"warm-up {name}: {answer['error']}")
        handlers[name] = [module.lambda_handler]
    return handlers


def start_stack() -> DemoStack:
    """moto, then the bridge as `mirror_bridge.wiring` builds it for `BRIDGE_MODE=local`, with
    recording wrappers around its transport and event sink."""
    from mirror.state import DynamoDBStateStore
    from mirror_bridge.app import create_app
    from mirror_bridge.call_end import EventBridgeSink
    from mirror_bridge.settings import Settings
    from mirror_bridge.tenants import DynamoDBTenants
    from mirror_bridge.tts import OfflineTTS
    from mirror_bridge.wiring import build_session_factory
    from mirror_dev.in_process import InProcessTransport

    log = ListHandler()
    logging.getLogger().addHandler(log)
    logging.getLogger("mirror_bridge").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server's request lines
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    stdout = sys.stdout
    sys.stdout = io.StringIO()  # the handlers' Powertools JSON logs and EMF metric lines
    restore = environment({**DUMMY_ENV, **QUIET_ENV, **dict.fromkeys(UNSET, "")})
    moto = MotoServer(table_name=TABLE_NAME, queue_name=QUEUE_NAME, rule_name=QUEUE_NAME)
    try:
        moto.start()
        os.environ["AWS_ENDPOINT_URL"] = moto.endpoint  # the handlers' clients (restored later)
        recorder = Recorder()
        transport = RecordingTransport(InProcessTransport(_warm_handlers()), recorder)
        espeak = shutil.which("espeak-ng")
        sink = RecordingSink(EventBridgeSink(moto.client("events")), recorder)
        port = free_port()
        settings = Settings(
            auth_token=AUTH_TOKEN,
            public_base_url=f"http://127.0.0.1:{port}",
            signature_mode="enforce",
            mode="local",
            call_table=TABLE_NAME,
            close_drain_s=1.0,
        )
        supervision = build_session_factory(
            settings,
            transport=transport,  # type: ignore[arg-type]
            tts=OfflineTTS(espeak=espeak or ""),
            store=DynamoDBStateStore(TABLE_NAME, client=moto.client("dynamodb")),
            events=sink,
        )
        app = create_app(
            settings,
            tenants=DynamoDBTenants(TABLE_NAME, client=moto.client("dynamodb")),
            store=supervision.store,
            session_factory=supervision,
            lifespan=supervision.lifespan,  # renders the buffer line before the first call
        )
        bridge = BridgeServer(app, port).start()
    except BaseException:
        moto.stop()
        logging.getLogger().removeHandler(log)
        sys.stdout = stdout
        restore()
        raise
    return DemoStack(
        moto=moto, bridge=bridge, app=app, supervision=supervision, transport=transport.inner,
        recorder=recorder, sink=sink,
        tts_engine=f"espeak-ng ({espeak})" if espeak else "pre-rendered clips",
        log=log, _restore_env=restore, _stdout=stdout,
    )  # fmt: skip


# --- the call -------------------------------------------------------------------------------


def order(size: str, call_id: str) -> dict[str, Any]:
    items = [
        {"name": "pepperoni pizza", "size": size, "quantity": 1},
        {"name": "garlic bread", "quantity": 1},
    ]
    return {"id": call_id, "name": "place_order", "args": {"items": items}}


def agent_script(recorder: Recorder, done: asyncio.Event) -> Any:
    """The agent's side of the call (the mistake is turn t2 and its place_order)."""

    async def script(call: Any) -> None:
        raw_send = call.send

        async def send(message: dict[str, Any] | str) -> None:
            msg = json.loads(message) if isinstance(message, str) else message
            recorder.add(time.monotonic(), "agent→bridge", msg)
            await raw_send(message)

        call.send = send

        async def caller_says(frames: int) -> None:
            await call.wait_event("media", count=len(call.events("media")) + frames, timeout=30)

        await caller_says(CALLER_FRAMES[0])
        await call.turn("t1", CALLER_1, AGENT_1)
        await call.say(frames=AGENT_FRAMES, checkpoint="agent-t1")
        await call.wait_event("playedStream", count=1, timeout=30)
        await caller_says(CALLER_FRAMES[1])
        await call.turn("t2", CALLER_2, AGENT_2)
        await call.say(frames=AGENT_FRAMES, checkpoint="agent-t2")
        await call.tool_gate("g1", [order("large", "order-1")], CALLER_2, AGENT_2)
        await call.wait_event("mirror.override", timeout=30)
        await call.turn("t3", "", AGENT_3)
        await call.say(frames=AGENT_FRAMES, checkpoint="agent-t3")
        await call.wait_event("playedStream", count=2, timeout=30)
        await caller_says(CALLER_FRAMES[2])
        await call.turn("t4", CALLER_3, AGENT_4)
        await call.say(frames=AGENT_FRAMES, checkpoint="agent-t4")
        await call.tool_gate("g2", [order("medium", "order-2")], CALLER_3, AGENT_4)
        await call.wait_event("mirror.tool_decision", count=2, timeout=30)
        await call.wait_event("playedStream", count=3, timeout=30)
        done.set()
        await call.closed.wait()

    return script


@dataclass
class CallRecord:
    call_id: str
    stream_id: str
    answer_status: int
    answer_xml: str
    caller_frames: int
    agent_media: int
    session: Any
    agent_done: bool
    agent_url: str


def answer_webhook(base_url: str, call_id: str) -> tuple[int, str]:
    """Plivo's answer request for an inbound call to NUMBER, V3-signed."""
    from mirror_dev.plivo_peer import signed_headers

    url = f"{base_url}/plivo/answer"
    form = {"CallUUID": call_id, "From": "14155550100", "To": f"+{NUMBER}",
            "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    headers = signed_headers(AUTH_TOKEN, url, "POST", form)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, urlencode(form).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


async def play_call(stack: DemoStack, speed: float, timeout_s: float) -> CallRecord:
    from mirror_bridge.tenants import TenantConfig, tenant_item
    from mirror_dev.plivo_peer import PlivoPeer
    from mirror_dev.scripted_agent import ScriptedAgent

    recorder = stack.recorder

    class Peer(PlivoPeer):
        async def send_raw(self, message: dict[str, Any] | str) -> None:
            if isinstance(message, dict):
                recorder.add(time.monotonic(), "plivo→bridge", message)
            await super().send_raw(message)

    done = asyncio.Event()
    async with ScriptedAgent(agent_script(recorder, done)) as agent:
        agent_url = agent.url
        tenant = TenantConfig(tenant_id=TENANT_ID, agent_url=agent_url)
        stack.moto.client("dynamodb").put_item(
            TableName=TABLE_NAME, Item=tenant_item(NUMBER, tenant, time.time())
        )
        call_id = str(uuid.uuid4())
        status, xml = await asyncio.to_thread(answer_webhook, stack.bridge.base_url, call_id)
        peer = Peer(
            stack.bridge.stream_url, auth_token=AUTH_TOKEN, speed=speed, call_id=call_id,
            extra_headers=f"mirrorNumber={NUMBER}",
        )  # fmt: skip
        await peer.connect()
        caller = None
        try:
            await peer.start()

            async def caller_audio() -> None:
                while True:
                    await peer.media(10)

            caller = asyncio.create_task(caller_audio())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
            caller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await caller
            await peer.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.closed.wait(), 10)
        finally:
            if caller is not None:
                caller.cancel()
            await peer.close()
        for received in peer.received:
            recorder.add(received.at, "bridge→plivo", received.message)
        calls = agent.calls
        if calls:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(calls[0].closed.wait(), 10)
            for at, message in calls[0].received:
                recorder.add(at, "bridge→agent", message)
        session = await _closed_session(stack.supervision, call_id)
    return CallRecord(
        call_id=call_id,
        stream_id=peer.stream_id,
        answer_status=status,
        answer_xml=xml,
        caller_frames=sum(1 for m in peer.sent if m.get("event") == "media"),
        agent_media=len(calls[0].events("media")) if calls else 0,
        session=session,
        agent_done=done.is_set(),
        agent_url=agent_url,
    )


async def _closed_session(supervision: Any, call_id: str, timeout_s: float = 10.0) -> Any:
    """The call's session once its end (state written, CallEnded emitted) is done."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for session in list(supervision.sessions):
            if getattr(session.ctx, "call_id", None) != call_id:
                continue
            task = getattr(session, "_close_task", None)
            if task is not None and task.done():
                return session
        await asyncio.sleep(0.02)
    return None


# --- the report -----------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What a later step (e.g. a post-call report) needs; the stack is up until `close()`."""

    call_id: str
    tenant_id: str
    stream_id: str
    pk: str
    """The call's partition key in the call table: `{tenant_id}#{call_id}`."""
    endpoint: str
    """The moto server (AWS_ENDPOINT_URL for clients that should read the call's state)."""
    table_name: str
    queue_url: str
    """The SQS queue the CallEnded rule delivers to (the events already read are in
    `call_ended`; the queue is empty afterwards)."""
    out: TextIO
    stack: DemoStack
    items: list[dict[str, Any]] = field(default_factory=list)
    call_ended: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def close(self) -> None:
        self.stack.close()


AfterCall = Callable[[DemoResult], None]
AFTER_CALL: list[AfterCall] = []
"""Steps appended to the demo: each gets the result while the stack still runs."""


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _audio_s(messages: list[dict[str, Any]]) -> float:
    size = sum(len(base64.b64decode((m.get("media") or {}).get("payload") or "")) for m in messages)
    return size / 8000


def _tools(calls: list[dict[str, Any]]) -> str:
    out = []
    for c in calls:
        items = (c.get("args") or {}).get("items") or []
        what = ", ".join(
            " ".join(str(i.get(k)) for k in ("quantity", "size", "name") if i.get(k)) for i in items
        )
        out.append(f"{c.get('name')}({what})")
    return "; ".join(out)


def describe(entry: Entry, run: list[Entry]) -> str:
    """One timeline line's text for `entry` (`run`: the collapsed run it starts)."""
    m = entry.message
    kind = entry.event
    if kind in ("playAudio", "media"):
        label = f"{kind} ×{len(run)}" if len(run) > 1 else kind
        return f"{label} ({_audio_s([e.message for e in run]):.2f} s of audio)"
    if kind == "start":
        start = m.get("start") or {}
        fmt = start.get("mediaFormat") or {}
        return (
            f"start call {str(start.get('callId'))[:8]}… ({fmt.get('encoding')} "
            f"{fmt.get('sampleRate')} Hz, extra_headers {m.get('extra_headers')!r})"
        )
    if kind in ("checkpoint", "playedStream", "played"):
        return f"{kind} {m.get('name')}"
    if kind == "mirror.turn":
        caller = f"caller {m.get('customer_text')!r}, " if m.get("customer_text") else ""
        return f"mirror.turn {m.get('turn_id')}: {caller}agent {m.get('agent_text')!r}"
    if kind == "mirror.tool_gate":
        return f"mirror.tool_gate {m.get('request_id')}: {_tools(m.get('tool_calls') or [])}"
    if kind == "mirror.verdict":
        verdict = m.get("verdict") or {}
        return f"mirror.verdict {m.get('turn_id')}: {str(verdict.get('decision')).upper()}"
    if kind == "mirror.tool_decision":
        result = m.get("result") or {}
        line = f" (agent says {result['spoken_line']!r})" if result.get("spoken_line") else ""
        return f"mirror.tool_decision {m.get('request_id')}: {result.get('decision')!s}{line}"
    if kind == "mirror.override":
        return f"mirror.override for {m.get('turn_id')}: {_short(m.get('note', ''), 200)!r}"
    if entry.lane == "function":
        return _describe_function(m)
    if kind == "CallEnded":
        detail = m.get("detail") or {}
        counts = detail.get("counts") or {}
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return f"CallEnded → EventBridge (moto): reason {detail.get('reason')}; {shown}"
    if kind == "stop":
        return f"stop ({m.get('reason', '')})"
    return kind


def _describe_function(m: dict[str, Any]) -> str:
    name = FUNCTION_LABELS.get(m["event"], m["event"])
    took = (m.get("_at", 0.0) - m["started"]) * 1000 if "_at" in m else None
    payload = m.get("payload") or {}
    ref = payload.get("turn_id") or ""
    if "error" in m:
        return f"{name} {ref}: FAILED {m['error']}"
    a = m.get("answer") or {}
    took_text = f" [{took:.1f} ms]" if took is not None else ""
    if m["event"] == "score_turn":
        reasons = a.get("reasons") or []
        why = f" {reasons[0]['check']}: {_short(reasons[0]['evidence'], 110)}" if reasons else ""
        tier0 = (a.get("latency_us") or {}).get("tier0")
        tier = f", Tier 0 {tier0:,.0f} µs" if tier0 is not None else ""
        return f"{name} {ref} → {str(a.get('decision')).upper()}{why}{took_text[:-1]}{tier}]"
    if m["event"] == "gate_tool":
        parts = [
            f"{d['name']} {d['decision'].upper()} ({d['decided_by']}"
            + (f": {d['reasons'][0]['code']})" if d.get("reasons") else ")")
            for d in a.get("decisions") or []
        ]
        return f"{name} → {'; '.join(parts)}{took_text}"
    if m["event"] == "generate_correction":
        return (
            f"{name} {ref} → ({a.get('source')}) {a.get('correction_text')!r}, "
            f"note stored: {a.get('note_stored')}{took_text}"
        )
    return f"{name}{took_text}"


def timeline_lines(entries: list[Entry], t0: float) -> list[str]:
    """Sorted, media runs collapsed, caller media left out (it is counted separately)."""
    shown = [
        e
        for e in sorted(entries, key=lambda e: e.at)
        if not (e.event == "media" and e.lane in ("plivo→bridge", "bridge→agent"))
    ]
    lines: list[str] = []
    i = 0
    while i < len(shown):
        entry = shown[i]
        run = [entry]
        if entry.event == "playAudio":
            while (
                i + len(run) < len(shown)
                and shown[i + len(run)].event == "playAudio"
                and shown[i + len(run)].lane == entry.lane
            ):
                run.append(shown[i + len(run)])
        lane = "bridge" if entry.lane == "function" else entry.lane
        if entry.lane == "aws":
            lane = "bridge→aws"
        lines.append(f"{(entry.at - t0) * 1000:9.1f} ms  {lane:<13} {describe(entry, run)}")
        i += len(run)
    return lines


def _item_summary(item: dict[str, Any]) -> str:
    sk = str(item.get("sk"))
    data = item.get("data")
    parsed: Any = None
    if isinstance(data, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(data)
    if sk.startswith("MSG#") and isinstance(parsed, dict):
        return f"{parsed.get('role')}: {_short(parsed.get('text') or _tools(parsed.get('tool_calls') or []), 70)!r}"  # noqa: E501
    if sk.startswith("VERDICT#") and isinstance(parsed, dict):
        verdict = parsed.get("verdict", parsed)
        return f"decision {verdict.get('decision')}"
    skip = {"pk", "sk", "expires_at", "data"}
    first = ("end_reason", "bridge_interventions", "bridge_turns", "stream_event")
    keys = [k for k in first if k in item] + sorted(k for k in item if k not in first)
    fields = [f"{k}={_short(str(item[k]), 40)}" for k in keys if k not in skip]
    if parsed is not None and not fields:
        return _short(json.dumps(parsed), 80)
    return _short(", ".join(fields), 110)


def check_call(record: CallRecord, entries: list[Entry], stack: DemoStack) -> list[str]:
    """Everything that must have happened for the call to have gone as scripted."""
    problems: list[str] = []
    if record.answer_status != 200 or "<Stream" not in record.answer_xml:
        problems.append(f"answer webhook: {record.answer_status} {record.answer_xml[:80]!r}")
    if not record.agent_done:
        problems.append("the agent's script did not finish (timed out)")
    by_lane = sorted(entries, key=lambda e: e.at)
    verdicts = {
        e.message.get("turn_id"): (e.message.get("verdict") or {}).get("decision")
        for e in by_lane
        if e.lane == "bridge→agent" and e.event == "mirror.verdict"
    }
    if verdicts != EXPECTED_VERDICTS:
        problems.append(f"verdicts {verdicts}, expected {EXPECTED_VERDICTS}")
    gates = {
        e.message.get("request_id"): (e.message.get("result") or {}).get("decision")
        for e in by_lane
        if e.lane == "bridge→agent" and e.event == "mirror.tool_decision"
    }
    if gates != EXPECTED_GATES:
        problems.append(f"tool decisions {gates}, expected {EXPECTED_GATES}")
    problems += check_intervention(by_lane)
    if record.caller_frames != record.agent_media:
        problems.append(
            f"caller audio: {record.caller_frames} frames sent, {record.agent_media} relayed"
        )
    if stack.sink.emitted != 1:
        problems.append(f"CallEnded emitted {stack.sink.emitted} times")
    session = record.session
    if session is None:
        problems.append("the bridge's session never finished closing")
    return problems


def check_intervention(entries: list[Entry]) -> list[str]:
    """On Plivo's wire after turn t2: clearAudio → buffer playAudio + checkpoint → playedStream
    → correction playAudio + checkpoint → playedStream, then the override to the agent."""
    lanes = ("bridge→plivo", "plivo→bridge")
    plivo = [e for e in entries if e.lane in lanes and e.event != "media"]
    t2 = next(
        (e.at for e in entries if e.event == "mirror.turn" and e.message.get("turn_id") == "t2"),
        None,
    )
    if t2 is None:
        return ["turn t2 was never annotated"]
    seq = [e for e in plivo if e.at >= t2]
    steps = [
        ("bridge→plivo", "clearAudio", None),
        ("bridge→plivo", "playAudio", None),
        ("bridge→plivo", "checkpoint", "-buffer"),
        ("plivo→bridge", "playedStream", "-buffer"),
        ("bridge→plivo", "playAudio", None),
        ("bridge→plivo", "checkpoint", "-correction"),
        ("plivo→bridge", "playedStream", "-correction"),
    ]
    i = 0
    last = t2
    for lane, event, suffix in steps:
        while i < len(seq) and not (
            seq[i].lane == lane
            and seq[i].event == event
            and (suffix is None or str(seq[i].message.get("name", "")).endswith(suffix))
        ):
            i += 1
        if i == len(seq):
            return [f"intervention: no {event}{' *' + suffix if suffix else ''} after turn t2"]
        last = seq[i].at
        i += 1
    override = [e for e in entries if e.lane == "bridge→agent" and e.event == "mirror.override"]
    if len(override) != 1 or override[0].at < last:
        return ["intervention: the override did not reach the agent once, after the correction"]
    return []


def report(result: DemoResult, record: CallRecord, stack: DemoStack, speed: float) -> None:
    out = result.out
    entries = stack.recorder.entries
    for e in entries:  # function entries: their answer time is the entry time
        if e.lane == "function":
            e.message["_at"] = e.at
    t0 = min((e.at for e in entries), default=0.0)
    result.timeline = timeline_lines(entries, t0)
    w = out.write
    w("\nMirror local demo: one call through the whole stack, offline\n")
    w(f"  moto server   {stack.moto.endpoint}  DynamoDB table {TABLE_NAME}, EventBridge rule "
      f"{QUEUE_NAME} → SQS\n")  # fmt: skip
    w(f"  bridge        {stack.bridge.base_url}  uvicorn; ScoreTurn, GateTool, GenerateCorrection"
      " in-process (functions/*/app.py) on the moto server\n")  # fmt: skip
    w(f"  tenant        number +{NUMBER} → tenant {TENANT_ID}, agent {record.agent_url} "
      f"(item @tenant#{NUMBER} in {TABLE_NAME})\n")  # fmt: skip
    w(f"  TTS           {stack.tts_engine}\n")
    if not stack.tts_engine.startswith("espeak"):
        w(f"                {ESPEAK_HINT}\n")
    w(f"  Plivo peer    plays audio {speed:g}× faster than real time; caller audio is a "
      "stream of 20 ms μ-law frames\n")  # fmt: skip
    w(f"\nPOST /plivo/answer (V3-signed) → {record.answer_status}\n  {record.answer_xml}\n")
    w(f"\nTimeline of call {record.call_id} (ms from the stream's start; caller media frames "
      "not listed)\n")  # fmt: skip
    for line in result.timeline:
        w(line + "\n")
    w(f"\ncaller audio: {record.caller_frames} media frames Plivo → bridge → agent, "
      f"{record.agent_media} arrived\n")  # fmt: skip
    session = record.session
    if session is not None:
        if session.counts.get("agent_frames_dropped", 0) >= AGENT_FRAMES:
            w("turn t2's audio: held while ScoreTurn ran, then dropped in the bridge "
              "(the caller never heard it)\n")  # fmt: skip
        else:
            w("turn t2's audio: released when the hold budget ran out before the verdict "
              "(speech fails open), then cut at Plivo by the clearAudio\n")  # fmt: skip
        for iv in session.interventions:
            marks = ", ".join(f"{what} +{(at - t0) * 1000:.1f}" for what, at in iv.timeline)
            w(f"intervention {iv.id}: {iv.outcome} ({marks})\n")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(session.summary().items()))
        w(f"session counts: {counts}\n")
    w(f"\nCall state in DynamoDB: moto server {stack.moto.endpoint}, table {TABLE_NAME}, "
      f"pk {result.pk!r} ({len(result.items)} items)\n")  # fmt: skip
    for item in result.items:
        w(f"  {str(item.get('sk')):<40.40} {_item_summary(item)}\n")
    w(f"\nCallEnded read back from SQS ({result.queue_url}, via the EventBridge rule):\n")
    for envelope in result.call_ended:
        detail = envelope.get("detail") or {}
        w(f"  source {envelope.get('source')}, detail-type {envelope.get('detail-type')}, "
          f"reason {detail.get('reason')}, call {detail.get('call_id')}\n")  # fmt: skip
    if stack.log.lines:
        w("\nbridge warnings:\n" + "".join(f"  {line}\n" for line in stack.log.lines[:20]))


def run_demo(
    out: TextIO | None = None,
    *,
    after_call: Sequence[AfterCall] = (),
    keep_alive: bool = False,
    speed: float = DEFAULT_SPEED,
    timeout_s: float = 60.0,
) -> DemoResult:
    """Start the stack, play the call, print the report; then `AFTER_CALL` and `after_call`
    steps run with the result (stack still up). The stack stops unless `keep_alive`."""
    out = out or sys.stdout
    stack = start_stack()
    try:
        record = asyncio.run(play_call(stack, speed, timeout_s))
        pk = f"{TENANT_ID}#{record.call_id}"
        result = DemoResult(
            call_id=record.call_id, tenant_id=TENANT_ID, stream_id=record.stream_id, pk=pk,
            endpoint=stack.moto.endpoint, table_name=TABLE_NAME, queue_url=stack.moto.queue_url,
            out=out, stack=stack,
        )  # fmt: skip
        result.items = stack.moto.call_items(pk)
        result.call_ended = [
            e for e in stack.moto.call_ended_events() if (e.get("detail") or {}).get("call_id")
            == record.call_id
        ]  # fmt: skip
        result.problems = check_call(record, stack.recorder.entries, stack)
        result.problems += check_state(result)
        report(result, record, stack, speed)
        for step in [*AFTER_CALL, *after_call]:
            step(result)
        if result.problems:
            out.write("\nThe call did not go as scripted:\n")
            out.write("".join(f"  - {p}\n" for p in result.problems))
        else:
            out.write("\nThe call went as scripted.\n")
        out.flush()
        return result
    finally:
        if not keep_alive:
            stack.close()


def check_state(result: DemoResult) -> list[str]:
    problems: list[str] = []
    by_sk = {str(i.get("sk")): i for i in result.items}
    meta = by_sk.get("META") or {}
    if meta.get("end_reason") != "stop":
        problems.append(f"META item: end_reason {meta.get('end_reason')!r}, expected 'stop'")
    verdict = by_sk.get("VERDICT#t2")
    if verdict is None or "intervene" not in _item_summary(verdict):
        problems.append("no stored intervene verdict for t2")
    if len(result.call_ended) != 1:
        problems.append(f"{len(result.call_ended)} CallEnded events in the queue, expected 1")
    return problems


@dataclass(frozen=True)
class _CallSnapshot:
    """The reads PostCallReport makes of a call's state, answered from a copy."""

    meta: Any
    history: list[Any]
    verdicts: list[Any]

    def get_call_meta(self, ctx: Any, now: float) -> Any:
        return self.meta

    def get_history(self, ctx: Any, now: float, limit: int) -> list[Any]:
        return self.history[-limit:]

    def list_verdicts(self, ctx: Any, now: float) -> list[Any]:
        return self.verdicts


def post_call_report(result: DemoResult) -> None:
    """After the call: its failure report from the state moto holds, then the FixPr workflow on
    moto to the approval step, approved as the demo's reviewer, and the branch and commit the PR
    step made in a local git repository it creates (nothing is pushed)."""
    import boto3

    from mirror.models import CallContext
    from mirror.state import DynamoDBStateStore
    from mirror_dev.reports_demo import show_post_call

    out = result.out
    out.write("\n== After the call: the post-call report and the fix workflow ==\n")
    client = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url=result.endpoint
    )
    store = DynamoDBStateStore(result.table_name, client=client)
    ctx = CallContext(call_id=result.call_id, tenant_id=result.tenant_id)
    now = time.time()
    # Read now: show_post_call mocks AWS in-process, which would hide the moto server.
    snapshot = _CallSnapshot(
        store.get_call_meta(ctx, now),
        store.get_history(ctx, now, 10_000),
        store.list_verdicts(ctx, now),
    )
    shown = show_post_call(snapshot, result.call_id, tenant_id=result.tenant_id, out=out)
    if shown.report is None:
        result.problems.append("no post-call report for the call")
    elif shown.status != "opened":
        result.problems.append(f"the fix workflow ended {shown.status!r}, expected 'opened'")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo_call.py",
        description="One call through moto, the bridge, the functions, a scripted Plivo and "
        "agent, offline; prints the timeline and the stored state.",
    )
    parser.add_argument(
        "--speed", type=float, default=DEFAULT_SPEED,
        help=f"how much faster than real time the peer plays audio (default {DEFAULT_SPEED:g})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be positive")
    try:
        result = run_demo(sys.stdout, speed=args.speed, after_call=[post_call_report])
    except DemoFailed as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
