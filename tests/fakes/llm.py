"""An `LLMClient` with a scripted reply, for the tiers and the correction service."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel

from mirror.llm.base import parse_json_reply

GOOD_LINE = "Sorry, let me correct that: the medium pepperoni, not the large."
GOOD_NOTE = "The caller changed the size to medium; use medium from now on."


class FakeLLM:
    """Returns `reply` parsed and validated against the schema as the real adapters do
    (`parse_json_reply`), or raises `error`, optionally after `delay_s`; records every call."""

    def __init__(
        self,
        reply: dict[str, Any] | str,
        *,
        error: BaseException | None = None,
        delay_s: float = 0.0,
        name: str = "fake:scripted",
    ) -> None:
        self.reply = reply if isinstance(reply, str) else json.dumps(reply)
        self.error, self.delay_s, self.name = error, delay_s, name
        self.calls: list[dict[str, Any]] = []

    async def complete_json[M: BaseModel](
        self, *, system: str, user: str, schema: type[M], timeout_s: float
    ) -> M:
        self.calls.append(
            {"system": system, "user": user, "schema": schema, "timeout_s": timeout_s}
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return parse_json_reply(self.reply, schema, self.name)


def correction_llm(
    correction: str = GOOD_LINE,
    override_note: str = GOOD_NOTE,
    *,
    error: BaseException | None = None,
    delay_s: float = 0.0,
) -> FakeLLM:
    """The correction service's LLM: a correction line and an override note."""
    reply = {"correction": correction, "override_note": override_note}
    return FakeLLM(reply, error=error, delay_s=delay_s)
