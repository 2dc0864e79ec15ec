"""The caller-silence watchdog: see "Silence watchdog" in `session`'s docstring."""

from __future__ import annotations

import asyncio
import binascii
from typing import Any

from mirror_bridge.agent_protocol import MirrorCallerSilent
from mirror_bridge.audio import is_loud
from mirror_bridge.session_state import SessionState
from mirror_bridge.tasks import spawn


class SilenceMixin(SessionState):
    def _start_silence_watch(self) -> None:
        self._caller_heard_at = self.clock()
        if self.config.caller_silence_s > 0 and not self.closed and self._silence_task is None:
            self._silence_task = spawn(
                self._watch_silence(), name=f"{self.ctx.call_id}::silence-watchdog"
            )

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
        """Sleeps until the next moment a notice could be due, then re-checks (caller activity
        or new audio moves it later)."""
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
            await self._tell_agent(MirrorCallerSilent(silent_s=round(silent, 1), notice=notices))
