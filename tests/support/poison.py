"""Stored items no reader can decode, written straight into a (moto) call table past the models:
what an older version, a hand edit or a hostile write could have left in a call's partition."""

from __future__ import annotations

import json
from typing import Any

from mirror.models import CallContext
from mirror.state import call_key
from mirror.state.base import MSG_PREFIX, VERDICT_PREFIX

POISONED_TURN = "poisoned"
"""The turn id of the undecodable verdict."""


def nested(depth: int) -> dict[str, Any]:
    """A dict `depth` levels deep (the outer dict is level 1)."""
    out: dict[str, Any] = {}
    cur = out
    for _ in range(depth - 1):
        cur["a"] = {}
        cur = cur["a"]
    return out


def poison(ddb: Any, table: str, ctx: CallContext, seq: int, expires_at: float) -> None:
    """One history message at `seq` whose tool call args nest 250 levels deep (over the JSON
    reader's limit of 200) and one verdict that is not a verdict, in the call's partition."""
    pk = call_key(ctx)
    expires = {"N": str(int(expires_at))}
    data = json.dumps(
        {"role": "agent", "text": "", "tool_calls": [{"id": "x", "name": "n", "args": nested(250)}]}
    )
    ddb.put_item(
        TableName=table,
        Item={"pk": {"S": pk}, "sk": {"S": f"{MSG_PREFIX}{seq:010d}"}, "data": {"S": data},
              "expires_at": expires},
    )  # fmt: skip
    ddb.put_item(
        TableName=table,
        Item={"pk": {"S": pk}, "sk": {"S": f"{VERDICT_PREFIX}{POISONED_TURN}"},
              "data": {"S": '{"decision": "perhaps"}'}, "seq": {"N": str(seq)},
              "recorded_at": {"N": str(expires_at - 3600)}, "expires_at": expires},
    )  # fmt: skip
