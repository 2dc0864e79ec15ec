"""Plivo's bidirectional audio-stream protocol: parse every inbound event, build every outbound one.

Parsing is deliberately lenient (plivo-protocol.md §2.5): only `event` is required, unknown keys
are ignored, `sequenceNumber` is optional and never used for ordering, `timestamp` may be a
string or a number. Strict models are what broke the published stream SDK. Each parsed event keeps
its `raw` dict so the relay can forward exactly what Plivo sent: `decode_frame` returns a `Frame`,
a dict that also keeps the text it was decoded from, and the relay writes that text back out
instead of serialising the dict again (20 ms media frames both ways make it the hot path).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"
ALLOWED_FORMATS: frozenset[tuple[str, int]] = frozenset({(MULAW, 8000), (L16, 8000), (L16, 16000)})
"""What Plivo streams and takes, and what the bridge speaks (`audio.for_stream`): a `start` in
any other format is refused at once (`StartEvent.supported`), before the agent is dialled, not
at the first intervention after the agent's audio was already cleared (issue 13, item 11)."""
STREAM_MODE_HEADER = "mirrorStream"
ONE_WAY = "oneway"
"""The answer XML asks for a one-way stream (a tenant's `bidirectional: false`) with
`bidirectional="false"` and this `extraHeaders` pair, which Plivo echoes back in `start`: that
is how the bridge knows (a real `start` carries no `bidirectional` key of its own)."""
MAX_ID_CHARS = 256
"""The longest call id, stream id or account id a `start` may carry (Plivo's are UUIDs and
`MA...` ids; the functions' `Identifier` takes up to 256): a longer one is an invalid start,
refused before anything is built for the call (issue 13, item 7)."""
OUTBOUND_EVENTS: frozenset[str] = frozenset({"playAudio", "checkpoint", "clearAudio", "sendDTMF"})


class PlivoProtocolError(ValueError):
    """A frame that cannot be understood: logged and skipped, never fatal to the call."""


class InvalidStartError(PlivoProtocolError):
    """A `start` the call cannot be built from (no or oversized identifiers): the stream is
    refused at once (the relay closes it with 1008)."""


class Frame(dict[str, Any]):
    """A received JSON object that keeps its wire `text`, so forwarding it unchanged costs no
    `json.dumps`. Any top-level change forgets the text (the dict is then serialised as any
    other); nested objects are the received ones and are to be read, not changed."""

    __slots__ = ("text",)

    def __init__(self, data: dict[str, Any], text: str | None = None) -> None:
        super().__init__(data)
        self.text = text

    def __setitem__(self, key: str, value: Any) -> None:
        self.text = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.text = None
        super().__delitem__(key)

    # dict's `|=` takes any mapping or pairs, its `|` only a dict: mypy holds `__ior__` to
    # `__or__`, and typeshed's own dict ignores that mismatch too.
    def __ior__(  # type: ignore[override,misc]  # typeshed: dict's |= is wider than its |
        self, other: SupportsKeysAndGetItem[str, Any] | Iterable[tuple[str, Any]]
    ) -> Self:
        self.text = None
        return super().__ior__(other)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.text = None
        super().update(*args, **kwargs)

    def pop(self, *args: Any) -> Any:
        self.text = None
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self.text = None
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.text = None
        return super().setdefault(key, default)

    def clear(self) -> None:
        self.text = None
        super().clear()


