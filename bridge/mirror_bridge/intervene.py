"""Interventions: see "Intervention" in `session`'s docstring. Two strategies: a bidirectional
stream gets clearAudio, the buffer line and the correction as playAudio with checkpoints; a
unidirectional one gets them through Plivo's REST Speak, with a duration estimate standing in
for the checkpoint. Both end with `mirror.override` to the agent."""

from __future__ import annotations

import asyncio
import logging
import time

from mirror.correction import CorrectionResult
from mirror.models import Verdict
from mirror_bridge.agent_protocol import MirrorOverride
from mirror_bridge.intervention import Intervention, WaitOutcome, wait_checkpoint
from mirror_bridge.scoring import ScoringFailure
from mirror_bridge.session_state import SessionState, Turn

logger = logging.getLogger("mirror_bridge.session")

CorrectionFetch = asyncio.Task[CorrectionResult | None]


class InterventionMixin(SessionState):
    def _start_intervention(self, turn: Turn, verdict: Verdict) -> None:
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
            self._clear_audio()
        iv.mark("clearAudio", self.clock)
        fetch = self._spawn(self._fetch_correction(turn, iv), f"correction:{iv.seq}")
        self._spawn(self._intervene(iv, fetch), f"intervene:{iv.seq}")

    async def _fetch_correction(self, turn: Turn, iv: Intervention) -> CorrectionResult | None:
        iv.mark("correction_requested", self.clock)
        result = await self.scoring.correct(turn.annotation, turn.turn_id, iv.verdict)
        if isinstance(result, ScoringFailure):
            self.counts["correction_failures"] += 1
            logger.warning(
                "GenerateCorrection failed",
                extra={"call_id": self.ctx.call_id, "error": str(result)},
            )
            return None
        iv.correction = result
        iv.mark("correction_received", self.clock)
        if not result.note_stored:
            self.counts["override_not_stored"] += 1
        return result

    def _current(self, iv: Intervention) -> bool:
        return self._active is iv and not self.closed

    async def _intervene(self, iv: Intervention, fetch: CorrectionFetch) -> None:
        try:
            buffer_text = (
                self.config.buffer_text or iv.verdict.buffer_text or self.config.mirror.buffer_text
            )
            if self.bidirectional:
                await self._intervene_bidirectional(iv, buffer_text, fetch)
            else:
                await self._intervene_rest(iv, buffer_text, fetch)
        finally:
            if self._active is iv:
                self._active = None
                held, self._after_speech = self._after_speech, []
                self._release(held)

    # --- bidirectional: playAudio and checkpoints ----------------------------------------------

    async def _intervene_bidirectional(
        self, iv: Intervention, buffer_text: str, fetch: CorrectionFetch
    ) -> None:
        audio = await self._render(buffer_text, cached=True)
        if audio is not None and self._current(iv):
            outcome = await self._play(iv, audio, "buffer")
            if outcome == "ended":
                iv.outcome = "ended"
                return
            # "cleared": only Mirror clears the queue now, for a newer intervention, which
            # takes over below (superseded); while this one is current it goes on
        correction = await fetch
        if not self._current(iv):
            iv.outcome = "superseded" if not self.closed else "ended"
            return
        if correction is not None:
            line = await self._render(correction.correction_text, cached=False)
            if line is not None and self._current(iv):
                if await self._play(iv, line, "correction") == "ended":
                    iv.outcome = "ended"
                    return
        if self._current(iv):
            await self._hand_back(iv, correction)

    async def _render(self, text: str, *, cached: bool) -> bytes | None:
        try:
            if cached:
                audio = self.buffer_lines.get(text, self.config.voice)
            else:
                audio = self.tts.synthesize(text, self.config.voice)
            return await asyncio.wait_for(audio, self.config.tts_timeout_s)
        except Exception as e:
            self.counts["tts_failures"] += 1
            logger.warning("TTS failed", extra={"call_id": self.ctx.call_id, "error": repr(e)})
            return None

    async def _play(self, iv: Intervention, audio: bytes, purpose: str) -> WaitOutcome:
        """playAudio chunks and a uniquely named checkpoint; wait for exactly its ack."""
        name = iv.checkpoint(purpose)
        future = self.checkpoints.expect(name)
        self._play_audio(audio, name)
        iv.mark(f"{purpose}_sent", self.clock)
        outcome = await wait_checkpoint(
            future, self.playout.remaining() + self.config.checkpoint_margin_s
        )
        self.checkpoints.forget(name)
        iv.mark(f"{purpose}_{outcome}", self.clock)
        if outcome == "timeout":
            self.counts["checkpoint_timeouts"] += 1
        return outcome

    # --- unidirectional: REST Speak ------------------------------------------------------------

    async def _intervene_rest(
        self, iv: Intervention, buffer_text: str, fetch: CorrectionFetch
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
                logger.warning("REST Speak failed", extra={"call_id": call_uuid, "error": repr(e)})
        correction = await fetch
        if not self._current(iv):
            return
        if correction is not None and self.rest is not None:
            try:
                await self.rest.speak(call_uuid, correction.correction_text)
                iv.mark("rest_correction_spoken", self.clock)
            except Exception as e:
                self.counts["rest_failures"] += 1
                logger.warning("REST Speak failed", extra={"call_id": call_uuid, "error": repr(e)})
        await self._hand_back(iv, correction)

    async def _hand_back(self, iv: Intervention, correction: CorrectionResult | None) -> None:
        note = correction.override_note if correction else self.config.fallback_note
        await self._tell_agent(MirrorOverride(note=note, turn_id=iv.turn_id, intervention_id=iv.id))
        iv.mark("override_sent", self.clock)
        iv.outcome = "completed" if correction else "completed_without_correction"
        self.counts["interventions_completed"] += 1
        if correction is not None and correction.note_stored:
            await self._consume_note()

    async def _consume_note(self) -> None:
        """The note just delivered is taken from the store (GenerateCorrection stored it for
        an agent that reads it through the Api): a note delivered is a note consumed, never
        taken a second time. A store failure is counted; the agent has its note."""
        notes = self.notes
        if notes is None:
            return
        ctx = self.ctx
        try:
            await asyncio.wait_for(
                asyncio.to_thread(notes.take_override, ctx, time.time()),
                self.config.correction_timeout_s,
            )
        except Exception as e:
            self.counts["override_note_consume_failures"] += 1
            logger.warning(
                "could not consume the delivered override note",
                extra={"call_id": ctx.call_id, "error": repr(e)},
            )
            return
        self.counts["override_notes_consumed"] += 1
