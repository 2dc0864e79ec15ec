"""The call-state contract both stores honour, and the item layout they share.

One table, one partition per call (`pk = "{tenant_id}#{call_id}"`), one item per fact:

    META              call metadata, the message sequence counter `next_seq`
    MSG#{seq:010d}    one history message (JSON in `data`); zero-padded so sk order is seq order
    VERDICT#{turn_id} one turn's verdict (JSON in `data`); its existence makes turns idempotent
    COOLDOWN          `until`: no spoken intervention before this time
    OVERRIDE          `note`: a one-shot operator instruction
    TOOL#{fingerprint} an irreversible tool call the gate allowed (`tool_call_id`, `name`); the
                      fingerprint hashes the name and canonical arguments, never storing them

Every item carries `expires_at` (the table's TTL attribute). TTL deletion is lazy on AWS (and never
happens under moto), so every read checks `expires_at > now` itself. Time is always passed in
(`now`, epoch seconds): the stores never read a clock, which keeps them deterministic under test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from pydantic import TypeAdapter

from mirror.models import CallContext, Message, ToolMessage, Verdict

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"
"""Must match `TimeToLiveSpecification.AttributeName` of `CallStateTable` in template.yaml."""

META_SK = "META"
MSG_PREFIX = "MSG#"
VERDICT_PREFIX = "VERDICT#"
COOLDOWN_SK = "COOLDOWN"
OVERRIDE_SK = "OVERRIDE"
TOOL_PREFIX = "TOOL#"

SEQ_DIGITS = 10
MAX_TRANSACTION_ITEMS = 100
"""DynamoDB's TransactWriteItems limit."""
MAX_MESSAGES_PER_TURN = MAX_TRANSACTION_ITEMS - 2
"""The META update and the verdict put share the transaction with the messages."""
MAX_DATA_BYTES = 390_000
"""A DynamoDB item is at most 400 KB including attribute names and keys; leave room for them."""
MAX_TRANSACTION_DATA_BYTES = 4_000_000
"""A transaction's items total at most 4 MB."""
MAX_STORED_TOOL_OUTPUT_BYTES = 100_000
"""A tool output is stored cut to this many UTF-8 bytes (the models accept 200,000 characters,
up to 800 KB): what grounds a later turn is near the start, and 16 outputs of a turn still fit
one transaction."""
MAX_TURN_ID_CHARS = 256
MAX_FINGERPRINT_CHARS = 128
MAX_TOOL_FIELD_CHARS = 256
"""Tool call ids and names (the models' `Identifier` bound)."""

INTERNAL_META_FIELDS = frozenset({PK, SK, TTL_ATTRIBUTE, "next_seq"})
"""Stored on META but never returned by `get_call_meta`."""
RESERVED_META_FIELDS = INTERNAL_META_FIELDS | {"started_at", "last_turn_at"}
"""Written by the store itself; callers may not set them through `put_call_meta`."""

MetaValue = str | int | float | bool | None

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)

QUARANTINE_LOGGER = "mirror.state"
_log = logging.getLogger(QUARANTINE_LOGGER)


class StateStoreError(Exception):
    """The backing store failed in a way the caller cannot fix by retrying the same call."""


class StateStoreConflictError(StateStoreError):
    """Concurrent writers kept winning the sequence race; the bounded retries ran out."""


@dataclass(frozen=True)
class RecordedVerdict:
    """A stored verdict with its place in the call (`seq` increases in recording order)."""

    turn_id: str
    seq: int
    recorded_at: float
    verdict: Verdict


@dataclass(frozen=True)
class RecordedToolCall:
    """An irreversible tool call the gate allowed: the holder of its fingerprint."""

    tool_call_id: str
    name: str
    recorded_at: float


