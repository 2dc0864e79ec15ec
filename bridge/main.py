"""The bridge's process entry point.

In the image (bridge/Dockerfile) uvicorn serves the factory:

    uvicorn main:build_app --factory --host 0.0.0.0 --port 8080 --proxy-headers ...

For a local run from the repository root (`make venv`: the core library `mirror` and the
development package `mirror_dev` installed in .venv), with the functions in-process against a
moto server (`moto_server -p 5000`, the call table created as template.yaml defines it) and
offline speech. `BRIDGE_MODE=local` takes its in-process transport from `mirror_dev`, which the
image does not ship: there it stops at start-up saying so.

    AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=testing \\
    AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \\
    BRIDGE_MODE=local CALL_TABLE=mirror-local PUBLIC_BASE_URL=http://127.0.0.1:8080 \\
    SIGNATURE_MODE=off DEFAULT_AGENT_URL=ws://127.0.0.1:9000/agent .venv/bin/python bridge/main.py
"""

from __future__ import annotations

import os
from typing import Any

from mirror_bridge.logs import configure_logging
from mirror_bridge.plivo_socket import WS_PROTOCOL
from mirror_bridge.settings import Settings
from mirror_bridge.wiring import build_app as build_supervised_app


def build_app() -> Any:
    """The supervised ASGI app, with settings read from the environment now: a bad or
    incomplete task definition fails the start-up (and the deployment's health checks), with
    every missing variable named, not the first call.

    Uvicorn has configured logging by now (its dictConfig runs before it calls the factory):
    the bridge's own JSON logs on stdout go on top (`mirror_bridge.logs`), at `LOG_LEVEL`
    (default INFO), so its INFO lines are not dropped and every line names its call. The core
    library's `mirror` loggers too, except in `BRIDGE_MODE=local`, where the in-process
    functions' Powertools logger may own the `mirror` logger (POWERTOOLS_SERVICE_NAME)."""
    settings = Settings.from_env()
    app = build_supervised_app(settings)
    configure_logging(os.environ.get("LOG_LEVEL") or "INFO", core=settings.mode == "aws")
    app.state.owns_logging = True  # its shutdown flushes and undoes it (`app.tuned`)
    return app


def main() -> None:
    """Serve on HOST:PORT (default 127.0.0.1:8080) with the image's WebSocket keepalive."""
    import uvicorn

    uvicorn.run(
        build_app,
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
        ws=WS_PROTOCOL,  # uvicorn's own, plus the relay's push path (mirror_bridge.plivo_socket)
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
    )


if __name__ == "__main__":
    main()
