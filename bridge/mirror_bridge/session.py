"""One call's supervision: holding the agent's audio while its turn is scored, intervening,
gating tool calls, and ending the call.

The relay hands the session every event (the `CallSessionLike` protocol in relay.py). Rules:

**Audio and turns.** Every agent message bound for Plivo (playAudio, checkpoint, clearAudio,
sendDTMF) belongs to the *current turn*: the one named by the latest `mirror.turn`. Audio that
comes before any annotation, or after its turn was decided, goes straight through. While the
current turn is being scored its messages are held, for at most `hold_budget_s` (100 ms): an
`allow` (or a `block`, which is about tools, not speech) releases them in order; when the budget
runs out first, they are released anyway and the expiry is counted (speech fails open; a late
`intervene` still clears them at Plivo). A scoring failure releases them too (counted). A new
`mirror.turn` releases the previous turn's held audio first, so turns never reorder. Everything
bound for Plivo goes through one ordered outbox written by one task: released audio can never be
overtaken by newer audio, and nothing is sent twice.

**Intervention** on `intervene`: the turn's held and queued audio is dropped and `clearAudio` is
queued at once; the correction is requested (GenerateCorrection) in parallel with the buffer
line (rendered once per voice), which is played with its own checkpoint; after that checkpoint's
`playedStream` the correction is synthesized and played with its own checkpoint; then the agent
gets `mirror.override` (GenerateCorrection stored the note). The agent's audio for the
intervened turn is dropped; audio of a newer turn waits until the intervention is over. A newer
intervention supersedes a running one (its clearAudio cancels the older waits). The speech
cooldown is ScoreTurn's (it answers `allow` with `cooldown_suppressed`); the session adds none.

**What the agent sees.** Caller media and dtmf go to the agent as they came, and so do the
playedStream of the agent's own checkpoints; acks of Mirror's checkpoints do not (nor does the
intervened turn's checkpoint: it was never sent, the agent gets `mirror.verdict` and
`mirror.override` instead).

**clearedAudio.** Waits pending when a clearAudio goes out fail then (Plivo drops those
checkpoints). A clearedAudio that answers one of the clears sent on this stream only confirms it
(it reaches the agent when the clear was the agent's); one that answers none (the queue was
cleared by someone else) cancels every pending wait and reaches the agent.

**Tool gate.** `mirror.tool_gate` → GateTool → `mirror.tool_decision`. A failure, timeout or
`{"error"}` answer holds irreversible calls (`tool_gate_failure_mode`) and allows reversible ones.

**Silence watchdog** (`caller_silence_s` > 0). The caller is heard when a media frame has a
loud enough sample, when they press a key, or when a `mirror.turn` brings their words. Silence
counts from the later of that and the estimated end of the audio queued to them (the agent's and
Mirror's), so a long answer is not the caller's silence. After `caller_silence_s` of it the agent
gets `{"event": "mirror.caller_silent", "silent_s": ..., "notice": 1}`, then notice 2, 3, ...
every further `caller_silence_s`; any caller activity starts a new count.

**Close** (stop, hang-up, socket close; idempotent, safe from several paths at once): pending
waits fail with `ended`, in-flight function calls get up to `close_grace_s` (a correction being
fetched is still stored by GenerateCorrection), what is queued for Plivo is handed to the relay
(which sends it while the socket lasts), then the final state is written and `CallEnded` emitted
once.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from mirror.gate import GateToolEvent, fail_safe
from mirror.models import MirrorConfig
from mirror_bridge.audio import (
    MULAW,
    SAMPLE_RATE,
    b64,
    bytes_per_second,
    chunks,
    for_stream,
    is_loud,
)
from mirror_bridge.call_end import CallEnd, CallStateWriter, EventSink
from mirror_bridge.intervention import (
    Checkpoints,
    Intervention,
    Playout,
    WaitOutcome,
    wait_checkpoint,
)
from mirror_bridge.plivo_protocol import Frame
from mirror_bridge.transport import (
    GATE_TOOL,
    GENERATE_CORRECTION,
    SCORE_TURN,
    FunctionError,
    FunctionTransport,
)
from mirror_bridge.tts import TTS, BufferLineCache, RestSpeaker, estimated_speak_s

logger = logging.getLogger(__name__)

AGENT = "agent"
MIRROR = "mirror"
_SENT = {AGENT: "agent_frames_sent", MIRROR: "mirror_frames_sent"}
TURN_FIELDS = ("customer_text", "agent_text", "tool_calls", "tool_results", "history")
DEFAULT_FALLBACK_NOTE = (
    "Your last reply was stopped before the caller heard all of it. Re-check what the caller "
    "asked for, read the details back, and get a clear yes before doing anything irreversible."
)


class CallContextLike(Protocol):
    @property
    def call_id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SessionIO:
    send_plivo: Callable[[dict[str, Any]], Awaitable[None]]
    send_agent: Callable[[dict[str, Any]], Awaitable[None]]
    offer_plivo: Callable[[dict[str, Any]], bool] | None = None
    """Queue without waiting; False when it would have to wait (see relay.SessionIO)."""
    offer_agent: Callable[[dict[str, Any]], bool] | None = None


@dataclass(frozen=True)
class BridgeSessionConfig:
    hold_budget_s: float = 0.1
    """How long a turn's audio may wait for its verdict before it is released (fail open)."""
    score_timeout_s: float = 2.0
    """ScoreTurn's own limit (its remote tiers included); a late intervene still clears."""
    gate_timeout_s: float = 3.0
    correction_timeout_s: float = 4.0
    tts_timeout_s: float = 3.0
    checkpoint_margin_s: float = 2.0
    """Watchdog on a checkpoint: the estimated end of queued audio plus this."""
    close_grace_s: float = 5.0
    """How long close waits for in-flight function calls before it cancels them."""
    voice: str = "Joanna"
    buffer_text: str | None = None
    """None: `mirror.buffer_text` (or the verdict's `buffer_text`)."""
    fallback_note: str = DEFAULT_FALLBACK_NOTE
    """The override note when GenerateCorrection could not answer (sent as not stored)."""
    rest_speech_s: Callable[[str], float] = estimated_speak_s
    """How long a REST Speak is assumed to play (there is no completion event)."""
    mirror: MirrorConfig = field(default_factory=MirrorConfig)
    """The tenant's config: irreversible tools and the tool-gate failure mode (local holds)."""
    policies: list[str] | None = None
    """The tenant's policies, sent with every ScoreTurn, GateTool and GenerateCorrection event
    (None: the functions' configured ones)."""
    irreversible_tools: list[str] | None = None
    """The tenant's irreversible tools, sent with ScoreTurn and GateTool (None: configured)."""
    caller_silence_s: float = 0.0
    """Silence watchdog (0: off): after this long without the caller and with nothing playing
    to them, the agent gets `mirror.caller_silent`, again every `caller_silence_s` while the
    silence lasts."""
    caller_speech_threshold: int = 500
    """A media frame with a sample at least this loud (16-bit magnitude) is the caller speaking."""


