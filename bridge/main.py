"""The bridge's process entry point.

In the image (bridge/Dockerfile) uvicorn serves the factory:

    uvicorn main:build_app --factory --host 0.0.0.0 --port 8080 --proxy-headers ...

For a local run from the repository root (the core library `mirror` installed in .venv):

    PUBLIC_BASE_URL=http://127.0.0.1:8080 SIGNATURE_MODE=off .venv/bin/python bridge/main.py
"""

from __future__ import annotations

import os
from typing import Any

from mirror_bridge.app import create_app
from mirror_bridge.settings import Settings


def build_app() -> Any:
    """The ASGI app, with settings read from the environment now: a bad task definition fails
    the start-up (and the deployment's health checks), not the first call."""
    return create_app(Settings.from_env())


def main() -> None:
    """Serve on HOST:PORT (default 127.0.0.1:8080) with the image's WebSocket keepalive."""
    import uvicorn

    uvicorn.run(
        build_app,
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
    )


if __name__ == "__main__":
    main()