@runtime_checkable
class StateStore(Protocol):
    """Per-call state shared by the judge's invocations (Lambdas are stateless, calls are not)."""

    def put_call_meta(
        self, ctx: CallContext, fields: Mapping[str, MetaValue], now: float, ttl_s: int
    ) -> None:
        """Upsert metadata; the first write sets `started_at = now`."""
        ...

    def get_call_meta(self, ctx: CallContext, now: float) -> dict[str, MetaValue] | None:
        """The metadata (plus `started_at`, `last_turn_at`), or None if absent or expired."""
        ...

    def record_turn(
        self,
        ctx: CallContext,
        turn_id: str,
        messages: Sequence[Message],
        verdict: Verdict,
        now: float,
        ttl_s: int,
        history_limit: int,
    ) -> bool:
        """Atomically append the messages and store the verdict; False if `turn_id` is known."""
        ...

    def get_history(self, ctx: CallContext, now: float, limit: int) -> list[Message]:
        """The last `limit` live messages, oldest first."""
        ...

    def get_verdict(self, ctx: CallContext, turn_id: str, now: float) -> Verdict | None: ...

    def list_verdicts(self, ctx: CallContext, now: float) -> list[RecordedVerdict]:
        """Live verdicts in recording order."""
        ...

    def claim_cooldown(
        self, ctx: CallContext, now: float, cooldown_s: float, ttl_s: int, owner: str = ""
    ) -> bool:
        """Start a cooldown unless one is active; of concurrent claimers exactly one wins.
        A claim by the cooldown's own `owner` (a redelivery of the same turn) also wins."""
        ...

    def cooldown_active(self, ctx: CallContext, now: float, owner: str = "") -> bool:
        """Whether a cooldown started by someone other than `owner` is running."""
        ...

    def put_override(self, ctx: CallContext, note: str, now: float, ttl_s: int) -> None:
        """Set (or replace) the call's one-shot operator note."""
        ...

    def take_override(self, ctx: CallContext, now: float) -> str | None:
        """Read and delete the note; of concurrent takers exactly one gets it."""
        ...

    def get_tool_call(
        self, ctx: CallContext, fingerprint: str, now: float
    ) -> RecordedToolCall | None:
        """The live allowed call recorded under `fingerprint` (see `tool_fingerprint`), if any."""
        ...

    def claim_tool_call(
        self,
        ctx: CallContext,
        fingerprint: str,
        tool_call_id: str,
        name: str,
        now: float,
        ttl_s: int,
        retry_of: str | None = None,
    ) -> RecordedToolCall | None:
        """Record an allowed irreversible call under its fingerprint, so an identical second
        call in the same call can be refused. The claim wins (returns None) when no live call
        holds the fingerprint, when `tool_call_id` already holds it (a redelivery), or when
        `retry_of` names the holder (the agent says that earlier call failed); the winner becomes
        the holder. Otherwise the holder is returned, unchanged. Of concurrent claimers of one
        fingerprint exactly one wins."""
        ...


# --- keys -----------------------------------------------------------------------------------


def call_key(ctx: CallContext) -> str:
    """The partition key. `#` separates tenant from call, so a tenant id may not contain one
    (otherwise tenant "a#b" + call "c" and tenant "a" + call "b#c" would share a partition)."""
    if "#" in ctx.tenant_id:
        raise ValueError(f"tenant_id must not contain '#': {ctx.tenant_id!r}")
    return f"{ctx.tenant_id}#{ctx.call_id}"


def msg_sk(seq: int) -> str:
    if not 0 <= seq < 10**SEQ_DIGITS:
        raise ValueError(f"message sequence number out of range: {seq}")
    return f"{MSG_PREFIX}{seq:0{SEQ_DIGITS}d}"


def seq_of(sk: str) -> int:
    return int(sk.removeprefix(MSG_PREFIX))


def verdict_sk(turn_id: str) -> str:
    if not turn_id or len(turn_id) > MAX_TURN_ID_CHARS:
        raise ValueError(f"turn_id must have 1..{MAX_TURN_ID_CHARS} characters")
    return f"{VERDICT_PREFIX}{turn_id}"


def tool_sk(fingerprint: str) -> str:
    if not fingerprint or len(fingerprint) > MAX_FINGERPRINT_CHARS or "#" in fingerprint:
        raise ValueError(f"fingerprint must have 1..{MAX_FINGERPRINT_CHARS} characters, no '#'")
    return f"{TOOL_PREFIX}{fingerprint}"


