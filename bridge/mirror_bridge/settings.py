"""The bridge's settings, read once from the environment (the task definition sets them).

Public URLs are configured, never derived from the request: behind a TLS-terminating load
balancer the request shows the internal scheme and host, and Plivo signs the public URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

SignatureMode = Literal["off", "log", "enforce"]


class SettingsError(ValueError):
    """A setting is missing or malformed: fail at start-up, not on the first call."""


@dataclass(frozen=True, slots=True)
class Settings:
    auth_token: str
    """Plivo (sub)account auth token: keys `X-Plivo-Signature-V3`."""
    public_base_url: str
    """e.g. `https://bridge.example.com`: the answer, status and stream URLs hang off it."""
    main_auth_token: str | None = None
    """Main account token: keys `X-Plivo-Signature-Ma-V3` when set."""
    signature_mode: SignatureMode = "enforce"
    public_stream_url: str | None = None
    """Overrides `wss://{host}/plivo/stream` (the exact text put in `<Stream>`)."""
    call_table: str | None = None
    """The call-state table (tenant configs and stream status live there too)."""
    default_agent_url: str | None = None
    """Agent WebSocket for numbers with no tenant item (None: such calls are rejected)."""
    default_tenant_id: str = "default"
    tenant_cache_ttl_s: float = 30.0
    agent_connect_timeout_s: float = 3.0
    queue_size: int = 512
    """Frames buffered per direction before the producer waits (about 10 s of 20 ms audio)."""
    close_drain_s: float = 1.0
    """How long closing waits for queued frames (e.g. `stop` to the agent) to go out."""
    meta_ttl_s: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not self.auth_token and self.signature_mode == "enforce":
            raise SettingsError("PLIVO_AUTH_TOKEN is required when signatures are enforced")
        u = urlsplit(self.public_base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise SettingsError(f"PUBLIC_BASE_URL must be http(s)://host: {self.public_base_url!r}")
        if self.signature_mode not in ("off", "log", "enforce"):
            raise SettingsError(
                f"SIGNATURE_MODE must be off, log or enforce: {self.signature_mode}"
            )
        if self.queue_size < 1:
            raise SettingsError("BRIDGE_QUEUE_SIZE must be at least 1")

    def _public(self, path: str, scheme: str | None = None) -> str:
        u = urlsplit(self.public_base_url)
        base_path = u.path.rstrip("/")
        return urlunsplit((scheme or u.scheme, u.netloc, base_path + path, "", ""))

    @property
    def answer_url(self) -> str:
        return self._public("/plivo/answer")

    @property
    def status_url(self) -> str:
        return self._public("/plivo/stream-status")

    @property
    def stream_url(self) -> str:
        if self.public_stream_url:
            return self.public_stream_url
        scheme = "wss" if urlsplit(self.public_base_url).scheme == "https" else "ws"
        return self._public("/plivo/stream", scheme)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def opt(name: str) -> str | None:
            return (environ.get(name) or "").strip() or None

        def num(name: str, default: float) -> float:
            raw = opt(name)
            try:
                return float(raw) if raw is not None else default
            except ValueError:
                raise SettingsError(f"{name} must be a number: {raw!r}") from None

        return cls(
            auth_token=opt("PLIVO_AUTH_TOKEN") or "",
            main_auth_token=opt("PLIVO_MAIN_AUTH_TOKEN"),
            public_base_url=opt("PUBLIC_BASE_URL") or "",
            public_stream_url=opt("PUBLIC_STREAM_URL"),
            signature_mode=(opt("SIGNATURE_MODE") or "enforce"),  # type: ignore[arg-type]
            call_table=opt("CALL_TABLE"),
            default_agent_url=opt("DEFAULT_AGENT_URL"),
            default_tenant_id=opt("DEFAULT_TENANT_ID") or "default",
            tenant_cache_ttl_s=num("TENANT_CACHE_TTL_S", 30.0),
            agent_connect_timeout_s=num("AGENT_CONNECT_TIMEOUT_S", 3.0),
            queue_size=int(num("BRIDGE_QUEUE_SIZE", 512)),
        )
