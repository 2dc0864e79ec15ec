"""Bridge tests: make `bridge/` importable (the package is not installed) and run the app on a
real loopback socket (uvicorn in a background thread, a free port per server)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BRIDGE_DIR = Path(__file__).resolve().parents[2] / "bridge"
if str(BRIDGE_DIR) not in sys.path:
    sys.path.insert(0, str(BRIDGE_DIR))

import uvicorn  # noqa: E402

from mirror_bridge.plivo_socket import WS_PROTOCOL  # noqa: E402

AUTH_TOKEN = "MY_TEST_AUTH_TOKEN"


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


@pytest.fixture
def live_server() -> Iterator[type[LiveServer]]:
    yield LiveServer


def run(coro: Any, timeout: float = 20.0) -> Any:
    """Run a test coroutine on a fresh loop with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
