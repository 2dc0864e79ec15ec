"""The turn hold: the agent's audio for the current turn waits (at most `hold_budget_s`) while
ScoreTurn decides the turn; see "Audio and turns" in `session`'s docstring."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mirror_bridge.agent_protocol import MirrorTurn, MirrorUnsupervised, MirrorVerdict
from mirror_bridge.scoring import ScoringFailure
from mirror_bridge.session_state import AGENT, SessionState, Turn

logger = logging.getLogger("mirror_bridge.session")


class TurnHoldMixin(SessionState):
    def take_agent_audio(self, message: dict[str, Any]) -> None:
        """The agent's playAudio, checkpoint, clearAudio or sendDTMF (validated by the relay),
        taken at once: held, dropped, kept behind Mirror's speech or queued for Plivo. Never
        waits; no coroutine per frame."""
        if self.closed:
            self.counts["agent_frames_after_close"] += 1
            return
        turn = self._turn
        if turn is not None and turn.state == "dropped":
            self.counts["agent_frames_dropped"] += 1
        elif turn is not None and turn.state == "scoring":
            turn.held.append(message)
            self.counts["agent_frames_held"] += 1
        elif self._active is not None:
            self._after_speech.append(message)  # never over our buffer line or correction
        else:
            self._enqueue(message, AGENT)

    async def on_agent_audio(self, message: dict[str, Any]) -> None:
        self.take_agent_audio(message)

    def _begin_turn(self, annotation: MirrorTurn) -> None:
        previous = self._turn
        if previous is not None and previous.state == "scoring":
            self._open(previous)  # its audio goes out before the new turn's
        self.counts["turns"] += 1
        turn = Turn(annotation.turn_id, annotation, started=self.clock())
        self._turn = turn
        if self.closed:
            turn.state = "open"
            return
        loop = asyncio.get_running_loop()
        turn.timer = loop.call_later(self.config.hold_budget_s, self._budget_expired, turn)
        # eager: ScoreTurn is called before this returns
        self._spawn(self._score(turn), f"score:{turn.turn_id}", eager=True)

    def _budget_expired(self, turn: Turn) -> None:
        if turn.state == "scoring":
            self.counts["budget_expired"] += 1
            self._open(turn)

    def _open(self, turn: Turn) -> None:
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

    async def _score(self, turn: Turn) -> None:
        verdict = await self.scoring.score(turn.annotation, turn.turn_id)
        if isinstance(verdict, ScoringFailure):
            self.counts["score_failures"] += 1
            self.counts[f"score_failure_{verdict.kind}"] += 1
            logger.warning(
                "ScoreTurn failed: speech fails open",
                extra={"call_id": self.ctx.call_id, "error": str(verdict)},
            )
            if turn.state == "scoring":
                self._open(turn)
            # never silently unsupervised: the agent is told, with the failure kind
            self.counts["unsupervised_notices"] += 1
            await self._tell_agent(MirrorUnsupervised(turn_id=turn.turn_id, failure=verdict.kind))
            return
        self.counts[f"verdict_{verdict.decision}"] += 1
        if verdict.decision == "intervene" and not self.closed:
            self._start_intervention(turn, verdict)
        elif turn.state == "scoring":
            self._open(turn)
        await self._tell_agent(MirrorVerdict(turn_id=turn.turn_id, verdict=verdict))
