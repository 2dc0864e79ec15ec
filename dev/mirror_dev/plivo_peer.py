"""A scripted Plivo: the client side of Plivo's bidirectional audio stream over a real WebSocket.

Reusable by the demo and the benchmarks. It signs the upgrade (V3, over a chosen URL variant),
sends start, 20 ms μ-law media frames (paced, `speed` times real time), dtmf and stop, and plays
what it receives: playAudio joins a playout queue, a checkpoint is acked with playedStream once
everything queued before it has "played", clearAudio truncates the queue, drops pending
checkpoints and is answered with clearedAudio. Every frame received is recorded with its time.

It deliberately does not import the bridge's codec, so the two implementations check each other.
Standard library plus `websockets` only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.client import ClientConnection, connect

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_S = 0.020
SILENCE = b"\xff" * FRAME_BYTES
ALLOWED = {("audio/x-mulaw", 8000), ("audio/x-l16", 8000), ("audio/x-l16", 16000)}


def _pairs(d: dict[str, Any], kv: bool) -> str:
    out = [
        f"{k}={v}" if kv else f"{k}{v}"
        for k in sorted(d)
        for v in sorted(map(str, d[k] if isinstance(d[k], list) else [d[k]]))
    ]
    return ("&" if kv else "").join(out)


def v3_signature(
    token: str, method: str, url: str, nonce: str, params: dict[str, Any] | None = None
) -> str:
    """Plivo's V3 algorithm (plivo-protocol.md §3.2), written independently of the bridge's."""
    params, u = dict(params or {}), urlsplit(url)
    base = f"{u.scheme}://{u.netloc}{u.path}"
    query = parse_qs(u.query, keep_blank_values=True)
    if method.upper() == "GET":
        params.update(query)
        qs = _pairs(params, True)
        s = base + ("?" + qs if qs else "")
    elif not params:
        qs = _pairs(query, True)
        s = base + ("?" + qs if qs else "")
    else:
        qs = _pairs(query, True)
        s = base + "?" + qs + ("." if qs else "") + _pairs(params, False)
    digest = hmac.new(token.encode(), f"{s}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_headers(
    token: str, url: str, method: str = "GET", params: dict[str, Any] | None = None,
    nonce: str | None = None,
) -> dict[str, str]:  # fmt: skip
    nonce = nonce or str(int.from_bytes(os.urandom(8), "big"))
    return {
        "X-Plivo-Signature-V3": v3_signature(token, method, url, nonce, params),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


@dataclass
class Received:
    at: float
    """time.monotonic() when the frame arrived."""
    message: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.message.get("event"))


@dataclass
class _Audio:
    data: bytes
    seconds: float


@dataclass
class _Marker:
    name: str


@dataclass
class PlivoPeer:
    """One simulated call. Use `async with PlivoPeer(url, ...) as peer:` then the script calls."""

    url: str
    """The bridge's stream URL, e.g. ws://127.0.0.1:8080/plivo/stream."""
    auth_token: str = ""
    signed_url: str | None = None
    """The URL variant to sign (default: `url` with ws→http, wss→https)."""
    bad_signature: bool = False
    missing_headers: bool = False
    speed: float = 1.0
    """Playout and media pacing run this many times faster than real time."""
    omit_seq: bool = False
    legacy_played: bool = False
    ack_empty_checkpoint: bool = True
    extra_headers: str | None = ""
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: list[Received] = field(default_factory=list)
    heard: bytearray = field(default_factory=bytearray)
    """What the caller heard: the audio actually played (truncated by clears)."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    """time.monotonic() when each message of `sent` went out."""

    def __post_init__(self) -> None:
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._chunk = 0
        self._queue: deque[_Audio | _Marker] = deque()
        self._wake = asyncio.Event()
        self._cleared = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.errors: list[str] = []

    # --- connection --------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        if self.missing_headers:
            return {}
        signed = self.signed_url or self.url.replace("wss://", "https://", 1).replace(
            "ws://", "http://", 1
        )
        token = self.auth_token + ("-wrong" if self.bad_signature else "")
        return signed_headers(token, signed)

    async def connect(self) -> PlivoPeer:
        self._ws = await connect(
            self.url, additional_headers=self.headers(), compression=None, open_timeout=5
        )
        self._tasks = [
            asyncio.create_task(self._reader(), name="peer-reader"),
            asyncio.create_task(self._player(), name="peer-player"),
        ]
        return self

    async def __aenter__(self) -> PlivoPeer:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """An abrupt close (no stop), or the end after `stop()`."""
        if self._ws is not None:
            await self._ws.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def send_raw(self, message: dict[str, Any] | str) -> None:
        assert self._ws is not None, "connect first"
        text = message if isinstance(message, str) else json.dumps(message)
        if not isinstance(message, str):
            self.sent.append(message)
            self.sent_at.append(time.monotonic())
        await self._ws.send(text)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _with_headers(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.extra_headers is not None:
            message["extra_headers"] = self.extra_headers
        return message

    # --- the script --------------------------------------------------------------------------

    async def start(self, encoding: str = "audio/x-mulaw", sample_rate: int = 8000) -> None:
        self._format = (encoding, sample_rate)
        await self.send_raw(
            self._with_headers(
                {
                    "event": "start",
                    "sequenceNumber": self._next_seq(),
                    "start": {
                        "callId": self.call_id,
                        "streamId": self.stream_id,
                        "accountId": "MAXXXXXXXXXXXXXXXXXX",
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": encoding, "sampleRate": sample_rate},
                    },
                }
            )
        )

    def media_frame(self, audio: bytes = SILENCE, numeric_timestamp: bool = False) -> dict:
        self._chunk += 1
        ts = int(time.time() * 1000)
        return self._with_headers(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": ts if numeric_timestamp else str(ts),
                    "chunk": self._chunk,
                    "payload": base64.b64encode(audio).decode(),
                },
            }
        )

    async def media(self, frames: int | list[bytes] = 1, paced: bool = True) -> None:
        """Send frames every 20 ms / speed (or as fast as possible with paced=False)."""
        chunks = [SILENCE] * frames if isinstance(frames, int) else frames
        t0 = time.monotonic()
        for i, audio in enumerate(chunks):
            if paced:
                delay = t0 + i * FRAME_S / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_raw(self.media_frame(audio))

    async def dtmf(self, digit: str) -> None:
        await self.send_raw(
            self._with_headers(
                {
                    "event": "dtmf",
                    "sequenceNumber": self._next_seq(),
                    "streamId": self.stream_id,
                    "dtmf": {"track": "inbound", "digit": digit,
                             "timestamp": str(int(time.time() * 1000))},
                }
            )
        )  # fmt: skip

    async def stop(self, nested: bool = False) -> None:
        if nested:
            msg: dict[str, Any] = {
                "event": "stop",
                "stop": {"callId": self.call_id, "streamId": self.stream_id,
                         "tracks": ["inbound"]},
            }  # fmt: skip
        else:
            msg = {"event": "stop", "sequenceNumber": self._next_seq(),
                   "streamId": self.stream_id, "reason": "hangup"}  # fmt: skip
        await self.send_raw(msg)

    # --- receiving and playout ---------------------------------------------------------------

    def events(self, *names: str) -> list[dict[str, Any]]:
        return [r.message for r in self.received if not names or r.event in names]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Until predicate(self) is true (polled every 5 ms)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met; received: "
                                   f"{[r.event for r in self.received]}")  # fmt: skip
            await asyncio.sleep(0.005)

    async def _reader(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                now = time.monotonic()
                try:
                    msg = json.loads(frame)
                except ValueError:
                    self.errors.append(f"non-JSON frame: {frame!r:.80}")
                    continue
                self.received.append(Received(now, msg))
                await self._on_message(msg)
        except Exception as e:  # connection closed abnormally
            self.errors.append(f"reader: {e!r}")
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    async def _on_message(self, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if event == "playAudio":
            media = msg.get("media") or {}
            pair = (media.get("contentType"), media.get("sampleRate"))
            if pair not in ALLOWED:
                self.errors.append(f"playAudio format not allowed: {pair}")
            elif hasattr(self, "_format") and pair != self._format:
                self.errors.append(f"playAudio codec switch: {pair} on a {self._format} stream")
            data = base64.b64decode(media.get("payload") or "")
            bps = (pair[1] or 8000) * (1 if pair[0] == "audio/x-mulaw" else 2)
            self._queue.append(_Audio(data, len(data) / bps))
            self._wake.set()
        elif event == "checkpoint":
            if not self._queue and self.ack_empty_checkpoint:
                await self._ack(str(msg.get("name")))
            else:
                self._queue.append(_Marker(str(msg.get("name"))))
                self._wake.set()
        elif event == "clearAudio":
            self._queue.clear()  # pending markers are dropped: no playedStream for them
            self._cleared += 1
            self._wake.set()
            await self.send_raw({"sequenceNumber": 0, "event": "clearedAudio",
                                 "streamId": self.stream_id})  # fmt: skip
        elif event == "sendDTMF":
            pass  # recorded in `received`
        else:
            self.errors.append(f"unexpected event from the bridge: {event!r}")

    async def _ack(self, name: str) -> None:
        msg: dict[str, Any] = {"event": "played" if self.legacy_played else "playedStream",
                               "streamId": self.stream_id, "name": name}  # fmt: skip
        if not self.omit_seq:
            msg["sequenceNumber"] = self._next_seq()
        await self.send_raw(msg)

    async def _player(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue[0]
            if isinstance(item, _Marker):
                self._queue.popleft()
                await self._ack(item.name)
                continue
            generation = self._cleared
            end = time.monotonic() + item.seconds / self.speed
            while (left := end - time.monotonic()) > 0 and generation == self._cleared:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
            if generation != self._cleared:  # cut mid-item: the caller heard only part of it
                played = 1 - max(end - time.monotonic(), 0) * self.speed / max(item.seconds, 1e-9)
                self.heard += item.data[: int(len(item.data) * max(0.0, min(played, 1.0)))]
                continue
            self.heard += item.data
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
