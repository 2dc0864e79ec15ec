"""The bridge's settings, read once from the environment (the task definition sets them).

Public URLs are configured, never derived from the request: behind a TLS-terminating load
balancer the request shows the internal scheme and host, and Plivo signs the public URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

SignatureMode = Literal["off", "log", "enforce"]
Mode = Literal["aws", "local"]
"""`aws`: Lambda, Polly, DynamoDB, EventBridge. `local`: the functions in-process (against moto
or whatever `AWS_ENDPOINT_URL` points at) and offline speech."""
TtsEngine = Literal["polly", "offline"]

SIGNATURE_MODES: tuple[SignatureMode, ...] = get_args(SignatureMode)
MODES: tuple[Mode, ...] = get_args(Mode)
TTS_ENGINES: tuple[TtsEngine, ...] = get_args(TtsEngine)


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
    stream_tokens: SignatureMode = "off"
    """The per-call `<Stream>` URL token (signature.py): `enforce` refuses an upgrade without a
    valid, unexpired, unused token for the call, `log` only logs. `from_env` defaults it to
    SIGNATURE_MODE (so the service enforces it); constructed settings (tests, tools) opt in."""
    stream_token_secret: str | None = None
    """Keys the stream tokens (STREAM_TOKEN_SECRET, e.g. from Secrets Manager); None: the Plivo
    auth token (a key derived from it, so a token MAC is never a Plivo signature)."""
    stream_token_ttl_s: float = 300.0
    """How long after the answer a stream token opens the stream (Plivo connects at once)."""
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
    agent_write_timeout_s: float = 5.0
    """How long a message for the agent may wait for room in its full queue: an agent that
    took nothing for that long is stalled and the call ends (`agent_stalled`; 0: no limit)."""
    start_timeout_s: float = 10.0
    """How long an accepted stream may go without Plivo's `start` before it is closed
    (0: no limit)."""
    meta_ttl_s: int = 7 * 24 * 3600
    # --- supervision (mirror_bridge.wiring reads these; required ones are checked there) ------
    mode: Mode = "aws"
    score_turn_function: str | None = None
    gate_tool_function: str | None = None
    generate_correction_function: str | None = None
    """Function names or ARNs for direct invoke (`aws` mode)."""
    event_bus_name: str | None = None
    """Where `CallEnded` goes (`aws` mode: required; `local`: optional, else it is only logged)."""
    tts_engine: TtsEngine | None = None
    """None: Polly in `aws` mode, the offline engine in `local` mode."""
    polly_engine: str = "neural"
    function_workers: int = 16
    """Threads for function calls (Lambda invokes or in-process handlers), shared by all calls."""
    hold_budget_s: float = 0.1
    """How long a turn's audio waits for its verdict before it is released (fail open)."""
    max_call_s: float = 3600.0
    """Call-length guard: the call is ended after this long (0: no limit)."""
    caller_silence_s: float = 10.0
    """Silence watchdog: the agent is told after this long without the caller (0: off)."""
    mirror_dispatch_s: float = 0.02
    """How long the relay waits for a session to take a Mirror message before it reads on."""

    def __post_init__(self) -> None:
        if not self.auth_token and self.signature_mode == "enforce":
            raise SettingsError("PLIVO_AUTH_TOKEN is required when signatures are enforced")
        u = urlsplit(self.public_base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise SettingsError(f"PUBLIC_BASE_URL must be http(s)://host: {self.public_base_url!r}")
        if self.signature_mode not in SIGNATURE_MODES:
            raise SettingsError(_not_one_of("SIGNATURE_MODE", self.signature_mode, SIGNATURE_MODES))
        if self.stream_tokens not in SIGNATURE_MODES:
            raise SettingsError(
                _not_one_of("STREAM_TOKEN_MODE", self.stream_tokens, SIGNATURE_MODES)
            )
        if self.stream_tokens != "off" and not self.stream_token_key:
            raise SettingsError("stream tokens need STREAM_TOKEN_SECRET or PLIVO_AUTH_TOKEN")
        if not 0 < self.stream_token_ttl_s <= 3600:
            raise SettingsError(
                f"STREAM_TOKEN_TTL_S must be in (0, 3600] seconds: {self.stream_token_ttl_s}"
            )
        if self.queue_size < 1:
            raise SettingsError("BRIDGE_QUEUE_SIZE must be at least 1")
        if self.mode not in MODES:
            raise SettingsError(_not_one_of("BRIDGE_MODE", self.mode, MODES))
        if self.tts_engine is not None and self.tts_engine not in TTS_ENGINES:
            raise SettingsError(_not_one_of("TTS_ENGINE", self.tts_engine, TTS_ENGINES))
        if self.function_workers < 1:
            raise SettingsError("FUNCTION_WORKERS must be at least 1")
        if not 0 < self.hold_budget_s <= 5:
            raise SettingsError(f"HOLD_BUDGET_S must be in (0, 5] seconds: {self.hold_budget_s}")
        for name, value in (
            ("MAX_CALL_S", self.max_call_s),
            ("CALLER_SILENCE_S", self.caller_silence_s),
            ("mirror_dispatch_s", self.mirror_dispatch_s),
            ("AGENT_WRITE_TIMEOUT_S", self.agent_write_timeout_s),
            ("START_TIMEOUT_S", self.start_timeout_s),
        ):
            if not value >= 0:  # also false for nan
                raise SettingsError(f"{name} must be 0 or more seconds: {value}")

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

    @property
    def stream_token_key(self) -> str:
        return self.stream_token_secret or self.auth_token

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

        tts = opt("TTS_ENGINE")
        return cls(
            auth_token=opt("PLIVO_AUTH_TOKEN") or "",
            main_auth_token=opt("PLIVO_MAIN_AUTH_TOKEN"),
            public_base_url=opt("PUBLIC_BASE_URL") or "",
            public_stream_url=opt("PUBLIC_STREAM_URL"),
            signature_mode=_one_of(
                "SIGNATURE_MODE", opt("SIGNATURE_MODE") or "enforce", SIGNATURE_MODES
            ),
            stream_tokens=_one_of(
                "STREAM_TOKEN_MODE",
                opt("STREAM_TOKEN_MODE") or opt("SIGNATURE_MODE") or "enforce",
                SIGNATURE_MODES,
            ),
            stream_token_secret=opt("STREAM_TOKEN_SECRET"),
            stream_token_ttl_s=num("STREAM_TOKEN_TTL_S", 300.0),
            call_table=opt("CALL_TABLE"),
            default_agent_url=opt("DEFAULT_AGENT_URL"),
            default_tenant_id=opt("DEFAULT_TENANT_ID") or "default",
            tenant_cache_ttl_s=num("TENANT_CACHE_TTL_S", 30.0),
            agent_connect_timeout_s=num("AGENT_CONNECT_TIMEOUT_S", 3.0),
            queue_size=int(num("BRIDGE_QUEUE_SIZE", 512)),
            agent_write_timeout_s=num("AGENT_WRITE_TIMEOUT_S", 5.0),
            start_timeout_s=num("START_TIMEOUT_S", 10.0),
            mode=_one_of("BRIDGE_MODE", (opt("BRIDGE_MODE") or "aws").lower(), MODES),
            score_turn_function=opt("SCORE_TURN_FUNCTION"),
            gate_tool_function=opt("GATE_TOOL_FUNCTION"),
            generate_correction_function=opt("GENERATE_CORRECTION_FUNCTION"),
            event_bus_name=opt("EVENT_BUS_NAME"),
            tts_engine=_one_of("TTS_ENGINE", tts.lower(), TTS_ENGINES) if tts else None,
            polly_engine=opt("POLLY_ENGINE") or "neural",
            function_workers=int(num("FUNCTION_WORKERS", 16)),
            hold_budget_s=num("HOLD_BUDGET_S", 0.1),
            max_call_s=num("MAX_CALL_S", 3600.0),
            caller_silence_s=num("CALLER_SILENCE_S", 10.0),
        )


def _one_of[T: str](name: str, text: str, allowed: tuple[T, ...]) -> T:
    """`text` as the one of `allowed` it spells (typed as that Literal); SettingsError naming
    the setting for anything else."""
    for value in allowed:
        if text == value:
            return value
    raise SettingsError(_not_one_of(name, text, allowed))


def _not_one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    return f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}: {value!r}"
