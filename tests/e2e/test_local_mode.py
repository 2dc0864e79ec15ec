"""The bridge run exactly as `bridge/main.py`'s docstring says: `BRIDGE_MODE=local`, the
functions in-process, the settings from the environment, and no Powertools variable at all (no
`POWERTOOLS_METRICS_NAMESPACE`). The call table is moto's (in-process here; the docstring's
moto server serves the same API).

Regression: every in-process ScoreTurn raised after computing its verdict (Powertools could not
flush its metrics without a namespace), so every turn silently failed open. The agent must get
the real verdicts: a Tier 0 intervention and a blocked tool call.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from mirror_dev.local import import_file
from mirror_dev.plivo_peer import PlivoPeer
from mirror_dev.scripted_agent import ScriptedAgent, retracted_pizza_order
from tests.conftest import REPO_ROOT, run
from tests.support.live_server import LiveServer, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def local_env(call_state_table: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The docstring's environment (the moto endpoint aside: moto runs in this process)."""
    port = free_port()
    for name in list(os.environ):
        if name.startswith("POWERTOOLS_") or name in ("MIRROR_CONFIG", "EVENT_BUS_NAME"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_MODE", "local")
    monkeypatch.setenv("CALL_TABLE", call_state_table)
    monkeypatch.setenv("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SIGNATURE_MODE", "off")
    yield port


def test_local_mode_without_a_metrics_namespace_gives_the_agent_real_verdicts(
    local_env: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = local_env

    async def main() -> dict[str, Any]:
        async with ScriptedAgent(retracted_pizza_order) as agent:
            monkeypatch.setenv("DEFAULT_AGENT_URL", agent.url)
            bridge_main = import_file(REPO_ROOT / "bridge" / "main.py", "bridge_main_local")
            app = bridge_main.build_app()
            with LiveServer(app, port, lifespan="on"):  # its shutdown closes the transport
                peer = PlivoPeer(f"ws://127.0.0.1:{port}/plivo/stream", speed=20.0)
                async with peer:
                    await peer.start()
                    await peer.media(5)
                    await asyncio.wait_for(agent.connected.wait(), 10)
                    call = agent.calls[0]
                    await call.wait_event("mirror.tool_decision", timeout=20)
                    await peer.stop()
                    await asyncio.wait_for(call.closed.wait(), 5)
                mirror = [m for m in call.events() if str(m.get("event")).startswith("mirror.")]
                return {"events": mirror, "sessions": list(app.state.supervision.sessions)}

    got = run(main(), timeout=60)
    by_kind = {m["event"]: m for m in got["events"]}
    verdict = by_kind["mirror.verdict"]["verdict"]
    assert verdict["decision"] == "intervene" and verdict["decided_by"] == "tier0"
    assert "retraction" in {r["check"] for r in verdict["reasons"]}
    decision = by_kind["mirror.tool_decision"]["result"]
    assert decision["decision"] == "block"  # Tier 0's block, not a failure mode's hold
    assert all(d["failure"] is None for d in decision["decisions"])
    (session,) = got["sessions"]
    assert session.counts["internal_errors"] == 0
