"""The port every LLM adapter implements, and the errors the judge's failure rule catches.

Adapters never return a half-parsed answer: an answer either validates against the caller's
schema or the call raises `LLMError`. A raised error makes the Judge fail open for speech and
hold irreversible calls, so nothing malformed can turn into an "allow" of a write.
"""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import BaseModel, ValidationError


class LLMError(RuntimeError):
    """Any failure to get a valid answer. Messages never hold keys, prompts or model output."""


class LLMTimeout(LLMError):
    """The call's budget ran out (one attempt, or all of them with their backoff)."""


class LLMRefusal(LLMError):
    """The model or the provider's content filter declined to answer."""


class LLMBadOutput(LLMError):
    """The reply was not JSON, did not fit the schema, was cut short, or contradicted itself."""


class LLMUnavailable(LLMError):
    """The provider answered with an error (auth, 4xx, 429 or 5xx after the retries)."""


class LLMClient(Protocol):
    """A JSON-answering chat model. `name` identifies provider and model in logs and reasons."""

    name: str

    async def complete_json[M: BaseModel](
        self, *, system: str, user: str, schema: type[M], timeout_s: float
    ) -> M: ...


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL | re.IGNORECASE)


def parse_json_reply[M: BaseModel](text: str | None, schema: type[M], source: str) -> M:
    """Validate a model's reply. A reply wrapped in one Markdown code fence (common with
    Converse models, which have no JSON mode) is unwrapped; nothing else is repaired."""
    if not text or not text.strip():
        raise LLMBadOutput(f"{source}: empty reply")
    m = _FENCE.match(text)
    try:
        return schema.model_validate_json(m.group(1) if m else text)
    except ValidationError as e:
        # Locations and error types only: the input may echo caller PII.
        where = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(reply)'}: {err['type']}"
            for err in e.errors(include_input=False, include_url=False)[:5]
        )
        raise LLMBadOutput(f"{source}: reply does not fit {schema.__name__} ({where})") from None
