"""DynamoDB state store: the one the deployed functions use.

boto3 is imported and the client built on first use, so importing this module costs nothing in a
cold start that never touches state, and tests can inject a client. Every read is strongly
consistent: the judge reads history right after the previous turn was recorded.

`DynamoDBStateStore` holds the store operations; its client plumbing is in `dynamodb_client`,
the turn transaction in `dynamodb_turns`, the attribute codecs in `dynamodb_codec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mirror.models import CallContext, Message, Verdict
from mirror.state.base import (
    COOLDOWN_SK,
    INTERNAL_META_FIELDS,
    META_SK,
    MSG_PREFIX,
    OVERRIDE_SK,
    PK,
    SK,
    TTL_ATTRIBUTE,
    VERDICT_PREFIX,
    MetaValue,
    Quarantine,
    RecordedToolCall,
    RecordedVerdict,
    StateStoreConflictError,
    StateStoreError,
    attr_n,
    attr_s,
    call_key,
    check_cooldown,
    check_data,
    check_limit,
    check_meta_fields,
    check_tool_field,
    encode_turn,
    expiry,
    number_from_str,
    seq_of,
    to_attr,
    tool_sk,
    verdict_sk,
)
from mirror.state.dynamodb_client import DynamoDBCallTable
from mirror.state.dynamodb_codec import (
    CONDITION_FAILED,
    TRANSACTION_CANCELED,
    Item,
    Rejected,
    decode_meta,
    live,
    recorded_tool_call,
)
from mirror.state.dynamodb_turns import cancellation_outcome, turn_transaction

__all__ = ["DynamoDBStateStore", "Item"]


class DynamoDBStateStore(DynamoDBCallTable, Quarantine):
    """A `StateStore` over one DynamoDB table (schema: `CallStateTable` in template.yaml).

    Constructor (see `DynamoDBCallTable`): `table_name`, and keyword-only `client`,
    `region_name`, `endpoint_url`, `connect_timeout_s=1.0`, `read_timeout_s=2.0`,
    `max_attempts=3`, `record_attempts=5`.
    """

    # --- metadata -------------------------------------------------------------------------

    def put_call_meta(
        self, ctx: CallContext, fields: Mapping[str, MetaValue], now: float, ttl_s: int
    ) -> None:
        op = "put_call_meta"
        pk = call_key(ctx)
        values = check_meta_fields(fields)
        names = {"#e": TTL_ATTRIBUTE, "#s": "started_at"}
        attr_values: dict[str, Any] = {":e": attr_n(expiry(now, ttl_s)), ":now": attr_n(now)}
        sets = ["#e = :e"]
        for i, (name, value) in enumerate(values.items()):
            names[f"#f{i}"] = name
            attr_values[f":f{i}"] = to_attr(value)
            sets.append(f"#f{i} = :f{i}")

        for _ in range(self._record_attempts):
            try:
                self._call(
                    op,
                    "update_item",
                    tolerate=CONDITION_FAILED,
                    Key=self._key(pk, META_SK),
                    UpdateExpression="SET " + ", ".join([*sets, "#s = if_not_exists(#s, :now)"]),
                    ConditionExpression="attribute_not_exists(#pk) OR #e > :now",
                    ExpressionAttributeNames={**names, "#pk": PK},
                    ExpressionAttributeValues=attr_values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return
            except Rejected as rejected:
                old = rejected.response.get("Item")
            if old is None:
                continue  # gone again: the first form will create it
            # META exists but has expired (TTL deletion is lazy): start the metadata afresh,
            # dropping stale fields but keeping the sequence counter.
            keep = INTERNAL_META_FIELDS | set(values) | {"started_at"}
            removes = {f"#r{i}": name for i, name in enumerate(k for k in old if k not in keep)}
            update = "SET " + ", ".join([*sets, "#s = :now"])
            if removes:
                update += " REMOVE " + ", ".join(removes)
            if TTL_ATTRIBUTE in old:
                condition, guard = "#e = :old_e", {":old_e": old[TTL_ATTRIBUTE]}
            else:
                condition, guard = "attribute_not_exists(#e)", {}
            try:
                self._call(
                    op,
                    "update_item",
                    tolerate=CONDITION_FAILED,
                    Key=self._key(pk, META_SK),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames={**names, **removes},
                    ExpressionAttributeValues={**attr_values, **guard},
                )
                return
            except Rejected:
                continue  # someone revived or changed it meanwhile: start over
        raise StateStoreConflictError(
            f"state store {op}: META of {pk!r} kept changing; gave up after "
            f"{self._record_attempts} attempts"
        )

    def get_call_meta(self, ctx: CallContext, now: float) -> dict[str, MetaValue] | None:
        item = self._get("get_call_meta", call_key(ctx), META_SK)
        if item is None or not live(item, now):
            return None
        return {k: decode_meta(v) for k, v in item.items() if k not in INTERNAL_META_FIELDS}

    # --- turns ----------------------------------------------------------------------------

    def _free_seq(self, operation: str, pk: str) -> int:
        """Where numbering starts when META has no counter: after the highest stored message,
        expired or not, so a message that outlived its META is never overwritten."""
        items, _ = self._query_page(operation, pk, MSG_PREFIX, True, 1, None)
        return seq_of(items[0][SK]["S"]) + 1 if items else 0

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
        op = "record_turn"
        pk = call_key(ctx)
        vsk = verdict_sk(turn_id)
        encoded, verdict_json = encode_turn(messages, verdict, history_limit)
        expires_at = attr_n(expiry(now, ttl_s))
        for _ in range(self._record_attempts):
            meta = self._get(op, pk, META_SK)
            if meta is not None and "next_seq" in meta:
                seq = int(meta["next_seq"]["N"])
            else:
                seq = self._free_seq(op, pk)
            transact = turn_transaction(
                self._table, pk, vsk, meta, seq, encoded, verdict_json, now, expires_at
            )
            try:
                # botocore fills ClientRequestToken once per call, so its own retries of a write
                # that succeeded but whose response was lost are idempotent on the server.
                self._call(
                    op,
                    "transact_write_items",
                    tolerate=TRANSACTION_CANCELED,
                    TransactItems=transact,
                )
                return True
            except Rejected as rejected:
                reasons = [
                    str(r.get("Code", "None"))
                    for r in rejected.response.get("CancellationReasons", [])
                ]
            outcome = cancellation_outcome(reasons)
            if outcome == "recorded_before":
                return False  # the verdict exists: this turn was recorded before
            if outcome == "retry":
                continue  # a concurrent writer moved next_seq: re-read and try again
            raise StateStoreError(
                f"state store {op} failed (transact_write_items on table {self._table!r}): "
                f"transaction cancelled, reasons {reasons}"
            )
        raise StateStoreConflictError(
            f"state store {op}: concurrent writers on {pk!r} kept moving the message sequence; "
            f"gave up after {self._record_attempts} attempts"
        )

    def get_history(self, ctx: CallContext, now: float, limit: int) -> list[Message]:
        op = "get_history"
        pk = call_key(ctx)
        if check_limit(limit) == 0:
            return []
        newest_first: list[tuple[str, Any]] = []
        start: dict[str, Any] | None = None
        while len(newest_first) < limit:
            # Expired items count against Limit, so page on until enough live ones are found.
            items, start = self._query_page(
                op, pk, MSG_PREFIX, True, limit - len(newest_first), start
            )
            newest_first += [
                (item[SK]["S"], item.get("data", {}).get("S")) for item in items if live(item, now)
            ]
            if start is None:
                break
        return self._messages(ctx, list(reversed(newest_first[:limit])))

    def get_verdict(self, ctx: CallContext, turn_id: str, now: float) -> Verdict | None:
        item = self._get("get_verdict", call_key(ctx), verdict_sk(turn_id))
        if item is None or not live(item, now):
            return None
        return self._verdict(ctx, verdict_sk(turn_id), item.get("data", {}).get("S"))

    def list_verdicts(self, ctx: CallContext, now: float) -> list[RecordedVerdict]:
        op = "list_verdicts"
        pk = call_key(ctx)
        rows: list[tuple[int, float, str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            items, start = self._query_page(op, pk, VERDICT_PREFIX, False, None, start)
            rows += [
                (
                    int(item["seq"]["N"]),
                    float(number_from_str(item["recorded_at"]["N"])),
                    item[SK]["S"].removeprefix(VERDICT_PREFIX),
                    item.get("data", {}).get("S"),
                )
                for item in items
                if live(item, now)
            ]
            if start is None:
                break
        return self._verdicts(ctx, rows)

    # --- cooldown -------------------------------------------------------------------------

    def claim_cooldown(
        self, ctx: CallContext, now: float, cooldown_s: float, ttl_s: int, owner: str = ""
    ) -> bool:
        pk = call_key(ctx)
        until = now + check_cooldown(cooldown_s)
        try:
            self._call(
                "claim_cooldown",
                "put_item",
                tolerate=CONDITION_FAILED,
                Item={
                    PK: attr_s(pk),
                    SK: attr_s(COOLDOWN_SK),
                    "until": attr_n(until),
                    "owner": attr_s(owner),
                    TTL_ATTRIBUTE: attr_n(expiry(now, ttl_s)),
                },
                # The condition is evaluated atomically with the write: of concurrent claimers
                # exactly one sees the old state. A redelivery of the owning turn may renew it.
                ConditionExpression=(
                    "attribute_not_exists(#pk) OR #u <= :now OR #e <= :now"
                    + (" OR #o = :owner" if owner else "")
                ),
                ExpressionAttributeNames={
                    "#pk": PK,
                    "#u": "until",
                    "#e": TTL_ATTRIBUTE,
                    **({"#o": "owner"} if owner else {}),
                },
                ExpressionAttributeValues={
                    ":now": attr_n(now),
                    **({":owner": attr_s(owner)} if owner else {}),
                },
            )
        except Rejected:
            return False
        return True

    def cooldown_active(self, ctx: CallContext, now: float, owner: str = "") -> bool:
        item = self._get("cooldown_active", call_key(ctx), COOLDOWN_SK)
        if item is None or not live(item, now):
            return False
        if owner and item.get("owner", {}).get("S") == owner:
            return False
        return number_from_str(item["until"]["N"]) > now

    # --- operator override ----------------------------------------------------------------

    def put_override(self, ctx: CallContext, note: str, now: float, ttl_s: int) -> None:
        pk = call_key(ctx)
        check_data(note, "the override note")
        self._call(
            "put_override",
            "put_item",
            Item={
                PK: attr_s(pk),
                SK: attr_s(OVERRIDE_SK),
                "note": attr_s(note),
                TTL_ATTRIBUTE: attr_n(expiry(now, ttl_s)),
            },
        )

    def take_override(self, ctx: CallContext, now: float) -> str | None:
        # DeleteItem is atomic: of concurrent takers only one gets the old item back.
        response = self._call(
            "take_override",
            "delete_item",
            Key=self._key(call_key(ctx), OVERRIDE_SK),
            ReturnValues="ALL_OLD",
        )
        item = response.get("Attributes")
        if not item or not live(item, now):
            return None
        return str(item["note"]["S"])

    # --- allowed irreversible tool calls --------------------------------------------------

    def get_tool_call(
        self, ctx: CallContext, fingerprint: str, now: float
    ) -> RecordedToolCall | None:
        item = self._get("get_tool_call", call_key(ctx), tool_sk(fingerprint))
        if item is None or not live(item, now):
            return None
        return recorded_tool_call(item)

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
        op = "claim_tool_call"
        pk = call_key(ctx)
        sk = tool_sk(fingerprint)
        check_tool_field(tool_call_id, "tool_call_id")
        check_tool_field(name, "name")
        values: dict[str, Any] = {":now": attr_n(now), ":me": attr_s(tool_call_id)}
        condition = "attribute_not_exists(#pk) OR #e <= :now OR #id = :me"
        if retry_of is not None:
            values[":retry_of"] = attr_s(check_tool_field(retry_of, "retry_of"))
            condition += " OR #id = :retry_of"
        try:
            self._call(
                op,
                "put_item",
                tolerate=CONDITION_FAILED,
                Item={
                    PK: attr_s(pk),
                    SK: attr_s(sk),
                    "tool_call_id": attr_s(tool_call_id),
                    "name": attr_s(name),
                    "recorded_at": attr_n(now),
                    TTL_ATTRIBUTE: attr_n(expiry(now, ttl_s)),
                },
                # Checked atomically with the write: of concurrent claimers exactly one wins.
                ConditionExpression=condition,
                ExpressionAttributeNames={"#pk": PK, "#e": TTL_ATTRIBUTE, "#id": "tool_call_id"},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Rejected as rejected:
            old = rejected.response.get("Item")
            if old is not None:
                return recorded_tool_call(old)
            holder = self.get_tool_call(ctx, fingerprint, now)
            if holder is None:  # deleted in between; refusing is the safe answer
                raise StateStoreError(
                    f"state store {op} failed on table {self._table!r}: the holder of "
                    f"{sk!r} vanished during the claim"
                ) from None
            return holder
        return None
