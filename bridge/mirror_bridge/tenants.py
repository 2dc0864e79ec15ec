"""Per-number tenant configuration: which agent answers a number, with which policies and voice.

Stored in the call table as one item per called number:

    pk   "@tenant#{number}"   number = digits only (E.164 without '+'), e.g. "@tenant#14155550199"
    sk   "CONFIG"
    data JSON of `TenantConfig` (below)
    updated_at  epoch seconds (informational)

'@' cannot start a tenant id, so no call partition (`{tenant}#{call}`) can collide with it. Reads
go through boto3 on a worker thread and are cached for a short TTL: the answer URL must stay fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mirror import aws
from mirror.models import MAX_POLICIES, Identifier, TenantId

log = logging.getLogger("mirror_bridge.tenants")

TENANT_PK_PREFIX = "@tenant#"
TENANT_SK = "CONFIG"


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: TenantId
    agent_url: Annotated[str, Field(pattern=r"^wss?://", max_length=2048)]
    """The team's agent WebSocket; it gets the relayed Plivo protocol and Mirror messages."""
    policies: list[Annotated[str, Field(max_length=4_000)]] = Field(
        default_factory=list, max_length=MAX_POLICIES
    )
    irreversible_tools: list[Identifier] | None = None
    voice: Annotated[str, Field(min_length=1, max_length=64)] = "Joanna"
    """TTS voice for the buffer line and corrections (a Polly voice id in AWS)."""
    language: Annotated[str, Field(min_length=2, max_length=16)] = "en-US"
    buffer_text: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    agent_headers: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict)
    """Extra HTTP headers on the agent WebSocket upgrade (e.g. a shared secret)."""
    bidirectional: bool = True
    """False: the answer asks Plivo for a one-way stream (the caller's audio only; the agent
    speaks some other way), and Mirror's buffer line and correction go through Plivo's REST
    Speak and Stop Speak (`PLIVO_AUTH_ID` must be set)."""


def normalize_number(number: str) -> str:
    """'+1 (415) 555-0199' and 'sip:14155550199@host' both give '14155550199'."""
    if number.startswith("sip:"):
        number = number[4:].split("@", 1)[0]
    return re.sub(r"\D", "", number)


def tenant_pk(number: str) -> str:
    return TENANT_PK_PREFIX + normalize_number(number)


def tenant_item(number: str, config: TenantConfig, now: float) -> dict[str, Any]:
    """The DynamoDB item (low-level attribute form) for a number's config: for seeding."""
    return {
        "pk": {"S": tenant_pk(number)},
        "sk": {"S": TENANT_SK},
        "data": {"S": config.model_dump_json(exclude_none=True)},
        "updated_at": {"N": str(int(now))},
    }


class TenantDirectory(Protocol):
    async def get(self, number: str) -> TenantConfig | None:
        """The number's config, or None (unknown number or unusable item)."""
        ...


class StaticTenants:
    """A fixed map (tests, the local demo, a single-tenant deployment)."""

    def __init__(self, configs: Mapping[str, TenantConfig]) -> None:
        self._configs = {normalize_number(k): v for k, v in configs.items()}

    async def get(self, number: str) -> TenantConfig | None:
        return self._configs.get(normalize_number(number))


class DynamoDBTenants:
    """Reads `@tenant#{number}` items; caches hits and misses for `ttl_s`."""

    def __init__(
        self,
        table_name: str,
        client: Any | None = None,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table_name
        self._client = client
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, TenantConfig | None]] = {}

    def _get_client(self) -> Any:
        if self._client is None:  # lazily: importing boto3 costs ~0.3 s
            self._client = aws.client("dynamodb")
        return self._client

    def _read(self, number: str) -> TenantConfig | None:
        response = self._get_client().get_item(
            TableName=self._table,
            Key={"pk": {"S": tenant_pk(number)}, "sk": {"S": TENANT_SK}},
            ConsistentRead=False,
        )
        item = response.get("Item")
        if not item:
            return None
        try:
            return TenantConfig.model_validate(json.loads(item["data"]["S"]))
        except (KeyError, ValueError, ValidationError) as e:
            log.error("tenant item %s is unusable: %s", tenant_pk(number), e)
            return None

    async def get(self, number: str) -> TenantConfig | None:
        key = normalize_number(number)
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            config = await asyncio.to_thread(self._read, key)
        except Exception as e:  # the store is down: keep serving a stale entry if we have one
            log.error("tenant lookup for %s failed: %s", key, e)
            return hit[1] if hit is not None else None
        self._cache[key] = (now + self._ttl, config)
        return config
