"""The session's outgoing side: everything bound for Plivo into the one ordered Plivo queue,
the agent's messages in order behind any send that waits, and the messages Mirror itself writes
(Plivo's built with `plivo_protocol`'s builders, the agent's with `agent_protocol`'s models,
here only).

Everything bound for Plivo goes through `_enqueue` into `SessionIO.plivo` (the relay's writer:
`outbound._Writer`), which never makes the session wait and keeps the order, so released audio
can never be overtaken by newer audio and nothing is sent twice; an intervention drops the
agent's messages still queued there (`purge`)."""

from __future__ import annotations

import logging
from typing import Any

from mirror_bridge import plivo_protocol
from mirror_bridge.agent_protocol import MirrorOutbound
from mirror_bridge.audio import MULAW, SAMPLE_RATE, chunks, for_stream
from mirror_bridge.session_state import AGENT, MIRROR, Origin, SessionState

logger = logging.getLogger("mirror_bridge.session")

_SENT = {AGENT: "agent_frames_sent", MIRROR: "mirror_frames_sent"}


class OutboxMixin(SessionState):
    # --- to Plivo ----------------------------------------------------------------------------

    def _enqueue(self, msg: dict[str, Any], origin: Origin) -> None:
        """Queue a message for Plivo in order. A clearAudio fails the pending waits now: the
        checkpoints before it are dropped by Plivo; the ones after it belong to the new queue."""
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
        try:
            queued = self.io.plivo.enqueue(msg, origin)
        except Exception as e:  # as a socket gone
            queued = False
            logger.warning(
                "Plivo queue failed", extra={"call_id": self.ctx.call_id, "error": repr(e)}
            )
        if queued:
            self.counts[_SENT[origin]] += 1
            if kind == "clearAudio":
                self._clears_on_wire.append(origin)
            return
        self.counts["plivo_frames_lost"] += 1
        if not self._plivo_gone:
            self._plivo_gone = True
            logger.info("Plivo socket unusable", extra={"call_id": self.ctx.call_id})

    def _purge_agent_frames(self) -> int:
        """The agent's messages still queued for Plivo (not yet written): dropped."""
        return self.io.plivo.purge(AGENT)

    # --- Mirror's own messages to Plivo --------------------------------------------------------

    def _clear_audio(self) -> None:
        self._enqueue(plivo_protocol.clear_audio(self.stream_id), MIRROR)

    def _play_audio(self, audio: bytes, checkpoint_name: str) -> None:
        """`audio` (16-bit PCM at 8 kHz) in the stream's format, as playAudio chunks of 200 ms,
        then the checkpoint named `checkpoint_name`."""
        data = for_stream(audio, self.encoding, self.sample_rate)
        size = 1600 * (1 if self.encoding == MULAW else 2 * self.sample_rate // SAMPLE_RATE)
        for part in chunks(data, size):
            self._enqueue(plivo_protocol.play_audio(part, self.encoding, self.sample_rate), MIRROR)
        self._enqueue(plivo_protocol.checkpoint(self.stream_id, checkpoint_name), MIRROR)

    # --- to the agent --------------------------------------------------------------------------

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
            logger.info(
                "agent socket unusable", extra={"call_id": self.ctx.call_id, "error": repr(e)}
            )
            return True

    async def _send_agent(self, message: dict[str, Any]) -> None:
        if self._offer_agent(message):
            return
        async with self._agent_lock:
            try:
                await self.io.send_agent(message)
            except Exception as e:
                self.counts["agent_messages_lost"] += 1
                logger.info(
                    "agent socket unusable",
                    extra={"call_id": self.ctx.call_id, "error": repr(e)},
                )

    async def _tell_agent(self, message: MirrorOutbound) -> None:
        """A Mirror message to the agent (`agent_protocol`'s models: the one place they are
        built)."""
        await self._send_agent(message.to_wire())
