"""In-process state store for tests, the local CLI and single-process runs.

It keeps the DynamoDB item layout (a dict of items per partition) so both stores share one
contract test suite. Unlike DynamoDB, expired items of a call are dropped as soon as that call is
written again, so between the two implementations the suite covers both lazy and prompt expiry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from mirror.models import CallContext, Message, Verdict
from mirror.state.base import (
    COOLDOWN_SK,
    META_SK,
    MSG_PREFIX,
    OVERRIDE_SK,
    TTL_ATTRIBUTE,
    VERDICT_PREFIX,
    MetaValue,
    Quarantine,
    RecordedToolCall,
    RecordedVerdict,
    call_key,
    check_cooldown,
    check_data,
    check_limit,
    check_meta_fields,
    check_tool_field,
    encode_turn,
    expiry,
    is_live,
    meta_view,
    msg_sk,
    seq_advance,
    seq_of,
    tool_sk,
    verdict_sk,
)

Item = dict[str, Any]


class InMemoryStateStore(Quarantine):
    """A `StateStore` guarded by one lock: every method is atomic with respect to the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, Item]] = {}

    # --- helpers (call with the lock held) ------------------------------------------------

    def _items(self, pk: str, now: float) -> dict[str, Item]:
        """The call's items for a write, after dropping the expired ones (prompt TTL)."""
        items = self._calls.setdefault(pk, {})
        for sk in [sk for sk, item in items.items() if not is_live(item[TTL_ATTRIBUTE], now)]:
            del items[sk]
        return items

    def _live(self, pk: str, sk: str, now: float) -> Item | None:
        item = self._calls.get(pk, {}).get(sk)
        return item if item is not None and is_live(item[TTL_ATTRIBUTE], now) else None

    # --- metadata -------------------------------------------------------------------------

    def put_call_meta(
        self, ctx: CallContext, fields: Mapping[str, MetaValue], now: float, ttl_s: int
    ) -> None:
        pk = call_key(ctx)
        values = check_meta_fields(fields)
        expires_at = expiry(now, ttl_s)
        with self._lock:
            meta = self._items(pk, now).setdefault(META_SK, {"started_at": now})
            meta.update(values)
            meta[TTL_ATTRIBUTE] = expires_at

    def get_call_meta(self, ctx: CallContext, now: float) -> dict[str, MetaValue] | None:
        pk = call_key(ctx)
        with self._lock:
            meta = self._live(pk, META_SK, now)
            if meta is None:
                return None
            return meta_view(meta)

    # --- turns ----------------------------------------------------------------------------

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
        pk = call_key(ctx)
        vsk = verdict_sk(turn_id)
        encoded, verdict_json = encode_turn(messages, verdict, history_limit)
        expires_at = expiry(now, ttl_s)
        with self._lock:
            items = self._items(pk, now)
            if vsk in items:
                return False
            meta = items.setdefault(META_SK, {"started_at": now})
            # Without a counter (first turn, or META expired), continue after the highest stored
            # message so a surviving message is never overwritten or ordered after a new one.
            seq = meta.get("next_seq")
            if seq is None:
                seqs = [seq_of(sk) for sk in items if sk.startswith(MSG_PREFIX)]
                seq = max(seqs) + 1 if seqs else 0
            for offset, data in enumerate(encoded):
                items[msg_sk(seq + offset)] = {"data": data, TTL_ATTRIBUTE: expires_at}
            items[vsk] = {
                "data": verdict_json,
                "seq": seq,
                "recorded_at": float(now),
                TTL_ATTRIBUTE: expires_at,
            }
            meta.update(
                next_seq=seq + seq_advance(len(encoded)),
                last_turn_at=now,
                **{TTL_ATTRIBUTE: expires_at},
            )
            return True

    def get_history(self, ctx: CallContext, now: float, limit: int) -> list[Message]:
        pk = call_key(ctx)
        if check_limit(limit) == 0:
            return []
        with self._lock:
            items = self._calls.get(pk, {})
            live = sorted(
                (sk, item["data"])
                for sk, item in items.items()
                if sk.startswith(MSG_PREFIX) and is_live(item[TTL_ATTRIBUTE], now)
            )
        return self._messages(ctx, live[-limit:])

    def get_verdict(self, ctx: CallContext, turn_id: str, now: float) -> Verdict | None:
        pk = call_key(ctx)
        vsk = verdict_sk(turn_id)
        with self._lock:
            item = self._live(pk, vsk, now)
            data = None if item is None else item["data"]
        return None if data is None else self._verdict(ctx, vsk, data)

    def list_verdicts(self, ctx: CallContext, now: float) -> list[RecordedVerdict]:
        pk = call_key(ctx)
        with self._lock:
            rows = [
                (item["seq"], item["recorded_at"], sk.removeprefix(VERDICT_PREFIX), item["data"])
                for sk, item in self._calls.get(pk, {}).items()
                if sk.startswith(VERDICT_PREFIX) and is_live(item[TTL_ATTRIBUTE], now)
            ]
        return self._verdicts(ctx, rows)

    # --- cooldown -------------------------------------------------------------------------

    def claim_cooldown(
        self, ctx: CallContext, now: float, cooldown_s: float, ttl_s: int, owner: str = ""
    ) -> bool:
        pk = call_key(ctx)
        until = now + check_cooldown(cooldown_s)
        expires_at = expiry(now, ttl_s)
        with self._lock:
            items = self._items(pk, now)
            current = items.get(COOLDOWN_SK)
            mine = bool(owner) and current is not None and current.get("owner") == owner
            if current is not None and current["until"] > now and not mine:
                return False
            items[COOLDOWN_SK] = {"until": until, "owner": owner, TTL_ATTRIBUTE: expires_at}
            return True

    def cooldown_active(self, ctx: CallContext, now: float, owner: str = "") -> bool:
        pk = call_key(ctx)
        with self._lock:
            item = self._live(pk, COOLDOWN_SK, now)
            if item is None or item["until"] <= now:
                return False
            return not (owner and item.get("owner") == owner)

    # --- operator override ----------------------------------------------------------------

    def put_override(self, ctx: CallContext, note: str, now: float, ttl_s: int) -> None:
        pk = call_key(ctx)
        check_data(note, "the override note")
        expires_at = expiry(now, ttl_s)
        with self._lock:
            self._items(pk, now)[OVERRIDE_SK] = {"note": note, TTL_ATTRIBUTE: expires_at}

    def take_override(self, ctx: CallContext, now: float) -> str | None:
        pk = call_key(ctx)
        with self._lock:
            item = self._calls.get(pk, {}).pop(OVERRIDE_SK, None)
        if item is None or not is_live(item[TTL_ATTRIBUTE], now):
            return None
        note: str = item["note"]  # set_override stores a str
        return note

    # --- allowed irreversible tool calls --------------------------------------------------

    def get_tool_call(
        self, ctx: CallContext, fingerprint: str, now: float
    ) -> RecordedToolCall | None:
        pk = call_key(ctx)
        sk = tool_sk(fingerprint)
        with self._lock:
            item = self._live(pk, sk, now)
            return None if item is None else _recorded_tool_call(item)

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
        pk = call_key(ctx)
        sk = tool_sk(fingerprint)
        check_tool_field(tool_call_id, "tool_call_id")
        check_tool_field(name, "name")
        if retry_of is not None:
            check_tool_field(retry_of, "retry_of")
        expires_at = expiry(now, ttl_s)
        with self._lock:
            items = self._items(pk, now)
            current = items.get(sk)
            if current is not None and current["tool_call_id"] not in (tool_call_id, retry_of):
                return _recorded_tool_call(current)
            items[sk] = {
                "tool_call_id": tool_call_id,
                "name": name,
                "recorded_at": float(now),
                TTL_ATTRIBUTE: expires_at,
            }
            return None


def _recorded_tool_call(item: Item) -> RecordedToolCall:
    return RecordedToolCall(
        tool_call_id=item["tool_call_id"], name=item["name"], recorded_at=item["recorded_at"]
    )
