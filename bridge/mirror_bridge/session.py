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
bound for Plivo goes into one ordered queue (`SessionIO.plivo`, the relay's writer), which never
makes the session wait: released audio can never be overtaken by newer audio, and nothing is
sent twice.

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
(it reaches the agent when the clear was the agent's); one that answers none (a repeated or late
ack) is counted (`unsolicited_cleared`) and reaches the agent, and fails no wait: an
intervention survives duplicate and late Plivo events and always ends with its correction or an
explicit hand-back (`mirror.override`), never in silence. A note delivered is a note consumed:
once the agent has the override note, the stored copy is taken (`notes`), so it cannot be taken
again through the Api.

**Tool gate.** `mirror.tool_gate` → GateTool → `mirror.tool_decision`. A failure, timeout or
`{"error"}` answer holds irreversible calls (`tool_gate_failure_mode`) and allows reversible ones
(the core's `mirror.gate.fail_safe`).

**Silence watchdog** (`caller_silence_s` > 0). The caller is heard when a media frame has a
loud enough sample, when they press a key, or when a `mirror.turn` brings their words. Silence
counts from the later of that and the estimated end of the audio queued to them (the agent's and
Mirror's), so a long answer is not the caller's silence. After `caller_silence_s` of it the agent
gets `{"event": "mirror.caller_silent", "silent_s": ..., "notice": 1}`, then notice 2, 3, ...
every further `caller_silence_s`; any caller activity starts a new count.

**Close** (stop, hang-up, socket close; idempotent, safe from several paths at once): pending
waits fail with `ended`, in-flight function calls get up to `close_grace_s` (a correction being
fetched is still stored by GenerateCorrection; what is queued for Plivo is in the relay's queue,
which sends it while the socket lasts), then the final state is written and `CallEnded` emitted
once.

**Typed throughout.** The session takes the relay's parsed events (`StartEvent` and the other
`plivo_protocol` events, `MirrorTurn`, `MirrorToolGate`; a plain dict is parsed once at the
door), talks to the functions through one `ScoringClient` (typed requests, typed answers or a
`ScoringFailure`), and builds what it sends with `agent_protocol`'s models and
`plivo_protocol`'s builders. The agent's audio and the caller's media frames are never parsed
or validated: they are forwarded as they came.

**Modules**, one concern each: `hold` (turns and the hold), `outbox` (everything sent),
`intervene` (both intervention strategies), `gating`, `silence`, `session_state` (the shared
state and config), and this one (inbound dispatch and the lifecycle).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from mirror_bridge.agent_protocol import (
    MirrorProtocolError,
    MirrorToolGate,
    MirrorTurn,
    parse_mirror_message,
)
from mirror_bridge.audio import bytes_per_second
from mirror_bridge.gating import GateMixin
from mirror_bridge.hold import TurnHoldMixin
from mirror_bridge.intervene import InterventionMixin
from mirror_bridge.outbound import SessionIO
from mirror_bridge.outbox import OutboxMixin
from mirror_bridge.plivo_protocol import (
    ClearedAudioEvent,
    DtmfEvent,
    MediaEvent,
    PlayedStreamEvent,
    PlivoEvent,
    StartEvent,
    StopEvent,
    parse_event,
)
from mirror_bridge.session_state import (
    AGENT,
    DEFAULT_FALLBACK_NOTE,
    MIRROR,
    BridgeSessionConfig,
)
from mirror_bridge.silence import SilenceMixin

logger = logging.getLogger(__name__)

__all__ = [
    "AGENT",
    "DEFAULT_FALLBACK_NOTE",
    "MIRROR",
    "BridgeSessionConfig",
    "CallSession",
    "SessionIO",
]


class CallSession(OutboxMixin, TurnHoldMixin, InterventionMixin, GateMixin, SilenceMixin):
    """See the module docstring. All methods run on the event loop and never block it."""

    # --- inbound: Plivo ----------------------------------------------------------------------

    async def on_start(self, start: StartEvent | dict[str, Any]) -> None:
        if not isinstance(start, StartEvent):
            parsed = parse_event(start)
            if not isinstance(parsed, StartEvent):
                raise TypeError(f"not a start event: {parsed.event!r}")
            start = parsed
        self.stream_id = start.stream_id
        self.checkpoints.stream_id = self.stream_id
        self.encoding = start.media_format.encoding
        self.sample_rate = start.media_format.sample_rate
        self._rate = bytes_per_second(self.encoding, self.sample_rate) or 1
        self.bidirectional = start.bidirectional
        if start.call_id != self.ctx.call_id:
            logger.info(
                "stream callId differs from the session's", extra={"call_id": self.ctx.call_id}
            )
        self._start_silence_watch()

    def take_plivo_event(
        self, event: PlivoEvent | dict[str, Any]
    ) -> Coroutine[Any, Any, None] | None:
        """`on_plivo_event`, done at once when it can be (caller media, fifty a second, whose
        writer has room): None when it is done, else the coroutine that does it (or its rest),
        to be awaited before the next event. Caller media is never parsed here: its frame goes
        on as it came."""
        if type(event) is MediaEvent:
            raw = event.raw
        elif type(event) is dict and event.get("event") == "media":
            raw = event
        else:
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

    async def on_plivo_event(self, event: PlivoEvent | dict[str, Any]) -> None:
        if isinstance(event, dict):
            if event.get("event") == "media":
                rest = self.take_plivo_event(event)
                if rest is not None:
                    await rest
                return
            event = parse_event(event)  # once, at the door
        forward = True
        match event:
            case MediaEvent():
                rest = self.take_plivo_event(event)
                if rest is not None:
                    await rest
                return
            case PlayedStreamEvent(name=name, stream_id=stream_id):
                if self.checkpoints.resolve(name, stream_id, self.clock()):
                    self.counts["checkpoints_played"] += 1
                    forward = False
                elif self.checkpoints.owns(name):
                    self.counts["stale_played"] += 1
                    forward = False
            case ClearedAudioEvent():
                if self._clears_on_wire:  # answers a clear we sent: its waits already failed
                    forward = self._clears_on_wire.popleft() == AGENT
                else:
                    # A repeated or late ack (Plivo clears only on a clearAudio, and every one
                    # goes out through this session): counted and passed on, but it fails no
                    # wait. Were the queue really cleared, a wait's watchdog fires and the
                    # intervention goes on to its correction and hand-back; failing the waits
                    # here ended interventions in silence (issue 13, item 12).
                    self.counts["unsolicited_cleared"] += 1
            case StopEvent():
                await self.close("stop")
                return
            case DtmfEvent():
                self.counts["dtmf"] += 1
                self._caller_heard_at = self.clock()
        if forward and not self.closed:
            await self._send_agent(event.raw)

    # --- inbound: agent ----------------------------------------------------------------------

    async def on_mirror_message(
        self, message: MirrorTurn | MirrorToolGate | dict[str, Any]
    ) -> None:
        if isinstance(message, dict):
            try:
                message = parse_mirror_message(message)  # once, at the door
            except MirrorProtocolError as e:
                await self._tell_agent(e.error)
                return
        if isinstance(message, MirrorTurn):
            if message.customer_text:
                self._caller_heard_at = self.clock()
            self._begin_turn(message)
        else:
            self._spawn(self._gate(message), f"gate:{message.request_id}")

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """Idempotent; every caller returns once the call's end is recorded."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._close(reason), name=f"{self.ctx.call_id}::close"
            )
        await asyncio.shield(self._close_task)

    async def _close(self, reason: str) -> None:
        self.closed = True
        if reason == "max_duration":  # the call-length guard: the call ends, not only the stream
            await self._hang_up()
        if self._silence_task is not None:
            self._silence_task.cancel()
        self.checkpoints.fail_all("ended")
        turn = self._turn
        if turn is not None and turn.timer is not None:
            turn.timer.cancel()
        if self._tasks:  # correction fetches and scorings finish, so their results are stored
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.config.close_grace_s)
            for task in pending:
                self.counts["tasks_cancelled_at_close"] += 1
                task.cancel()
        # what is queued for Plivo is in the relay's queue, which sends it while the socket lasts
        await self.call_end.finish(reason, self.summary())

    async def _hang_up(self) -> None:
        """Hang the call up through Plivo's REST API (Hangup Call). Closing the stream alone
        would leave the caller in silence (`keepCallAlive`) until Plivo's `streamTimeout`.
        Without REST credentials (`PLIVO_AUTH_ID`) the stream's close is all there is."""
        if self.rest is None:
            self.counts["hangup_unavailable"] += 1
            logger.warning(
                "MAX_CALL_S reached and no Plivo REST client: only the stream closes",
                extra={"call_id": self.ctx.call_id},
            )
            return
        try:
            await asyncio.wait_for(self.rest.hangup(self.ctx.call_id), self.config.tts_timeout_s)
        except Exception as e:
            self.counts["hangup_failures"] += 1
            logger.warning(
                "Plivo REST hangup failed", extra={"call_id": self.ctx.call_id, "error": repr(e)}
            )
            return
        self.counts["hangups"] += 1

    def summary(self) -> dict[str, int]:
        counts = {k: v for k, v in self.counts.items() if v}
        counts["stale_played"] = self.checkpoints.stale
        return counts
