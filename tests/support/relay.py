"""The bridge app with a pass-through session on a loopback port (uvicorn), wired to one
scripted agent through a tenant entry; the sessions it made record what the relay handed them.
The supervised bridge (the production session factory) is harness.py's."""

from __future__ import annotations

import asyncio
from typing import Any

from mirror_bridge.app import create_app
from mirror_bridge.outbound import SessionIO
from mirror_bridge.plivo_socket import WS_PROTOCOL
from mirror_bridge.relay import CallContext, PassThroughSession
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import StaticTenants, TenantConfig
from tests.conftest import AUTH_TOKEN
from tests.support.live_server import NUMBER, LiveServer, LoopbackBridge, free_port


class RecordingSession(PassThroughSession):
    """PassThrough that records what the relay handed it."""

    def __init__(self, ctx: CallContext, io: SessionIO, log: list[RecordingSession]) -> None:
        super().__init__(ctx, io)
        self.closes: list[str] = []
        self.starts = 0
        self.plivo_events: list[str] = []
        log.append(self)

    async def on_start(self, start: Any) -> None:
        self.starts += 1

    async def on_plivo_event(self, event: Any) -> None:
        self.plivo_events.append(event.event)
        await super().on_plivo_event(event)

    async def close(self, reason: str) -> None:
        self.closes.append(reason)
        await super().close(reason)


class Bridge(LoopbackBridge):
    """The app on a free port, wired to one scripted agent through a tenant entry."""

    def __init__(
        self,
        agent_url: str,
        signature_mode: str = "enforce",
        session_factory: Any = None,
        ws: str = WS_PROTOCOL,
    ) -> None:
        self.port = free_port()
        self.sessions: list[RecordingSession] = []
        self.settings = Settings(
            auth_token=AUTH_TOKEN, public_base_url=f"http://127.0.0.1:{self.port}",
            signature_mode=signature_mode, close_drain_s=0.5,  # type: ignore[arg-type]
        )  # fmt: skip
        tenants = StaticTenants({NUMBER: TenantConfig(tenant_id="acme", agent_url=agent_url)})
        self.app = create_app(
            self.settings, tenants=tenants,
            session_factory=session_factory
            or (lambda ctx, io: RecordingSession(ctx, io, self.sessions)),
        )  # fmt: skip
        self.server = LiveServer(self.app, self.port, ws=ws)

    async def wait_closed_sessions(self, n: int = 1, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while sum(1 for s in self.sessions if s.closes) < n:
            assert loop.time() < end, "session was never closed"
            await asyncio.sleep(0.01)
