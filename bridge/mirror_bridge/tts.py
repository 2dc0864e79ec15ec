"""Speech for interventions: text → 8 kHz μ-law, the buffer-line cache, and the REST fallback.

- `PollyTTS` (AWS): Polly's 8 kHz 16-bit PCM converted to μ-law, in a bounded pool.
- `OfflineTTS` (local runs): espeak-ng as a subprocess when installed; otherwise the clips in
  `clips/` (pre-rendered with espeak-ng), with one log line saying so.
- `BufferLineCache`: the buffer line is rendered once per (voice, text) and shared by every call;
  concurrent first requests share one synthesis.
- `PlivoRestSpeaker`: Speak / Stop Speak over Plivo's REST API for unidirectional streams (no
  playAudio there); the SDK is blocking, so it runs in a bounded pool.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import shutil
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mirror import aws
from mirror_bridge.audio import SAMPLE_RATE, lin2ulaw, resample_pcm

logger = logging.getLogger(__name__)

CLIPS_DIR = Path(__file__).resolve().parent / "clips"
DEFAULT_VOICE = "Joanna"
GENERIC_CLIP = "one_moment"
"""Spoken instead of any text no clip has, when espeak-ng is missing."""


@runtime_checkable
class TTS(Protocol):
    async def synthesize(self, text: str, voice: str) -> bytes:
        """`text` as 8 kHz μ-law (raw, no header)."""
        ...


class PollyTTS:
    """Amazon Polly, `OutputFormat=pcm` at 8 kHz (signed 16-bit little-endian mono)."""

    def __init__(
        self,
        client: Any = None,
        *,
        engine: str = "neural",
        executor: ThreadPoolExecutor | None = None,
        region_name: str | None = None,
    ) -> None:
        self._client = client
        self._engine = engine
        self._region_name = region_name
        self._pool = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="polly")

    def _client_now(self) -> Any:
        if self._client is None:  # the one AWS client factory's timeouts and standard retries
            self._client = aws.client("polly", region_name=self._region_name)
        return self._client

    def _synthesize_sync(self, text: str, voice: str) -> bytes:
        response = self._client_now().synthesize_speech(
            Text=text,
            VoiceId=voice,
            Engine=self._engine,
            OutputFormat="pcm",
            SampleRate=str(SAMPLE_RATE),
            TextType="text",
        )
        stream = response["AudioStream"]
        try:
            pcm = stream.read()
        finally:
            stream.close()
        if len(pcm) % 2:  # a torn last sample: drop it rather than fail the line
            pcm = pcm[:-1]
        return lin2ulaw(pcm)

    async def synthesize(self, text: str, voice: str) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._synthesize_sync, text, voice)


def clip_key(text: str) -> str:
    """The file stem a pre-rendered line is stored under: lower-case words joined by `_`."""
    return "_".join(re.findall(r"[a-z0-9']+", text.lower())).replace("'", "")[:80]


def load_clip(key: str, clips_dir: Path = CLIPS_DIR) -> bytes | None:
    path = clips_dir / f"{key}.ulaw"
    return path.read_bytes() if path.is_file() else None


def _wav_pcm(wav_bytes: bytes) -> tuple[bytes, int]:
    """The PCM and rate of a 16-bit mono WAV. A header written to a pipe cannot hold the real
    sizes (espeak-ng puts 0x7ffff000 there, other tools 0): `wave` reads the first kind, and
    the chunks are walked by hand for the rest, the data running to the end of the bytes."""
    try:
        with wave.open(io.BytesIO(wav_bytes)) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise ValueError("expected 16-bit mono WAV")
            return w.readframes(w.getnframes()), w.getframerate()
    except wave.Error:
        pass
    if wav_bytes[:4] != b"RIFF" or wav_bytes[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    pos, rate = 12, 0
    while pos + 8 <= len(wav_bytes):
        kind, size = (
            wav_bytes[pos : pos + 4],
            int.from_bytes(wav_bytes[pos + 4 : pos + 8], "little"),
        )
        body = wav_bytes[pos + 8 :]
        if kind == b"fmt ":
            channels = int.from_bytes(body[2:4], "little")
            rate = int.from_bytes(body[4:8], "little")
            if channels != 1 or int.from_bytes(body[14:16], "little") != 16:
                raise ValueError("expected 16-bit mono WAV")
        elif kind == b"data":
            if not rate:
                raise ValueError("WAV data before its format")
            pcm = body if size in (0, 0xFFFFFFFF) or size > len(body) else body[:size]
            return pcm[: len(pcm) - len(pcm) % 2], rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV without data")


def wav_to_ulaw(wav_bytes: bytes) -> bytes:
    """A mono 16-bit WAV (espeak-ng's output) → 8 kHz μ-law."""
    pcm, rate = _wav_pcm(wav_bytes)
    return lin2ulaw(resample_pcm(pcm, rate, SAMPLE_RATE))


ESPEAK = "espeak-ng"
ESPEAK_INSTALL_HINT = "install it with `apt install espeak-ng` or `brew install espeak-ng`"
ESPEAK_VOICES = {"Joanna": "en-us+f3", "Matthew": "en-us+m3"}
"""Polly voice ids (the tenants' `voice`) → espeak-ng voices; any other id speaks `en-us`."""


def find_espeak() -> str | None:
    """espeak-ng's path when it is on PATH."""
    return shutil.which(ESPEAK)


class OfflineTTS:
    """espeak-ng when installed, else the pre-rendered clips (never a network call).

    Without espeak-ng, a text with a clip of its own gets that clip, and any other text gets the
    generic "one moment" clip: the local run goes on, and one log line says how to install
    espeak-ng. A failed espeak-ng run falls back to the clips too (logged). The text goes to
    espeak-ng on stdin, so a line starting with `-` is never read as an option."""

    def __init__(
        self,
        *,
        espeak: str | None = None,
        clips_dir: Path = CLIPS_DIR,
        voice_map: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.espeak = espeak if espeak is not None else find_espeak()
        self.clips_dir = clips_dir
        self.voice_map = ESPEAK_VOICES if voice_map is None else voice_map
        self.timeout_s = timeout_s
        self.fallbacks = 0
        """Lines spoken from the clips because espeak-ng failed."""
        if not self.espeak:
            logger.warning(
                "espeak-ng not found: speaking pre-rendered clips from %s (%s)",
                clips_dir,
                ESPEAK_INSTALL_HINT,
            )

    @property
    def engine(self) -> str:
        return "espeak-ng" if self.espeak else "clips"

    async def synthesize(self, text: str, voice: str) -> bytes:
        if not self.espeak:
            return self._clip(text)
        try:
            return await self._espeak(self.espeak, text, self.voice_map.get(voice, "en-us"))
        except Exception as e:  # a broken install must not silence an intervention
            self.fallbacks += 1
            logger.warning("espeak-ng failed (%s): speaking a pre-rendered clip", e)
            return self._clip(text)

    async def _espeak(self, path: str, text: str, voice: str) -> bytes:
        process = await asyncio.create_subprocess_exec(
            path,
            "--stdout",
            "--stdin",
            "-v",
            voice,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                process.communicate(text.encode("utf-8")), self.timeout_s
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"espeak-ng exited {process.returncode}: {err[:200]!r}")
        return await asyncio.to_thread(wav_to_ulaw, out)  # CPU work off the loop

    def _clip(self, text: str) -> bytes:
        key = clip_key(text)
        clip = load_clip(key, self.clips_dir)
        if clip is None:
            logger.info("no clip for this line: speaking the generic one (key %s)", key)
            clip = load_clip(GENERIC_CLIP, self.clips_dir)
        if clip is None:
            raise FileNotFoundError(f"no clips in {self.clips_dir}")
        return clip


class BufferLineCache:
    """Rendered lines by (voice, text), rendered once even when many calls ask at once."""

    def __init__(self, tts: TTS) -> None:
        self.tts = tts
        self._lines: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self.renders = 0

    async def get(self, text: str, voice: str) -> bytes:
        key = (voice, text)
        future = self._lines.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.get_running_loop().create_future()
            self._lines[key] = future
            self.renders += 1
            try:
                future.set_result(await self.tts.synthesize(text, voice))
            except BaseException as e:  # a failed render is retried by the next caller
                future.set_exception(e)
                future.exception()  # retrieved here: waiters re-raise it themselves
                raise
        return await asyncio.shield(future)

    async def warm(self, text: str, voices: list[str]) -> None:
        """Render ahead of the first call (the service's start-up)."""
        await asyncio.gather(*(self.get(text, v) for v in voices))


# --- unidirectional streams: Plivo REST Speak -----------------------------------------------


class RestSpeaker(Protocol):
    async def speak(self, call_uuid: str, text: str) -> None: ...

    async def stop(self, call_uuid: str) -> None: ...

    async def hangup(self, call_uuid: str) -> None:
        """End the call (Plivo's Hangup Call: DELETE /v1/Account/{auth_id}/Call/{uuid}/)."""
        ...


def estimated_speak_s(text: str) -> float:
    """How long a REST Speak plays (no completion event exists): the notes' floor heuristic."""
    return max(2.0, len(text) / 13) + 0.5


class PlivoRestSpeaker:
    """`client.calls.speak` / `client.calls.stop_speaking` (plivo 4.63). The client is injected
    (tests pass a fake: the REST API is paid); it keeps per-request state, so one lock serializes
    its use."""

    def __init__(
        self,
        client: Any = None,
        *,
        voice: str = "WOMAN",
        language: str = "en-US",
        executor: ThreadPoolExecutor | None = None,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._client = client
        self._factory = client_factory
        self.voice = voice
        self.language = language
        self._pool = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="plivo")
        self._lock = asyncio.Lock()

    def _client_now(self) -> Any:
        if self._client is None:
            if self._factory is not None:
                self._client = self._factory()
            else:
                import plivo  # credentials from PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN

                self._client = plivo.RestClient()
        return self._client

    async def _run(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        async with self._lock:
            return await loop.run_in_executor(self._pool, fn)

    async def speak(self, call_uuid: str, text: str) -> None:
        await self._run(
            lambda: self._client_now().calls.speak(
                call_uuid, text, voice=self.voice, language=self.language
            )
        )

    async def stop(self, call_uuid: str) -> None:
        def stop_sync() -> None:
            try:
                self._client_now().calls.stop_speaking(call_uuid)
            except Exception as e:  # nothing playing / call gone: stopping is done either way
                if type(e).__name__ != "ResourceNotFoundError":
                    raise

        await self._run(stop_sync)

    async def hangup(self, call_uuid: str) -> None:
        """Hang the call up (`client.calls.delete`: DELETE .../Call/{call_uuid}/). A call that
        is already gone is hung up."""

        def hangup_sync() -> None:
            try:
                self._client_now().calls.delete(call_uuid)
            except Exception as e:
                if type(e).__name__ != "ResourceNotFoundError":
                    raise

        await self._run(hangup_sync)
