"""OpenAI, Azure OpenAI and any OpenAI-compatible endpoint, through the official SDK.

The SDK's own retries are off: this adapter retries 429, 5xx, connection errors and timeouts
itself, at most `max_retries` times, with exponential backoff (or the server's Retry-After),
and never past the caller's budget. Other 4xx are not retried: asking again cannot help.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from mirror.llm.base import (
    LLMBadOutput,
    LLMError,
    LLMRefusal,
    LLMTimeout,
    LLMUnavailable,
    parse_json_reply,
)
from mirror.llm.keys import KeySource
from mirror.llm.settings import LLMSettings

if TYPE_CHECKING:  # the SDK loads in __init__, not at import
    from openai import APIStatusError, AsyncOpenAI
    from openai.types.chat import ChatCompletion

OPENAI_BASE_URL = "https://api.openai.com/v1"
BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix; carries the error to raise at the
    end and the server's requested wait, if any."""

    def __init__(self, error: LLMError, retry_after_s: float | None = None) -> None:
        self.error, self.retry_after_s = error, retry_after_s


class OpenAIChatLLM:
    def __init__(
        self,
        settings: LLMSettings,
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        if settings.provider not in ("openai", "azure"):
            raise ValueError(f"OpenAIChatLLM does not serve provider {settings.provider}")
        # The SDK loads here, at function init, not inside the first turn's budget: its import
        # and the chat resource take seconds on a cold Lambda, more than `timeouts.tier2_s`.
        import openai  # noqa: F401
        import openai.resources.chat.completions  # noqa: F401

        self.settings = settings
        self.name = settings.name
        self._keys = KeySource(settings.api_key_secret, settings.key_env, environ)
        self._sleep = sleep
        self._backoff_s = backoff_s
        # An httpx client belongs to the event loop it first ran on; a Lambda handler may run
        # asyncio.run() per event, so clients are kept per loop (and per key, for rotation).
        self._client: AsyncOpenAI | None = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._client_key: str | None = None

    async def complete_json[M: BaseModel](
        self, *, system: str, user: str, schema: type[M], timeout_s: float
    ) -> M:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: LLMError = LLMTimeout(f"{self.name}: no time for an attempt")
        for attempt in range(self.settings.max_retries + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    reply = await self._attempt(system, user, remaining)
            except _Retry as r:
                last = r.error
                delay = self._delay(attempt, r.retry_after_s)
                if attempt == self.settings.max_retries or loop.time() + delay >= deadline:
                    break
                await self._sleep(delay)
                continue
            except TimeoutError:
                last = LLMTimeout(f"{self.name}: no reply within {timeout_s:g}s")
                break
            return self._parse(reply, schema)
        raise last

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), MAX_BACKOFF_S)
        return min(self._backoff_s * 2.0**attempt, MAX_BACKOFF_S) * random.uniform(0.5, 1.0)

    async def _attempt(self, system: str, user: str, remaining: float) -> ChatCompletion:
        import openai

        client = await self._sdk_client()
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": s.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "response_format": {"type": "json_object"},
            "timeout": min(s.timeout_s, remaining),
        }
        # api.openai.com wants max_completion_tokens (its reasoning models reject max_tokens);
        # Azure's older API versions and most compatible servers know only max_tokens.
        official = s.provider == "openai" and s.base_url is None
        kwargs["max_completion_tokens" if official else "max_tokens"] = s.max_tokens
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        try:
            # Not streamed (no `stream` in kwargs): the SDK answers a ChatCompletion.
            reply: ChatCompletion = await client.chat.completions.create(**kwargs)
            return reply
        except openai.APITimeoutError:
            raise _Retry(LLMTimeout(f"{self.name}: attempt timed out")) from None
        except openai.APIConnectionError as e:
            error = LLMUnavailable(f"{self.name}: connection failed ({type(e).__name__})")
            raise _Retry(error) from None
        except openai.APIStatusError as e:
            status = e.status_code
            error = LLMUnavailable(f"{self.name}: HTTP {status} ({_error_code(e)})")
            if status == 429 or status >= 500:
                raise _Retry(error, _retry_after(e)) from None
            if status == 401:
                self._keys.invalidate()
            if _error_code(e) == "content_filter":
                raise LLMRefusal(f"{self.name}: the prompt was filtered") from None
            raise error from None

    async def _sdk_client(self) -> AsyncOpenAI:
        key = await self._keys.get()
        loop = asyncio.get_running_loop()
        # A weak reference, not id(loop): a new loop can reuse a dead loop's id.
        client = self._client
        if (
            client is None
            or self._client_loop is None
            or self._client_loop() is not loop
            or self._client_key != key
        ):
            client = self._client = self._new_client(key)
            self._client_loop, self._client_key = weakref.ref(loop), key
        return client

    def _new_client(self, key: str) -> AsyncOpenAI:
        s = self.settings
        if s.provider == "azure":
            from openai import AsyncAzureOpenAI

            # LLMSettings' validator requires it for provider azure.
            assert s.azure_endpoint is not None
            return AsyncAzureOpenAI(
                api_key=key,
                azure_endpoint=s.azure_endpoint,
                api_version=s.azure_api_version,
                azure_deployment=s.azure_deployment or s.model,
                max_retries=0,
                timeout=s.timeout_s,
            )
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=key, base_url=s.base_url or OPENAI_BASE_URL, max_retries=0, timeout=s.timeout_s
        )

    def _parse[M: BaseModel](self, reply: ChatCompletion, schema: type[M]) -> M:
        if not getattr(reply, "choices", None):
            raise LLMBadOutput(f"{self.name}: reply without choices")
        choice = reply.choices[0]
        if getattr(choice.message, "refusal", None):
            raise LLMRefusal(f"{self.name}: the model refused")
        if choice.finish_reason == "content_filter":
            raise LLMRefusal(f"{self.name}: the reply was filtered")
        if choice.finish_reason == "length":
            raise LLMBadOutput(f"{self.name}: reply cut at max_tokens")
        return parse_json_reply(choice.message.content, schema, self.name)


def _error_code(e: APIStatusError) -> str:
    """The provider's error code ("rate_limit_exceeded", "content_filter"...), never its message,
    which can quote the request."""
    return str(getattr(e, "code", None) or "error")


def _retry_after(e: APIStatusError) -> float | None:
    """The server's wait, from retry-after-ms (OpenAI, Azure) or retry-after in seconds."""
    headers = e.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None
