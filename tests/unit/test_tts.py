"""μ-law vectors, the TTS engines (Polly faked at the client, espeak-ng never required; a fake
espeak-ng process is tests/integration/test_tts_espeak.py's), the buffer-line cache and the REST
Speak fallback (a fake plivo client: the REST API is paid)."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import warnings
import wave
from array import array
from pathlib import Path
from typing import Any

import pytest

from mirror_bridge import audio
from mirror_bridge.tts import (
    BufferLineCache,
    OfflineTTS,
    PlivoRestSpeaker,
    PollyTTS,
    clip_key,
    load_clip,
    wav_to_ulaw,
)
from tests.conftest import run
from tests.support.audio import pcm

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("sample", "byte"),
    [(0, 0xFF), (-1, 0x7E), (32767, 0x80), (-32768, 0x00), (1000, 0xCE), (-1000, 0x4E)],
)
def test_mulaw_encode_vectors(sample: int, byte: int) -> None:
    assert audio.lin2ulaw(pcm(sample)) == bytes([byte])


def test_mulaw_decode_vectors() -> None:
    decoded = struct.unpack("<4h", audio.ulaw2lin(bytes([0xFF, 0x7F, 0x80, 0x00])))
    assert decoded == (0, 0, 32124, -32124)


def test_mulaw_round_trip_and_monotonic() -> None:
    samples = list(range(-32768, 32768, 7))
    back = array("h", audio.ulaw2lin(audio.lin2ulaw(pcm(*samples))))
    for s, b in zip(samples, back, strict=True):
        assert abs(s - b) <= max(16, abs(s) // 16)  # within one μ-law step
    assert list(back) == sorted(back)


def test_mulaw_equals_audioop_for_every_sample() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in 3.13: the vectors above remain
    every = array("h", range(-32768, 32768)).tobytes()
    assert audio.lin2ulaw(every) == audioop.lin2ulaw(every, 2)
    assert audio.ulaw2lin(bytes(range(256))) == audioop.ulaw2lin(bytes(range(256)), 2)


def test_stream_format_conversion_and_base64_length() -> None:
    ulaw = audio.lin2ulaw(pcm(0, 1000, -1000, 8000))
    assert audio.for_stream(ulaw, audio.MULAW, 8000) == ulaw
    assert len(audio.for_stream(ulaw, audio.L16, 8000)) == 8
    assert len(audio.for_stream(ulaw, audio.L16, 16000)) == 16
    with pytest.raises(ValueError):
        audio.for_stream(ulaw, "audio/x-opus", 48000)
    for n in (0, 1, 2, 3, 160, 1600, 8000):
        assert audio.b64_decoded_len(audio.b64(b"\x00" * n)) == n


def test_polly_asks_for_8k_pcm_off_the_loop_and_converts() -> None:
    class FakePolly:
        def __init__(self) -> None:
            self.kwargs: dict[str, Any] = {}
            self.thread = ""

        def synthesize_speech(self, **kwargs: Any) -> dict[str, Any]:
            self.kwargs = kwargs
            self.thread = threading.current_thread().name
            return {"AudioStream": io.BytesIO(pcm(0, 32767, -32768))}

    polly = FakePolly()
    out = run(PollyTTS(polly).synthesize("Hello.", "Joanna"))
    assert out == bytes([0xFF, 0x80, 0x00])
    assert polly.kwargs["OutputFormat"] == "pcm" and polly.kwargs["SampleRate"] == "8000"
    assert polly.kwargs["VoiceId"] == "Joanna" and polly.kwargs["Text"] == "Hello."
    assert polly.thread != threading.main_thread().name


def test_offline_tts_without_espeak_speaks_the_clips(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        tts = OfflineTTS(espeak="")
    (line,) = [r.getMessage() for r in caplog.records]  # one line, saying how to install it
    assert "espeak-ng not found" in line and "\n" not in line
    assert "apt install espeak-ng" in line and "brew install espeak-ng" in line
    assert tts.engine == "clips"
    buffer = run(tts.synthesize("Let me make sure I got that right.", "Joanna"))
    assert buffer == load_clip("let_me_make_sure_i_got_that_right")
    assert len(buffer) > 8000  # a real line, over a second of audio
    other = run(tts.synthesize("Your order is a medium.", "Joanna"))
    assert other == load_clip("one_moment")


def test_wav_to_ulaw_resamples_to_8k(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(pcm(*([1000] * 22050)))
    out = wav_to_ulaw(buf.getvalue())
    assert len(out) == 8000 and set(out) == {audio.lin2ulaw(pcm(1000))[0]}
    assert clip_key("Let me make sure I got that right.") == "let_me_make_sure_i_got_that_right"


def test_buffer_line_rendered_once_per_voice_even_concurrently() -> None:
    class SlowTTS:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        async def synthesize(self, text: str, voice: str) -> bytes:
            self.calls.append((text, voice))
            await asyncio.sleep(0.01)
            return voice.encode()

    async def scenario() -> None:
        tts = SlowTTS()
        cache = BufferLineCache(tts)
        got = await asyncio.gather(*(cache.get("Hold on.", "Joanna") for _ in range(5)))
        assert got == [b"Joanna"] * 5
        await cache.warm("Hold on.", ["Joanna", "Matthew"])
        assert await cache.get("Hold on.", "Matthew") == b"Matthew"
        assert sorted(tts.calls) == [("Hold on.", "Joanna"), ("Hold on.", "Matthew")]

    run(scenario())


def test_rest_speaker_calls_the_sdk_off_the_loop() -> None:
    class ResourceNotFoundError(Exception):
        pass

    class Calls:
        def __init__(self) -> None:
            self.log: list[tuple[Any, ...]] = []

        def speak(self, call_uuid: str, text: str, **kw: Any) -> None:
            self.log.append(("speak", call_uuid, text, kw, threading.current_thread().name))

        def stop_speaking(self, call_uuid: str) -> None:
            self.log.append(("stop", call_uuid))
            raise ResourceNotFoundError("nothing playing")  # treated as stopped

    class Client:
        calls = Calls()

    async def scenario() -> None:
        speaker = PlivoRestSpeaker(Client())
        await speaker.stop("uuid-1")
        await speaker.speak("uuid-1", "One moment.")

    run(scenario())
    stop, speak = Client.calls.log
    assert stop == ("stop", "uuid-1")
    assert speak[:3] == ("speak", "uuid-1", "One moment.")
    assert speak[3] == {"voice": "WOMAN", "language": "en-US"}
    assert speak[4] != threading.main_thread().name


def test_no_espeak_on_path_means_the_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    tts = OfflineTTS()
    assert tts.espeak is None and tts.engine == "clips"
    assert run(tts.synthesize("Anything at all.", "Joanna")) == load_clip("one_moment")


def test_wav_reader_rejects_what_it_cannot_speak() -> None:
    with pytest.raises(ValueError):
        wav_to_ulaw(b"not a wav at all")
    stereo = io.BytesIO()
    with wave.open(stereo, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 16)
    with pytest.raises(ValueError, match="mono"):
        wav_to_ulaw(stereo.getvalue())