@dataclass
class _Turn:
    turn_id: str
    annotation: dict[str, Any]
    state: str = "scoring"  # scoring -> open | dropped
    held: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    started: float = 0.0


def event_frame(event: Any) -> dict[str, Any]:
    """A Plivo event as the frame it came in (the relay's events keep it), else as a dict."""
    raw = getattr(event, "raw", None)
    if type(raw) is Frame or isinstance(raw, dict):
        return raw  # type: ignore[no-any-return]
    return as_dict(event)


def as_dict(message: Any) -> dict[str, Any]:
    """Dicts as they are; the relay's parsed events by their raw frame or their fields."""
    if isinstance(message, dict):
        return message
    raw = getattr(message, "raw", None)
    if isinstance(raw, dict):
        return raw
    if hasattr(message, "model_dump"):
        return message.model_dump(mode="json", exclude_none=True)
    raise TypeError(f"unsupported message type: {type(message).__name__}")


class CallSession:
    """See the module docstring. All methods run on the event loop and never block it."""

    def __init__(
        self,
        ctx: CallContextLike,
        io: SessionIO,
        *,
        functions: FunctionTransport,
        tts: TTS,
        events: EventSink,
        config: BridgeSessionConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        buffer_lines: BufferLineCache | None = None,
        state: CallStateWriter | None = None,
        rest: RestSpeaker | None = None,
    ) -> None:
        self.ctx = ctx
        self.io = io
        self.functions = functions
        self.tts = tts
        self.config = config or BridgeSessionConfig()
        self.clock = clock
        self.buffer_lines = buffer_lines or BufferLineCache(tts)
        self.rest = rest
        self.counts: Counter[str] = Counter()
        self.call_end = CallEnd(ctx, events=events, state=state)  # type: ignore[arg-type]
        self.checkpoints = Checkpoints()
        self.playout = Playout(clock)
        self.stream_id: str | None = None
        self.encoding = MULAW
        self.sample_rate = SAMPLE_RATE
        self._rate = bytes_per_second(MULAW, SAMPLE_RATE)
        """Bytes per second of the stream's audio (queue-end estimates per playAudio)."""
        self.bidirectional = True
        self.closed = False
        self.interventions: list[Intervention] = []
        self._turn: _Turn | None = None
        self._active: Intervention | None = None
        self._after_speech: list[dict[str, Any]] = []
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._sending = False
        """The write loop is awaiting `send_plivo` (a message is between the outbox and the
        relay): nothing may be offered past it."""
        self._plivo_gone = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._agent_lock = asyncio.Lock()
        self._clears_on_wire: deque[str] = deque()
        """Who sent each clearAudio not yet answered by a clearedAudio (in order)."""
        self._close_task: asyncio.Task[None] | None = None
        self._caller_heard_at = 0.0
        self._silence_task: asyncio.Task[None] | None = None

    # --- inbound: Plivo ----------------------------------------------------------------------

    async def on_start(self, start: Any) -> None:
        raw = as_dict(start)
        inner = raw.get("start") if isinstance(raw.get("start"), dict) else {}
        self.stream_id = inner.get("streamId") or raw.get("streamId") or self.stream_id
        self.checkpoints.stream_id = self.stream_id
        fmt = inner.get("mediaFormat") or {}
        self.encoding = fmt.get("encoding") or MULAW
        try:
            self.sample_rate = int(fmt.get("sampleRate") or SAMPLE_RATE)
        except (TypeError, ValueError):
            self.sample_rate = SAMPLE_RATE
        self._rate = bytes_per_second(self.encoding, self.sample_rate) or 1
        bidi = getattr(start, "bidirectional", None)
        if bidi is None:
            bidi = inner.get("bidirectional", raw.get("bidirectional", True))
        self.bidirectional = bidi not in (False, "false", "False")
        call_id = inner.get("callId")
        if call_id and call_id != self.ctx.call_id:
            logger.info("stream callId differs from the session's", extra={"call_id": call_id})
        self._caller_heard_at = self.clock()
        if self.config.caller_silence_s > 0 and not self.closed and self._silence_task is None:
            self._silence_task = asyncio.get_running_loop().create_task(self._watch_silence())

    def take_plivo_event(self, event: Any) -> Coroutine[Any, Any, None] | None:
        """`on_plivo_event`, done at once when it can be (caller media, fifty a second, whose
        writer has room): None when it is done, else the coroutine that does it (or its rest),
        to be awaited before the next event."""
        raw = event_frame(event)
        if raw.get("event") != "media":
            return self.on_plivo_event(event)
        self.counts["caller_frames"] += 1  # forwarded as it came
        if self._silence_task is not None:
            now = self.clock()
            # While audio plays to the caller, silence counts from its end (which only moves
            # later, or to a later clear), so a loud frame now would not move it.
            if self.playout.end < now and self._caller_loud(raw):
                self._caller_heard_at = now
        if self.closed or self._offer_agent(raw):
            return None
        return self._send_agent(raw)

    def take_agent_audio(self, message: Any) -> None:
        """`on_agent_audio`, which never waits, called without a coroutine."""
        msg = message if isinstance(message, dict) else as_dict(message)
        if self.closed:
            self.counts["agent_frames_after_close"] += 1
            return
        turn = self._turn
        if turn is not None and turn.state == "dropped":
            self.counts["agent_frames_dropped"] += 1
        elif turn is not None and turn.state == "scoring":
            turn.held.append(msg)
            self.counts["agent_frames_held"] += 1
        elif self._active is not None:
            self._after_speech.append(msg)  # never over our buffer line or correction
        else:
            self._enqueue(msg, AGENT)

    async def on_plivo_event(self, event: Any) -> None:
        raw = event_frame(event)
        kind = raw.get("event")
        if kind == "media":
            rest = self.take_plivo_event(event)
            if rest is not None:
                await rest
            return
        forward = True
        if kind in ("playedStream", "played"):
            name = raw.get("name")
            if isinstance(name, str) and self.checkpoints.resolve(
                name, raw.get("streamId"), self.clock()
            ):
                self.counts["checkpoints_played"] += 1
                forward = False
            elif isinstance(name, str) and self.checkpoints.owns(name):
                self.counts["stale_played"] += 1
                forward = False
        elif kind == "clearedAudio":
            if self._clears_on_wire:  # answers a clear we sent: its waits already failed
                forward = self._clears_on_wire.popleft() == AGENT
            else:
                self.counts["unsolicited_cleared"] += 1
                if self.checkpoints.fail_all("cleared"):
                    self.playout.clear()
        elif kind == "stop":
            await self.close("stop")
            return
        elif kind == "dtmf":
            self.counts["dtmf"] += 1
            self._caller_heard_at = self.clock()
        if forward and not self.closed:
            await self._send_agent(raw)

    def _caller_loud(self, raw: dict[str, Any]) -> bool:
        media = raw.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return False
        try:
            data = binascii.a2b_base64(payload)
        except (binascii.Error, ValueError):
            return False
        return is_loud(data, self.encoding, self.config.caller_speech_threshold)

    async def _watch_silence(self) -> None:
        """See "Silence watchdog" in the module docstring. Sleeps until the next moment a
        notice could be due, then re-checks (caller activity or new audio moves it later)."""
        limit = self.config.caller_silence_s
        episode, notices = -1.0, 0
        while not self.closed:
            since = max(self._caller_heard_at, self.playout.end)
            if since != episode:
                episode, notices = since, 0
            silent = self.clock() - since
            due = limit * (notices + 1)
            if silent < due:
                await asyncio.sleep(due - silent)
                continue
            notices += 1
            self.counts["caller_silent_notices"] += 1
            await self._send_agent(
                {"event": "mirror.caller_silent", "silent_s": round(silent, 1), "notice": notices}
            )

    # --- inbound: agent ----------------------------------------------------------------------

    async def on_agent_audio(self, message: Any) -> None:
        self.take_agent_audio(message)

    async def on_mirror_message(self, message: Any) -> None:
        msg = as_dict(message)
        kind = msg.get("event") or msg.get("type")
        if kind == "mirror.turn":
            if msg.get("customer_text"):
                self._caller_heard_at = self.clock()
            self._begin_turn(msg)
        elif kind == "mirror.tool_gate":
            self._spawn(self._gate(msg))
        else:
            await self._send_agent(
                {
                    "event": "mirror.error",
                    "code": "unknown_event",
                    "message": f"unknown Mirror event {str(kind)[:64]!r}",
                    "ref_event": str(kind)[:64] if kind else None,
                    "ref_id": msg.get("turn_id") or msg.get("request_id"),
                }
            )

    # --- turns and scoring -------------------------------------------------------------------

    def _begin_turn(self, msg: dict[str, Any]) -> None:
        previous = self._turn
        if previous is not None and previous.state == "scoring":
            self._open(previous)  # its audio goes out before the new turn's
        self.counts["turns"] += 1
        turn_id = str(msg.get("turn_id") or f"t{self.counts['turns']}")
        turn = _Turn(turn_id, msg, started=self.clock())
        self._turn = turn
        if self.closed:
            turn.state = "open"
            return
        loop = asyncio.get_running_loop()
        turn.timer = loop.call_later(self.config.hold_budget_s, self._budget_expired, turn)
        self._spawn(self._score(turn), eager=True)  # ScoreTurn is called before this returns

    def _budget_expired(self, turn: _Turn) -> None:
        if turn.state == "scoring":
            self.counts["budget_expired"] += 1
            self._open(turn)

    def _open(self, turn: _Turn) -> None:
        """Scoring is over for this turn's audio (verdict, failure or budget): release it."""
        if turn.timer is not None:
            turn.timer.cancel()
        turn.state = "open"
        held, turn.held = turn.held, []
        self._release(held)

    def _release(self, messages: list[dict[str, Any]]) -> None:
        if self._active is not None:
            self._after_speech.extend(messages)  # never over our buffer line or correction
            return
        for msg in messages:
            self._enqueue(msg, AGENT)

    def _score_payload(self, turn: _Turn) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "call_id": self.ctx.call_id,
            "tenant_id": self.ctx.tenant_id,
            "turn_id": turn.turn_id,
        }
        payload.update({k: turn.annotation[k] for k in TURN_FIELDS if k in turn.annotation})
        return self._with_tenant(payload)

    def _with_tenant(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.config.policies is not None:
            payload["policies"] = list(self.config.policies)
        if self.config.irreversible_tools is not None:
            payload["irreversible_tools"] = list(self.config.irreversible_tools)
        return payload

    async def _score(self, turn: _Turn) -> None:
        try:
            verdict = await self.functions.invoke(
                SCORE_TURN, self._score_payload(turn), self.config.score_timeout_s
            )
        except FunctionError as e:
            self.counts["score_failures"] += 1
            self.counts[f"score_failure_{e.kind}"] += 1
            logger.warning("ScoreTurn failed: speech fails open", extra={"error": str(e)})
            if turn.state == "scoring":
                self._open(turn)
            return
        decision = verdict.get("decision")
        self.counts[f"verdict_{decision}"] += 1
        if decision == "intervene" and not self.closed:
            self._start_intervention(turn, verdict)
        elif turn.state == "scoring":
            self._open(turn)
        await self._send_agent(
            {"event": "mirror.verdict", "turn_id": turn.turn_id, "verdict": verdict}
        )

    # --- outbox to Plivo ---------------------------------------------------------------------

    def _enqueue(self, msg: dict[str, Any], origin: str) -> None:
        """Queue a message for Plivo in order. A clearAudio fails the pending waits now: the
        checkpoints before it are dropped by Plivo; the ones after it belong to the new queue."""
        if self._plivo_gone:
            self.counts["plivo_frames_lost"] += 1
            return
        kind = msg.get("event")
        if kind == "playAudio":
            media = msg.get("media")
            payload = (media.get("payload") if type(media) is dict else None) or ""
            n = len(payload)  # its bytes: audio.b64_decoded_len, inline
            size = n * 3 // 4 - payload[-2:].count("=") if n else 0
            playout = self.playout
            now = playout.clock()
            playout.end = (now if now > playout.end else playout.end) + size / self._rate
        elif kind == "clearAudio":
            self.checkpoints.fail_all("cleared")
            self.playout.clear()
        offer = self.io.offer_plivo
        if offer is not None and not (self._outbox or self._sending or self.closed):
            # nothing ahead of it here: straight to the relay's queue, no task hop
            try:
                handed = offer(msg)
            except Exception as e:  # as the write loop treats a failed send
                self._plivo_gone = True
                self.counts["plivo_frames_lost"] += 1
                logger.info("Plivo socket unusable", extra={"error": repr(e)})
                return
            if handed:
                self._sent(origin, kind)
                return
        self._outbox.append((origin, msg))
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        assert self._wake is not None
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            while self._outbox:
                origin, msg = self._outbox.popleft()
                self._sending = True
                try:
                    await self.io.send_plivo(msg)
                    self._sent(origin, msg.get("event"))
                except Exception as e:  # socket gone: the relay will close us
                    self._plivo_gone = True
                    self.counts["plivo_frames_lost"] += 1 + len(self._outbox)
                    self._outbox.clear()
                    logger.info("Plivo socket unusable", extra={"error": repr(e)})
                    return
                finally:
                    self._sending = False
            if self.closed:
                return
            self._wake.clear()
            await self._wake.wait()

    def _sent(self, origin: str, kind: Any) -> None:
        self.counts[_SENT[origin]] += 1
        if kind == "clearAudio":
            self._clears_on_wire.append(origin)

    def _purge_agent_frames(self) -> int:
        kept = deque(item for item in self._outbox if item[0] != AGENT)
        dropped = len(self._outbox) - len(kept)
        self._outbox = kept
        return dropped

    def _offer_agent(self, message: dict[str, Any]) -> bool:
        """Hand a message to the agent's writer without waiting; False when it must be awaited
        (`_send_agent`): the writer is full, or a send waits ahead of it."""
        offer = self.io.offer_agent
        if offer is None or self._agent_lock.locked():  # nobody may be waiting ahead of it
            return False
        try:
            return offer(message)
        except Exception as e:
            self.counts["agent_messages_lost"] += 1
            logger.info("agent socket unusable", extra={"error": repr(e)})
            return True

    async def _send_agent(self, message: dict[str, Any]) -> None:
        if self._offer_agent(message):
            return
        async with self._agent_lock:
            try:
                await self.io.send_agent(message)
            except Exception as e:
                self.counts["agent_messages_lost"] += 1
                logger.info("agent socket unusable", extra={"error": repr(e)})

    # --- intervention ------------------------------------------------------------------------

    def _start_intervention(self, turn: _Turn, verdict: dict[str, Any]) -> None:
        """Synchronous up to the clearAudio, so it is on the wire within one loop turn."""
        if turn.timer is not None:
            turn.timer.cancel()
        dropped = len(turn.held) + self._purge_agent_frames() + len(self._after_speech)
        turn.held.clear()
        self._after_speech.clear()
        turn.state = "dropped"
        self.counts["agent_frames_dropped"] += dropped
        self.counts["interventions"] += 1
        iv = Intervention(
            call_tag=self.ctx.call_id[:8],
            seq=self.counts["interventions"],
            turn_id=turn.turn_id,
            verdict=verdict,
        )
        if self._active is not None:
            self.counts["interventions_superseded"] += 1
        self._active = iv
        self.interventions.append(iv)
        if self.bidirectional:
            self._enqueue({"event": "clearAudio", "streamId": self.stream_id}, MIRROR)
        iv.mark("clearAudio", self.clock)
        fetch = self._spawn(self._fetch_correction(turn, iv))
        self._spawn(self._intervene(iv, fetch))

    async def _fetch_correction(self, turn: _Turn, iv: Intervention) -> dict[str, Any] | None:
        payload = self._score_payload(turn)
        payload.pop("tool_calls", None)
        payload.pop("tool_results", None)
        payload.pop("irreversible_tools", None)  # not a GenerateCorrection field
        payload["verdict"] = iv.verdict
        iv.mark("correction_requested", self.clock)
        try:
            result = await self.functions.invoke(
                GENERATE_CORRECTION, payload, self.config.correction_timeout_s
            )
        except FunctionError as e:
            self.counts["correction_failures"] += 1
            logger.warning("GenerateCorrection failed", extra={"error": str(e)})
            return None
        iv.correction = result
        iv.mark("correction_received", self.clock)
        if not result.get("note_stored", False):
            self.counts["override_not_stored"] += 1
        return result

    def _current(self, iv: Intervention) -> bool:
        return self._active is iv and not self.closed

    async def _render(self, text: str, *, cached: bool) -> bytes | None:
        try:
            if cached:
                audio = self.buffer_lines.get(text, self.config.voice)
            else:
                audio = self.tts.synthesize(text, self.config.voice)
            return await asyncio.wait_for(audio, self.config.tts_timeout_s)
        except Exception as e:
            self.counts["tts_failures"] += 1
            logger.warning("TTS failed", extra={"error": repr(e)})
            return None

    async def _play(self, iv: Intervention, audio: bytes, purpose: str) -> WaitOutcome:
        """playAudio chunks and a uniquely named checkpoint; wait for exactly its ack."""
        name = iv.checkpoint(purpose)
        future = self.checkpoints.expect(name)
        data = for_stream(audio, self.encoding, self.sample_rate)
        size = 1600 * (1 if self.encoding == MULAW else 2 * self.sample_rate // SAMPLE_RATE)
        for part in chunks(data, size):
            media = {
                "contentType": self.encoding,
                "sampleRate": self.sample_rate,
                "payload": b64(part),
            }
            self._enqueue({"event": "playAudio", "media": media}, MIRROR)
        self._enqueue({"event": "checkpoint", "streamId": self.stream_id, "name": name}, MIRROR)
        iv.mark(f"{purpose}_sent", self.clock)
        outcome = await wait_checkpoint(
            future, self.playout.remaining() + self.config.checkpoint_margin_s
        )
        self.checkpoints.forget(name)
        iv.mark(f"{purpose}_{outcome}", self.clock)
        if outcome == "timeout":
            self.counts["checkpoint_timeouts"] += 1
        return outcome

    async def _intervene(
        self, iv: Intervention, fetch: asyncio.Task[dict[str, Any] | None]
    ) -> None:
        try:
            buffer_text = (
                self.config.buffer_text
                or iv.verdict.get("buffer_text")
                or self.config.mirror.buffer_text
            )
            if not self.bidirectional:
                await self._intervene_rest(iv, buffer_text, fetch)
                return
            audio = await self._render(buffer_text, cached=True)
            if audio is not None and self._current(iv):
                if await self._play(iv, audio, "buffer") in ("cleared", "ended"):
                    iv.outcome = "cancelled"
                    return
            correction = await fetch
            if not self._current(iv):
                iv.outcome = "superseded" if not self.closed else "ended"
                return
            if correction is not None:
                line = await self._render(correction["correction_text"], cached=False)
                if line is not None and self._current(iv):
                    if await self._play(iv, line, "correction") == "ended":
                        iv.outcome = "ended"
                        return
            if self._current(iv):
                await self._hand_back(iv, correction)
        finally:
            if self._active is iv:
                self._active = None
                held, self._after_speech = self._after_speech, []
                self._release(held)

    async def _intervene_rest(
        self, iv: Intervention, buffer_text: str, fetch: asyncio.Task[dict[str, Any] | None]
    ) -> None:
        """Unidirectional stream: no playAudio or checkpoints, so Plivo's REST Speak, with the
        notes' duration estimate standing in for the checkpoint."""
        call_uuid = self.ctx.call_id
        if self.rest is not None:
            try:
                await self.rest.stop(call_uuid)
                await self.rest.speak(call_uuid, buffer_text)
                iv.mark("rest_buffer_spoken", self.clock)
                await asyncio.sleep(self.config.rest_speech_s(buffer_text))
            except Exception as e:
                self.counts["rest_failures"] += 1
                logger.warning("REST Speak failed", extra={"error": repr(e)})
        correction = await fetch
        if not self._current(iv):
            return
        if correction is not None and self.rest is not None:
            try:
                await self.rest.speak(call_uuid, correction["correction_text"])
                iv.mark("rest_correction_spoken", self.clock)
            except Exception as e:
                self.counts["rest_failures"] += 1
                logger.warning("REST Speak failed", extra={"error": repr(e)})
        await self._hand_back(iv, correction)

    async def _hand_back(self, iv: Intervention, correction: dict[str, Any] | None) -> None:
        note = correction["override_note"] if correction else self.config.fallback_note
        await self._send_agent(
            {
                "event": "mirror.override",
                "note": note,
                "turn_id": iv.turn_id,
                "intervention_id": iv.id,
            }
        )
        iv.mark("override_sent", self.clock)
        iv.outcome = "completed" if correction else "completed_without_correction"
        self.counts["interventions_completed"] += 1

    # --- tool gate ---------------------------------------------------------------------------

    async def _gate(self, msg: dict[str, Any]) -> None:
        request_id = str(msg.get("request_id") or "")
        payload: dict[str, Any] = {"call_id": self.ctx.call_id, "tenant_id": self.ctx.tenant_id}
        payload.update({k: msg[k] for k in TURN_FIELDS if k in msg})
        self._with_tenant(payload)
        self.counts["gate_requests"] += 1
        try:
            result = await self.functions.invoke(GATE_TOOL, payload, self.config.gate_timeout_s)
        except FunctionError as e:
            self.counts["gate_failures"] += 1
            logger.warning("GateTool failed: failure mode applies", extra={"error": str(e)})
            result = self._gate_fail_safe(payload, e)
        self.counts[f"gate_{result.get('decision')}"] += 1
        await self._send_agent(
            {"event": "mirror.tool_decision", "request_id": request_id, "result": result}
        )

    def _gate_fail_safe(self, payload: dict[str, Any], error: FunctionError) -> dict[str, Any]:
        """Irreversible calls get the failure mode (hold by default), reversible ones run."""
        kind = {"timeout": "tier_timeout", "error_response": "invalid_event"}.get(
            error.kind, "internal_error"
        )
        if error.kind == "error_response" and error.detail == "state_unavailable":
            kind = "store_unavailable"
        try:
            event = GateToolEvent.model_validate(payload)
            outcome = fail_safe(event, self.config.mirror, kind, str(error))  # type: ignore[arg-type]
            return outcome.result.model_dump(mode="json")
        except ValidationError:  # unusable request: hold everything it names
            calls = [c for c in payload.get("tool_calls") or [] if isinstance(c, dict)]
            line = "Before I go ahead, can you confirm that's what you'd like me to do?"
            decisions = [
                {
                    "tool_call_id": str(c.get("id")),
                    "name": str(c.get("name")),
                    "decision": "hold",
                    "irreversible": True,
                    "reasons": [],
                    "spoken_line": line,
                    "decided_by": "failure_mode",
                    "failure": kind,
                }
                for c in calls
            ]
            return {
                "call_id": self.ctx.call_id,
                "tenant_id": self.ctx.tenant_id,
                "decision": "hold",
                "spoken_line": line,
                "decisions": decisions,
            }

    # --- lifecycle ---------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, eager: bool = False) -> asyncio.Task[Any]:
        """A task of this session's (awaited at close). `eager`: it runs up to its first
        suspension now, not on the loop's next turn."""
        loop = asyncio.get_running_loop()
        task = asyncio.Task(coro, loop=loop, eager_start=True) if eager else loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counts["internal_errors"] += 1
            logger.error("session task failed", exc_info=task.exception())

    async def close(self, reason: str) -> None:
        """Idempotent; every caller returns once the call's end is recorded."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close(reason))
        await asyncio.shield(self._close_task)

    async def _close(self, reason: str) -> None:
        self.closed = True
        if self._silence_task is not None:
            self._silence_task.cancel()
        self.checkpoints.fail_all("ended")
        turn = self._turn
        if turn is not None and turn.timer is not None:
            turn.timer.cancel()
        if self._wake is not None:
            self._wake.set()
        if self._tasks:  # correction fetches and scorings finish, so their results are stored
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.config.close_grace_s)
            for task in pending:
                self.counts["tasks_cancelled_at_close"] += 1
                task.cancel()
        if self._writer is not None and self._wake is not None:
            self._wake.set()  # what is queued for Plivo goes to the relay, which drains it
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), self.config.close_grace_s)
            except TimeoutError:
                self._writer.cancel()
        await self.call_end.finish(reason, self.summary())

    def summary(self) -> dict[str, int]:
        counts = {k: v for k, v in self.counts.items() if v}
        counts["stale_played"] = self.checkpoints.stale
        return counts
