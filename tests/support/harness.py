"""The supervised bridge on a loopback port: the real app, the production session factory
(`mirror_bridge.wiring.build_session_factory`) with the given transport, and one tenant whose
agent is a scripted agent. Imported by the test modules (not a pytest conftest)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mirror.state import InMemoryStateStore, StateStore
from mirror_bridge.app import create_app
from mirror_bridge.call_end import EventSink, InMemoryEventSink
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import StaticTenants, TenantConfig
from mirror_bridge.transport import FunctionTransport
from mirror_bridge.tts import TTS
from mirror_bridge.wiring import build_session_factory
from tests.conftest import AUTH_TOKEN
from tests.fakes.tts import FakeTTS
from tests.support.live_server import NUMBER, LiveServer, LoopbackBridge, free_port

TENANT = "acme"


class SupervisedBridge(LoopbackBridge):
    """`with bridge.server:` serves it; `bridge.peer()` is a signed Plivo peer for the tenant."""

    def __init__(
        self,
        agent_url: str,
        *,
        transport: FunctionTransport,
        tts: TTS | None = None,
        store: StateStore | None = None,
        events: EventSink | None = None,
        tenant: dict[str, Any] | None = None,
        lifespan: bool = False,
        **settings: Any,
    ) -> None:
        self.port = free_port()
        settings.setdefault("close_drain_s", 0.5)
        self.settings = Settings(
            auth_token=AUTH_TOKEN, public_base_url=f"http://127.0.0.1:{self.port}", **settings
        )
        self.events = events if events is not None else InMemoryEventSink()
        self.store = store if store is not None else InMemoryStateStore()
        self.supervision = build_session_factory(
            self.settings,
            transport=transport,
            tts=tts or FakeTTS(),
            store=self.store,
            events=self.events,
            environ={},
        )
        config = TenantConfig(tenant_id=TENANT, agent_url=agent_url, **(tenant or {}))
        self.app = create_app(
            self.settings,
            tenants=StaticTenants({NUMBER: config}),
            store=self.store,
            session_factory=self.supervision,
            lifespan=self.supervision.lifespan if lifespan else None,
        )
        # with the lifespan, the server starts as the service does: handlers loaded, the
        # buffer line rendered, before the first call
        self.server = LiveServer(self.app, self.port, lifespan="on" if lifespan else "off")

    @property
    def sessions(self) -> list[Any]:
        return list(self.supervision.sessions)

    @property
    def relays(self) -> list[Any]:
        return list(self.app.state.relays)

    def call_ended(self) -> list[dict[str, Any]]:
        sink = self.events
        assert isinstance(sink, InMemoryEventSink)
        return [detail for kind, detail in sink.events if kind == "CallEnded"]

    async def wait_ended(self, n: int = 1, timeout: float = 10.0) -> None:
        """Until `n` calls emitted CallEnded (polled: the server runs on its own thread)."""
        deadline = time.monotonic() + timeout
        while len(self.call_ended()) < n:
            assert time.monotonic() < deadline, f"CallEnded x{n} never came"
            await asyncio.sleep(0.005)
