"""G.711 μ-law and the small audio math the bridge needs (pure Python, no audioop).

Why our own codec: `audioop` is deprecated and gone in Python 3.13, and the bridge only needs
μ-law 8 kHz (Plivo's stream format) plus 16-bit PCM from the TTS engines. A 256-entry decode
table and a 65,536-entry encode table (built once, on first use) make both directions a single
table lookup per sample: ample for 160 samples every 20 ms.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Iterator
from functools import cache

BIAS = 0x84
"""G.711's bias (132): added before the segment search so every value has a leading one."""
CLIP = 32635
"""The largest magnitude the encoder represents; louder samples saturate."""
SAMPLE_RATE = 8000
MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"
SILENCE = 0xFF
"""μ-law of 0: silent fixture frames are `bytes([SILENCE]) * 160`."""
FRAME_BYTES = 160
"""20 ms of μ-law at 8 kHz."""
MAX_CHUNK_BYTES = 1600
"""200 ms: playAudio chunks stay small so a clearAudio cuts promptly (protocol notes §2.3)."""


def _encode_sample(sample: int) -> int:
    """One signed 16-bit sample to μ-law: G.711 on the top 14 bits, as CPython's `audioop`
    does (so our bytes equal `audioop.lin2ulaw`'s, the reference the notes use)."""
    value = sample >> 2  # floor, also for negatives
    mask = 0x7F if value < 0 else 0xFF
    value = min(-value if value < 0 else value, CLIP >> 2) + (BIAS >> 2)
    segment = value.bit_length() - 6  # value >= 33, so 0..8
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _decode_byte(byte: int) -> int:
    u = ~byte & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + BIAS) << exponent
    magnitude -= BIAS
    return -magnitude if u & 0x80 else magnitude


DECODE_TABLE: tuple[int, ...] = tuple(_decode_byte(b) for b in range(256))
"""μ-law byte → signed 16-bit sample."""


@cache
def _encode_table() -> bytes:
    """Unsigned 16-bit view of a sample → μ-law byte (64 KiB, built on first use)."""
    return bytes(_encode_sample(u - 65536 if u >= 32768 else u) for u in range(65536))


def _pcm_samples(pcm: bytes) -> array[int]:
    if len(pcm) % 2:
        raise ValueError("16-bit PCM has an even number of bytes")
    samples = array("h", pcm)
    if sys.byteorder == "big":  # PCM on the wire and from Polly is little-endian
        samples.byteswap()
    return samples


def lin2ulaw(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian mono PCM → μ-law, one byte per sample."""
    table = _encode_table()
    return bytes(table[s & 0xFFFF] for s in _pcm_samples(pcm))


def ulaw2lin(data: bytes) -> bytes:
    """μ-law → signed 16-bit little-endian PCM."""
    samples = array("h", (DECODE_TABLE[b] for b in data))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def resample_pcm(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear-interpolation resampling of 16-bit mono PCM (espeak-ng speaks at 22,050 Hz).

    Good enough for speech into an 8 kHz phone line; not a high-fidelity resampler."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("sample rates are positive")
    samples = _pcm_samples(pcm)
    if src_rate == dst_rate or not samples:
        return pcm
    n_out = max(1, len(samples) * dst_rate // src_rate)
    step = src_rate / dst_rate
    last = len(samples) - 1
    out = array("h")
    for i in range(n_out):
        pos = i * step
        j = int(pos)
        if j >= last:
            out.append(samples[last])
            continue
        frac = pos - j
        out.append(int(round(samples[j] + (samples[j + 1] - samples[j]) * frac)))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def for_stream(ulaw: bytes, encoding: str, sample_rate: int) -> bytes:
    """μ-law 8 kHz (what our TTS gives) in the stream's negotiated format: never switch codec
    mid-stream (protocol notes §2.3)."""
    if encoding == MULAW and sample_rate == SAMPLE_RATE:
        return ulaw
    if encoding == L16 and sample_rate in (8000, 16000):
        return resample_pcm(ulaw2lin(ulaw), SAMPLE_RATE, sample_rate)
    raise ValueError(f"unsupported stream format {encoding} at {sample_rate} Hz")


def bytes_per_second(encoding: str, sample_rate: int) -> int:
    return sample_rate * (1 if encoding == MULAW else 2)


def chunks(data: bytes, size: int = MAX_CHUNK_BYTES) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def b64_decoded_len(payload: str) -> int:
    """Bytes a base64 string decodes to, without decoding it (queue-end estimates per frame)."""
    n = len(payload)
    return n * 3 // 4 - payload[-2:].count("=") if n else 0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@cache
def _loud_table(threshold: int) -> bytes:
    """μ-law byte → 1 when its sample's magnitude reaches `threshold`, else 0."""
    return bytes(1 if abs(s) >= threshold else 0 for s in DECODE_TABLE)


def is_loud(data: bytes, encoding: str, threshold: int) -> bool:
    """Whether any sample of a frame reaches `threshold` (16-bit magnitude): the silence
    watchdog's test for caller speech. C-speed passes per frame (`bytes.translate` and a byte
    search, or the min/max of an array), cheap at 50 frames a second per call."""
    if not data:
        return False
    if encoding == MULAW:
        return 1 in data.translate(_loud_table(threshold))  # memchr, no int per byte
    samples = _pcm_samples(data[: len(data) - len(data) % 2])
    return bool(samples) and max(-min(samples), max(samples)) >= threshold
