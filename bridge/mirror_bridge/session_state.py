"""What one call's session holds, shared by the concerns it is split into (the turn hold, the
outbox, interventions, the tool gate, the silence watchdog, the lifecycle: one module each, one
mixin class each, combined in `session.CallSession`), and its configuration."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mirror.models import CallContext, MirrorConfig, Verdict
from mirror_bridge.agent_protocol import MirrorOutbound, MirrorTurn
from mirror_bridge.audio import MULAW, SAMPLE_RATE, bytes_per_second
from mirror_bridge.call_end import CallEnd, CallStateWriter, EventSink
from mirror_bridge.intervention import Checkpoints, Intervention, Playout
from mirror_bridge.outbound import SessionIO
from mirror_bridge.scoring import CallScope, ScoringClient
from mirror_bridge.tasks import spawn
from mirror_bridge.transport import FunctionTransport
from mirror_bridge.tts import TTS, BufferLineCache, RestSpeaker, estimated_speak_s

logger = logging.getLogger("mirror_bridge.session")

Origin = Literal["agent", "mirror"]
AGENT: Origin = "agent"
MIRROR: Origin = "mirror"
DEFAULT_FALLBACK_NOTE = (
    "Your last reply was stopped before the caller heard all of it. Re-check what the caller "
    "asked for, read the details back, and get a clear yes before doing anything irreversible."
)


class OverrideNotes(Protocol):
    """The call's one-shot override note in the store (`mirror.state.StateStore`'s part)."""

    def take_override(self, ctx: CallContext, now: float) -> str | None: ...


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
class Turn:
    """The current turn: its annotation, and its audio while ScoreTurn decides it."""

    turn_id: str
    annotation: MirrorTurn
    state: str = "scoring"  # scoring -> open | dropped
    held: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    started: float = 0.0


class SessionState:
    """The session's state and collaborators; the concerns' mixins work on it."""

    def __init__(
        self,
        ctx: CallContext,
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
        notes: OverrideNotes | None = None,
    ) -> None:
        self.ctx = ctx
        self.notes = notes
        """Where GenerateCorrection stores the override note: the one delivered is taken."""
        self.io = io
        self.functions = functions
        self.tts = tts
        self.config = config = config or BridgeSessionConfig()
        self.scoring = ScoringClient(
            functions,
            CallScope(ctx.call_id, ctx.tenant_id, config.policies, config.irreversible_tools),
            score_timeout_s=config.score_timeout_s,
            gate_timeout_s=config.gate_timeout_s,
            correction_timeout_s=config.correction_timeout_s,
        )
        self.clock = clock
        self.buffer_lines = buffer_lines or BufferLineCache(tts)
        self.rest = rest
        self.counts: Counter[str] = Counter()
        self.call_end = CallEnd(ctx, events=events, state=state)
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
        self._turn: Turn | None = None
        self._active: Intervention | None = None
        self._after_speech: list[dict[str, Any]] = []
        self._plivo_gone = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._agent_lock = asyncio.Lock()
        self._clears_on_wire: deque[Origin] = deque()
        """Who sent each clearAudio not yet answered by a clearedAudio (in order)."""
        self._close_task: asyncio.Task[None] | None = None
        self._caller_heard_at = 0.0
        self._silence_task: asyncio.Task[None] | None = None

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], job: str, *, eager: bool = False
    ) -> asyncio.Task[Any]:
        """A task of this session's (awaited at close), named `<call_id>::<job>`. `eager`: it
        runs up to its first suspension now, not on the loop's next turn."""
        task = spawn(coro, name=f"{self.ctx.call_id}::{job}", eager=eager)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        else:
            self._task_done(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counts["internal_errors"] += 1
            logger.error(
                "session task failed",
                exc_info=task.exception(),
                extra={"call_id": self.ctx.call_id, "task": task.get_name()},
            )

    if TYPE_CHECKING:  # what one concern calls in another

        def _enqueue(self, msg: dict[str, Any], origin: Origin) -> None: ...

        def _purge_agent_frames(self) -> int: ...

        async def _send_agent(self, message: dict[str, Any]) -> None: ...

        async def _tell_agent(self, message: MirrorOutbound) -> None: ...

        def _clear_audio(self) -> None: ...

        def _play_audio(self, audio: bytes, checkpoint_name: str) -> None: ...

        def _release(self, messages: list[dict[str, Any]]) -> None: ...

        def _start_intervention(self, turn: Turn, verdict: Verdict) -> None: ...

        async def close(self, reason: str) -> None: ...