def check_tool_field(value: str, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TOOL_FIELD_CHARS:
        raise ValueError(f"{name} must be a string of 1..{MAX_TOOL_FIELD_CHARS} characters")
    return value


def _canonical(value: Any) -> Any:
    """Integral floats as ints, so 25 and 25.0 are the same amount; everything else as is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def tool_fingerprint(name: str, args: Mapping[str, Any]) -> str:
    """sha256 of the name and the arguments as canonical JSON (sorted keys, no spaces): two
    calls are the same action exactly when their fingerprints are equal. Only the hash is
    stored, so caller data in the arguments never reaches the table through this key."""
    canonical = json.dumps(
        {"name": name, "args": _canonical(dict(args))},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- time -----------------------------------------------------------------------------------


def expiry(now: float, ttl_s: int) -> int:
    """The TTL attribute value: whole epoch seconds, as DynamoDB TTL requires."""
    if not math.isfinite(now):
        raise ValueError(f"now must be finite: {now!r}")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive: {ttl_s!r}")
    return int(now + ttl_s)


def is_live(expires_at: float | int | None, now: float) -> bool:
    """An item without the TTL attribute is treated as expired: every item we write has one."""
    return expires_at is not None and expires_at > now


def check_limit(limit: int, name: str = "limit") -> int:
    if limit < 0:
        raise ValueError(f"{name} must be >= 0: {limit}")
    return limit


def check_cooldown(cooldown_s: float) -> float:
    if not math.isfinite(cooldown_s) or cooldown_s < 0:
        raise ValueError(f"cooldown_s must be finite and >= 0: {cooldown_s!r}")
    return cooldown_s


# --- values ---------------------------------------------------------------------------------

_MAX_NUMBER = Decimal("1e126")
_MIN_NUMBER = Decimal("1e-130")


def normalize_meta_value(value: object) -> MetaValue:
    """Validate a metadata value and give it the form a DynamoDB round trip would.

    DynamoDB stores numbers as decimals, so an integral float comes back as an int; both stores
    apply the same rule so callers see identical values whichever one they use.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metadata numbers must be finite: {value!r}")
        magnitude = abs(Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
        if magnitude >= _MAX_NUMBER or (magnitude and magnitude < _MIN_NUMBER):
            raise ValueError(f"metadata number out of DynamoDB's range: {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    raise ValueError(f"metadata values are str, int, float, bool or None: {type(value).__name__}")


def check_meta_fields(fields: Mapping[str, object]) -> dict[str, MetaValue]:
    out: dict[str, MetaValue] = {}
    for name, value in fields.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"metadata field names are non-empty strings: {name!r}")
        if name in RESERVED_META_FIELDS:
            raise ValueError(f"metadata field {name!r} is reserved for the store")
        out[name] = normalize_meta_value(value)
    return out


def meta_view(item: Mapping[str, object]) -> dict[str, MetaValue]:
    """What `get_call_meta` returns for a stored META item: everything but the internals."""
    return {k: normalize_meta_value(v) for k, v in item.items() if k not in INTERNAL_META_FIELDS}


def number_to_str(value: int | float) -> str:
    """DynamoDB's N wire form. repr() keeps float order and equality under decimal comparison."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def number_from_str(text: str) -> int | float:
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(d)


# -- DynamoDB attribute values (the low-level client's wire form), for every table store -----


def attr_s(value: str) -> dict[str, str]:
    return {"S": value}


def attr_n(value: int | float) -> dict[str, str]:
    return {"N": number_to_str(value)}


def to_attr(value: Any) -> dict[str, Any]:
    """A plain value as a DynamoDB attribute: None, bool, str, int, float, or a list of them.
    Anything else is a TypeError: nothing is stored as its repr."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float):
        return attr_n(value)
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__} as a DynamoDB attribute")


def from_attr(attr: Mapping[str, Any]) -> Any:
    """`to_attr` reversed (numbers come back as int when integral). ValueError for a type
    `to_attr` never writes."""
    if "L" in attr:
        return [from_attr(v) for v in attr["L"]]
    return scalar_from_attr(attr)


def scalar_from_attr(attr: Mapping[str, Any]) -> MetaValue:
    """`from_attr` for a scalar (a string, number, bool or null); ValueError for anything
    else, a list included."""
    if "S" in attr:
        return str(attr["S"])
    if "N" in attr:
        return number_from_str(attr["N"])
    if "BOOL" in attr:
        return bool(attr["BOOL"])
    if "NULL" in attr:
        return None
    raise ValueError(f"unexpected DynamoDB attribute type {sorted(attr)}")


def check_data(text: str, what: str) -> int:
    size = len(text.encode())
    if size > MAX_DATA_BYTES:
        raise ValueError(f"{what} is {size} bytes; a stored item holds at most {MAX_DATA_BYTES}")
    return size


def encode_turn(
    messages: Sequence[Message], verdict: Verdict, history_limit: int
) -> tuple[list[str], str]:
    """Serialize a turn, keeping only the last `history_limit` messages (older ones could never
    be returned by `get_history`), and reject what cannot fit one DynamoDB transaction."""
    if history_limit < 1:
        raise ValueError(f"history_limit must be >= 1: {history_limit}")
    kept = list(messages)[-history_limit:]
    if len(kept) > MAX_MESSAGES_PER_TURN:
        raise ValueError(
            f"a turn records at most {MAX_MESSAGES_PER_TURN} messages atomically, got {len(kept)}"
        )
    encoded = [MESSAGE_ADAPTER.dump_json(_storable(m)).decode() for m in kept]
    verdict_json = verdict.model_dump_json()
    total = check_data(verdict_json, "the verdict")
    for i, text in enumerate(encoded):
        total += check_data(text, f"message {i}")
    if total > MAX_TRANSACTION_DATA_BYTES:
        raise ValueError(f"the turn is {total} bytes; one transaction holds at most 4 MB")
    return encoded, verdict_json


def _storable(message: Message) -> Message:
    """A tool output cut to `MAX_STORED_TOOL_OUTPUT_BYTES` (at a character boundary, marked
    with "…"); every other message as it is."""
    if (
        not isinstance(message, ToolMessage)
        or len(message.text) * 4 <= MAX_STORED_TOOL_OUTPUT_BYTES
    ):
        return message
    raw = message.text.encode()
    if len(raw) <= MAX_STORED_TOOL_OUTPUT_BYTES:
        return message
    cut = raw[: MAX_STORED_TOOL_OUTPUT_BYTES - len("…".encode())].decode(errors="ignore")
    return message.model_copy(update={"text": cut + "…"})


def decode_message(data: str) -> Message:
    return MESSAGE_ADAPTER.validate_json(data)


class Quarantine:
    """What a store's readers do with a stored item they cannot decode (written by an older
    version, by hand, or by input that got past the models): skip it, count it (`quarantined`)
    and log it with the call's ids, its sort key and the error's kind, never its content. One
    bad item must not make the whole call unreadable: ScoreTurn, GateTool, the Api and the
    post-call report all read through here."""

    quarantined: int = 0
    """Items skipped since this store was built (all calls)."""

    def _quarantine(self, ctx: CallContext, sk: str, error: Exception) -> None:
        self.quarantined += 1
        kind = type(error).__name__
        errors = getattr(error, "errors", None)
        if callable(errors):  # a pydantic error: its first error type, never the input
            try:
                kind = f"{kind}:{errors(include_input=False)[0]['type']}"
            except Exception:  # noqa: BLE001 - the kind is best effort
                pass
        # The ids go in the text too: a plain root handler (Lambda's) drops `extra`.
        _log.warning(
            "state store: skipped a stored item that cannot be decoded (call %s of tenant %s, "
            "item %s, %s)",
            ctx.call_id,
            ctx.tenant_id,
            sk,
            kind,
            extra={
                "call_id": ctx.call_id,
                "tenant_id": ctx.tenant_id,
                "sk": sk,
                "error": kind,
                "quarantined": self.quarantined,
            },
        )

    def _messages(self, ctx: CallContext, rows: Sequence[tuple[str, Any]]) -> list[Message]:
        """(sk, data) rows as messages, without the ones that cannot be decoded."""
        out: list[Message] = []
        for sk, data in rows:
            try:
                out.append(decode_message(data))
            except Exception as e:  # noqa: BLE001 - any undecodable item is skipped
                self._quarantine(ctx, sk, e)
        return out

    def _verdict(self, ctx: CallContext, sk: str, data: Any) -> Verdict | None:
        try:
            return decode_verdict(data)
        except Exception as e:  # noqa: BLE001
            self._quarantine(ctx, sk, e)
            return None

    def _verdicts(
        self, ctx: CallContext, rows: list[tuple[int, float, str, Any]]
    ) -> list[RecordedVerdict]:
        """(seq, recorded_at, turn_id, data) rows, as both stores read them, in recording
        order, without the ones that cannot be decoded."""
        out: list[RecordedVerdict] = []
        for seq, at, turn_id, data in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
            verdict = self._verdict(ctx, VERDICT_PREFIX + turn_id, data)
            if verdict is not None:
                out.append(
                    RecordedVerdict(turn_id=turn_id, seq=seq, recorded_at=at, verdict=verdict)
                )
        return out


def decode_verdict(data: str) -> Verdict:
    return Verdict.model_validate_json(data)


def seq_advance(message_count: int) -> int:
    """How far a turn moves `next_seq`: one slot per message, and at least one, so every turn
    (even one without messages) gets a distinct `seq` that orders the verdicts."""
    return max(1, message_count)
