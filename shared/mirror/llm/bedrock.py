"""Amazon Bedrock through the Converse API (any Converse model), off the event loop.

Retries are botocore's (standard mode, `max_retries` after the first attempt) and each attempt
is bounded by botocore's connect/read timeouts; the caller's budget bounds the whole call.
Converse has no JSON mode, so the system prompt asks for JSON and the reply is validated.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pydantic import BaseModel

from mirror.llm.base import (
    LLMBadOutput,
    LLMRefusal,
    LLMTimeout,
    LLMUnavailable,
    parse_json_reply,
)
from mirror.llm.settings import LLMSettings

CONNECT_TIMEOUT_S = 2.0
_REFUSED = frozenset({"guardrail_intervened", "content_filtered"})


class BedrockLLM:
    def __init__(self, settings: LLMSettings, *, client: Any = None) -> None:
        if settings.provider != "bedrock":
            raise ValueError(f"BedrockLLM does not serve provider {settings.provider}")
        import boto3  # noqa: F401 - at function init, not inside the first turn's budget

        self.settings = settings
        self.name = settings.name
        self._client = client
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The bedrock-runtime client, built on first use (boto3 loads then, not at import)."""
        with self._lock:
            if self._client is None:
                from mirror.aws import client

                s = self.settings
                self._client = client(
                    "bedrock-runtime",
                    connect_timeout_s=min(CONNECT_TIMEOUT_S, s.timeout_s),
                    read_timeout_s=s.timeout_s,
                    attempts=s.max_retries + 1,  # retries after the first attempt
                    region_name=s.bedrock_region,
                )
            return self._client

    async def complete_json[M: BaseModel](
        self, *, system: str, user: str, schema: type[M], timeout_s: float
    ) -> M:
        s = self.settings
        inference: dict[str, Any] = {"maxTokens": s.max_tokens}
        if s.temperature is not None:
            inference["temperature"] = s.temperature
        request = {
            "modelId": s.model,
            "system": [{"text": system}],
            "messages": [{"role": "user", "content": [{"text": user}]}],
            "inferenceConfig": inference,
        }
        try:
            async with asyncio.timeout(timeout_s):
                reply = await asyncio.to_thread(self._converse, request)
        except TimeoutError:
            raise LLMTimeout(f"{self.name}: no reply within {timeout_s:g}s") from None
        stop = reply.get("stopReason")
        if stop in _REFUSED:
            raise LLMRefusal(f"{self.name}: stopped by {stop}")
        if stop == "max_tokens":
            raise LLMBadOutput(f"{self.name}: reply cut at max_tokens")
        content = reply.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        return parse_json_reply(text, schema, self.name)

    def _converse(self, request: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

        try:
            reply: dict[str, Any] = self.client().converse(**request)
            return reply
        except (ReadTimeoutError, ConnectTimeoutError):
            raise LLMTimeout(f"{self.name}: attempt timed out") from None
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "error")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise LLMUnavailable(f"{self.name}: {code} (HTTP {status})") from None
        except BotoCoreError as e:
            raise LLMUnavailable(f"{self.name}: {type(e).__name__}") from None
