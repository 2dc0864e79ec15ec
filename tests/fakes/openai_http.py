"""OpenAI's chat completions API faked at the HTTP layer (respx): the response objects it
returns, and a strict router that fails on any request to an unmocked URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx
from respx.models import AllMockedAssertionError

OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def chat_completion(
    content: str | None,
    *,
    refusal: str | None = None,
    finish_reason: str = "stop",
    model: str = "gpt-4o-mini-2024-07-18",
) -> dict[str, Any]:
    """A chat.completion object as api.openai.com returns it."""
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 412,
            "completion_tokens": 38,
            "total_tokens": 450,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }


class StrictRouter(respx.MockRouter):
    """respx in strict mode that also remembers what it refused: the adapters turn a transport
    error into an LLMError, which must not let an unmocked request pass for a tested failure."""

    def __init__(self) -> None:
        super().__init__(assert_all_mocked=True, assert_all_called=False)
        self.unmocked: list[str] = []

    @contextmanager
    def resolver(self, request: httpx.Request) -> Iterator[Any]:
        try:
            with super().resolver(request) as resolved:
                yield resolved
        except AllMockedAssertionError:
            self.unmocked.append(f"{request.method} {request.url}")
            raise


@contextmanager
def strict_http() -> Iterator[StrictRouter]:
    router = StrictRouter()
    with router:
        yield router
    assert router.unmocked == [], f"requests to unmocked URLs: {router.unmocked}"
