"""The bridge app served by uvicorn on a real loopback socket (a background thread, a free port
per server), for the integration and e2e tests, and what a bridge on such a port offers them:
its stream URL and a signed Plivo peer for the test tenant's number."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from mirror_bridge.plivo_socket import WS_PROTOCOL
from mirror_dev.plivo_peer import PlivoPeer
from tests.conftest import AUTH_TOKEN

NUMBER = "14155550199"
"""The number the test tenant answers on."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a daemon thread with its own event loop."""

    def __init__(
        self, app: Any, port: int | None = None, lifespan: str = "off", ws: str = WS_PROTOCOL
    ) -> None:
        """`lifespan="on"` runs the app's start-up before `__enter__` returns. `ws`: uvicorn's
        WebSocket protocol, the bridge's as deployed unless told ("auto": uvicorn's own, which
        offers the relay no push path)."""
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan,
            ws_ping_interval=None, ws=ws,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:  # set once the app's start-up (if on) is done
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


class LoopbackBridge:
    """A bridge app served on `self.port` (set by the subclass, with its LiveServer)."""

    port: int

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/plivo/stream"

    def peer(self, **kw: Any) -> PlivoPeer:
        """A Plivo peer signed with the test auth token, calling NUMBER at 20x speed unless
        told."""
        kw.setdefault("extra_headers", f"mirrorNumber={NUMBER}")
        kw.setdefault("speed", 20.0)
        return PlivoPeer(self.stream_url, auth_token=AUTH_TOKEN, **kw)
