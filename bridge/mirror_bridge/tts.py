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
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client("polly", region_name=self._region_name)
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


def wav_to_ulaw(wav_bytes: bytes) -> bytes:
    """A mono 16-bit WAV (espeak-ng's output) → 8 kHz μ-law."""
    with wave.open(io.BytesIO(wav_bytes)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError("expected 16-bit mono WAV")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    return lin2ulaw(resample_pcm(pcm, rate, SAMPLE_RATE))


class OfflineTTS:
    """espeak-ng when installed, else the pre-rendered clips (never a network call).

    Without espeak-ng, a text with a clip of its own gets that clip, and any other text gets the
    generic "one moment" clip: the local run goes on and the log says what happened."""

    def __init__(
        self,
        *,
        espeak: str | None = None,
        clips_dir: Path = CLIPS_DIR,
        voice_map: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.espeak = espeak if espeak is not None else shutil.which("espeak-ng")
        self.clips_dir = clips_dir
        self.voice_map = voice_map or {}
        self.timeout_s = timeout_s
        if not self.espeak:
            logger.warning(
                "espeak-ng not found: speaking pre-rendered clips from %s "
                "(install it with `apt-get install espeak-ng` or `brew install espeak-ng`)",
                clips_dir,
            )

    async def synthesize(self, text: str, voice: str) -> bytes:
        if not self.espeak:
            return self._clip(text)
        process = await asyncio.create_subprocess_exec(
            self.espeak,
            "--stdout",
            "-v",
            self.voice_map.get(voice, "en-us"),
            text,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s)
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