def wire_text(message: dict[str, Any]) -> str:
    """What goes on the wire for `message`: a received `Frame` as it came, anything else as
    compact JSON."""
    if type(message) is Frame and message.text is not None:
        return message.text
    return json.dumps(message, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str = MULAW
    sample_rate: int = 8000

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * (1 if self.encoding == MULAW else 2)


@dataclass(frozen=True, slots=True)
class StartEvent:
    call_id: str
    stream_id: str
    account_id: str | None
    tracks: tuple[str, ...]
    media_format: MediaFormat
    extra_headers: dict[str, str]
    sequence_number: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    event: str = "start"
    bidirectional: bool = True
    """False when the start says so, or echoes the answer's one-way marker
    (`STREAM_MODE_HEADER`): then the bridge speaks through Plivo's REST API."""

    @property
    def supported(self) -> bool:
        """The stream's format is one the bridge relays and speaks (`ALLOWED_FORMATS`)."""
        fmt = self.media_format
        return (fmt.encoding, fmt.sample_rate) in ALLOWED_FORMATS


@dataclass(slots=True)
class MediaEvent:
    """Caller audio. Not frozen, unlike the other events (built fifty times a second per call,
    and a frozen dataclass pays a call per field): treat it as read-only all the same."""

    stream_id: str | None
    track: str | None
    timestamp: str | None
    chunk: int | None
    payload: str
    """Base64, kept encoded: the relay forwards it and rarely needs the bytes."""
    sequence_number: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    event: str = "media"

    def audio(self) -> bytes:
        return base64.b64decode(self.payload)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    stream_id: str | None
    digit: str
    track: str | None
    timestamp: str | None
    sequence_number: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    event: str = "dtmf"


@dataclass(frozen=True, slots=True)
class PlayedStreamEvent:
    """A checkpoint ack. Match on `name`; `streamId` may be absent. `played` is an old alias."""

    name: str
    stream_id: str | None
    sequence_number: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    event: str = "playedStream"


@dataclass(frozen=True, slots=True)
class ClearedAudioEvent:
    stream_id: str | None
    sequence_number: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    event: str = "clearedAudio"


@dataclass(frozen=True, slots=True)
class StopEvent:
    """Either shape (top-level `streamId`/`reason`, or nested `stop{...}`)."""

    stream_id: str | None
    call_id: str | None
    reason: str | None
    sequence_number: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    event: str = "stop"


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """playFailed, error, muteStream, ... or anything new: logged, counted, ignored."""

    event: str
    raw: dict[str, Any] = field(repr=False, compare=False)


PlivoEvent = (
    StartEvent
    | MediaEvent
    | DtmfEvent
    | PlayedStreamEvent
    | ClearedAudioEvent
    | StopEvent
    | UnknownEvent
)


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PlivoProtocolError(f"expected a string, got {type(value).__name__}")
    return str(value)


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _obj(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PlivoProtocolError(f"{key!r} must be an object")
    return value


def parse_extra_headers(value: Any) -> dict[str, str]:
    """Tolerant: JSON object, else `k=v` pairs split on `;` or `,` (§2.2); `""`/absent is empty."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        return {}
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            return {str(k): str(v) for k, v in loaded.items()}
    out: dict[str, str] = {}
    for part in text.replace(";", ",").split(","):
        key, sep, val = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


def _parse_start(raw: dict[str, Any], seq: int | None, top_sid: str | None) -> StartEvent:
    """A `start`, its identifiers bounded (`MAX_ID_CHARS`)."""
    start = _obj(raw, "start")
    call_id = _opt_str(start.get("callId"))
    stream_id = _opt_str(start.get("streamId")) or top_sid
    account_id = _opt_str(start.get("accountId"))
    if not call_id or not stream_id:
        raise InvalidStartError("start needs start.callId and start.streamId")
    for name, value in (("callId", call_id), ("streamId", stream_id), ("accountId", account_id)):
        if value is not None and len(value) > MAX_ID_CHARS:
            raise InvalidStartError(f"start.{name} is over {MAX_ID_CHARS} characters")
    fmt = _obj(start, "mediaFormat")
    rate = _opt_int(fmt.get("sampleRate")) or 8000
    tracks = start.get("tracks")
    extra_headers = parse_extra_headers(raw.get("extra_headers"))
    said = start.get("bidirectional", raw.get("bidirectional", True))
    return StartEvent(
        call_id=call_id,
        stream_id=stream_id,
        account_id=account_id,
        tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
        media_format=MediaFormat(_opt_str(fmt.get("encoding")) or MULAW, rate),
        extra_headers=extra_headers,
        sequence_number=seq,
        raw=raw,
        bidirectional=said not in (False, "false", "False")
        and extra_headers.get(STREAM_MODE_HEADER, "").lower() != ONE_WAY,
    )


def parse_event(raw: dict[str, Any]) -> PlivoEvent:
    """One decoded frame to an event. Raises PlivoProtocolError when a known event is unusable."""
    event = raw.get("event")
    if event == "media":  # fifty a second: the usual shape first (string fields, int chunk and
        media = raw.get("media")  # sequence number), without the general path's conversions
        if type(media) is dict:
            payload = media.get("payload")
            track = media.get("track")
            timestamp = media.get("timestamp")
            chunk = media.get("chunk")
            seq = raw.get("sequenceNumber")
            sid = raw.get("streamId")
            if (
                type(payload) is str
                and (track is None or type(track) is str)
                and (timestamp is None or type(timestamp) is str)
                and (chunk is None or type(chunk) is int)
                and (seq is None or type(seq) is int)
                and (sid is None or type(sid) is str)
            ):
                return MediaEvent(sid, track, timestamp, chunk, payload, seq, raw)
    elif not isinstance(event, str) or not event:
        raise PlivoProtocolError("frame has no 'event'")
    seq = _opt_int(raw.get("sequenceNumber"))
    top_sid = _opt_str(raw.get("streamId"))
    if event == "start":
        try:
            return _parse_start(raw, seq, top_sid)
        except InvalidStartError:
            raise
        except PlivoProtocolError as e:  # any unusable part: the call cannot be built from it
            raise InvalidStartError(f"start: {e}") from None
    if event == "media":
        media = _obj(raw, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise PlivoProtocolError("media.payload must be a base64 string")
        return MediaEvent(
            stream_id=top_sid,
            track=_opt_str(media.get("track")),
            timestamp=_opt_str(media.get("timestamp")),
            chunk=_opt_int(media.get("chunk")),
            payload=payload,
            sequence_number=seq,
            raw=raw,
        )
    if event == "dtmf":
        dtmf = raw.get("dtmf")
        if isinstance(dtmf, str):  # tolerate a bare digit
            dtmf = {"digit": dtmf}
        if not isinstance(dtmf, dict):
            raise PlivoProtocolError("dtmf must be an object")
        digit = _opt_str(dtmf.get("digit"))
        if not digit:
            raise PlivoProtocolError("dtmf.digit is missing")
        return DtmfEvent(
            stream_id=top_sid,
            digit=digit,
            track=_opt_str(dtmf.get("track")),
            timestamp=_opt_str(dtmf.get("timestamp")),
            sequence_number=seq,
            raw=raw,
        )
    if event in ("playedStream", "played"):
        name = _opt_str(raw.get("name"))
        if not name:
            raise PlivoProtocolError(f"{event} has no checkpoint name")
        return PlayedStreamEvent(name=name, stream_id=top_sid, sequence_number=seq, raw=raw)
    if event == "clearedAudio":
        return ClearedAudioEvent(stream_id=top_sid, sequence_number=seq, raw=raw)
    if event == "stop":
        stop = raw.get("stop")
        if not isinstance(stop, dict):
            stop = {}
        return StopEvent(
            stream_id=top_sid or _opt_str(stop.get("streamId")),
            call_id=_opt_str(stop.get("callId")),
            reason=_opt_str(raw.get("reason")) or _opt_str(stop.get("reason")),
            sequence_number=seq,
            raw=raw,
        )
    return UnknownEvent(event=event, raw=raw)


_scan: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
"""json.loads' own C scanner (the default decoder's), called without its two whitespace regexes.
(`JSONDecoder.__init__` sets `scan_once` on the instance; typeshed does not declare it.)"""


def decode_frame(text: str | bytes) -> Frame:
    """A text frame to its JSON object (a `Frame`: it keeps `text` when given a str). Raises
    PlivoProtocolError for anything else."""
    if type(text) is str:  # the usual frame (an object, nothing around it): scanned directly
        try:
            raw, end = _scan(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end == len(text) and type(raw) is dict:
            return Frame(raw, text)
    try:  # anything else as json.loads takes it (whitespace around, errors, bytes)
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise PlivoProtocolError(f"frame is not JSON: {e}") from None
    if type(raw) is not dict:
        raise PlivoProtocolError("frame is not a JSON object")
    return Frame(raw, text if type(text) is str else None)


def parse_frame(text: str | bytes) -> PlivoEvent:
    return parse_event(decode_frame(text))


# --- outbound (bridge -> Plivo), exactly as the notes give them (§2.3); the only place Mirror's
# own Plivo messages are built (the session's outbox uses them). The agent's sendDTMF is relayed
# as it came (`check_outbound`): the bridge sends no DTMF of its own. -------------------------


def play_audio(audio: bytes, content_type: str = MULAW, sample_rate: int = 8000) -> dict[str, Any]:
    """`sampleRate` is a number; no `streamId` (the documented form)."""
    if (content_type, sample_rate) not in ALLOWED_FORMATS:
        raise ValueError(f"Plivo does not accept {content_type} at {sample_rate} Hz")
    return {
        "event": "playAudio",
        "media": {
            "contentType": content_type,
            "sampleRate": sample_rate,
            "payload": base64.b64encode(audio).decode("ascii"),
        },
    }


def checkpoint(stream_id: str | None, name: str) -> dict[str, Any]:
    if not name:
        raise ValueError("a checkpoint needs a name")
    return {"event": "checkpoint", "streamId": stream_id, "name": name}


def clear_audio(stream_id: str | None) -> dict[str, Any]:
    return {"event": "clearAudio", "streamId": stream_id}


def check_outbound(message: dict[str, Any]) -> str:
    """Validate a message bound for Plivo (e.g. from the agent); returns its event name."""
    event = message.get("event")
    if event not in OUTBOUND_EVENTS:
        raise PlivoProtocolError(f"not a Plivo outbound event: {event!r}")
    if event == "playAudio":
        media = message.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise PlivoProtocolError("playAudio needs media.payload")
        payload = media["payload"]
        try:  # strict base64 is valid below too; the rare rest is judged as it always was
            binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise PlivoProtocolError("playAudio payload is not base64") from None
    elif event == "checkpoint" and not isinstance(message.get("name"), str):
        raise PlivoProtocolError("checkpoint needs a name")
    elif event == "sendDTMF" and not isinstance(message.get("dtmf"), str):
        raise PlivoProtocolError("sendDTMF needs dtmf digits")
    return str(event)


def payload_seconds(payload_b64: str, fmt: MediaFormat) -> float:
    """Playback time of a base64 payload without decoding it (§5.1)."""
    n = len(payload_b64) * 3 // 4 - payload_b64[-2:].count("=")
    return max(n, 0) / fmt.bytes_per_second
