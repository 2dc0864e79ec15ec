"""The per-call stream token (issue 13, item 6): the `<Stream>` URL the answer builds carries a
token bound to the call and expiring; the upgrade is refused without a valid, unexpired, unused
one, and a stream opened with it must be that call's (`start` names its call id and number).

On loopback: uvicorn serving the app, the scripted Plivo peer, the scripted agent. A captured
header pair and URL cannot open a stream for another call, after expiry, or twice; the normal
flow (answer, then upgrade with its URL) still works.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mirror_bridge.app import create_app
from mirror_bridge.settings import Settings, SettingsError
from mirror_bridge.signature import (
    ReplayCache,
    StreamGrant,
    mint_stream_token,
    read_stream_token,
)
from mirror_bridge.tenants import StaticTenants, TenantConfig
from mirror_dev.plivo_peer import PlivoPeer, signed_headers
from mirror_dev.scripted_agent import ScriptedAgent, idle
from tests.conftest import AUTH_TOKEN, run
from tests.support.live_server import LiveServer, free_port
from tests.support.relay import NUMBER, RecordingSession

pytestmark = pytest.mark.integration

CALL = "11111111-2222-3333-4444-555555555555"
OTHER_CALL = "99999999-2222-3333-4444-555555555555"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TokenBridge:
    """The app with stream tokens enforced, on a free loopback port, one tenant number."""

    def __init__(self, agent_url: str, mode: str = "enforce") -> None:
        self.port = free_port()
        self.clock = Clock()
        self.sessions: list[RecordingSession] = []
        self.settings = Settings(
            auth_token=AUTH_TOKEN, public_base_url=f"http://127.0.0.1:{self.port}",
            stream_tokens=mode, close_drain_s=0.5,  # type: ignore[arg-type]
        )  # fmt: skip
        tenants = StaticTenants({NUMBER: TenantConfig(tenant_id="acme", agent_url=agent_url)})
        self.app = create_app(
            self.settings, tenants=tenants, clock=self.clock,
            session_factory=lambda ctx, io: RecordingSession(ctx, io, self.sessions),
        )  # fmt: skip
        self.server = LiveServer(self.app, self.port)

    def answer(self, call_id: str = CALL) -> str:
        """POST the answer URL as Plivo does; the `<Stream>` URL it returns."""
        form = {"CallUUID": call_id, "From": "14155550100", "To": NUMBER, "Direction": "inbound"}
        url = f"{self.settings.public_base_url}/plivo/answer"
        headers = signed_headers(AUTH_TOKEN, url, "POST", form)
        headers["content-type"] = "application/x-www-form-urlencoded"
        r = TestClient(self.app).post("/plivo/answer", content=urlencode(form), headers=headers)
        assert r.status_code == 200
        stream = ET.fromstring(r.text).find("Stream")
        assert stream is not None and stream.text
        return stream.text

    async def wait_closed(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not any(s.closes for s in self.sessions):
            assert loop.time() < end, "session was never closed"
            await asyncio.sleep(0.01)

    def peer(self, url: str, call_id: str = CALL, **kw: Any) -> PlivoPeer:
        kw.setdefault("extra_headers", f"mirrorNumber={NUMBER}")
        return PlivoPeer(url, auth_token=AUTH_TOKEN, call_id=call_id, speed=20.0, **kw)


def captured(peer: PlivoPeer) -> dict[str, str]:
    """The header pair as sent once: a replay reuses exactly these."""
    headers = peer.headers()
    peer.headers = lambda: headers  # type: ignore[method-assign]
    return headers


# --- the token --------------------------------------------------------------------------------


def test_a_token_carries_its_call_and_is_refused_forged_expired_or_malformed() -> None:
    token = mint_stream_token("k", CALL, NUMBER, "acme", 1000.0, 300)
    grant = read_stream_token("k", token, 1000.0)
    assert isinstance(grant, StreamGrant)
    assert (grant.call_id, grant.number, grant.tenant_id) == (CALL, NUMBER, "acme")
    assert 1300 <= grant.expires_at <= 1302
    assert read_stream_token("k", token, grant.expires_at) == "stream token expired"
    assert read_stream_token("other-key", token, 1000.0) == "stream token MAC does not match"
    version, payload, mac = token.split(".")
    forged = mint_stream_token("k", OTHER_CALL, NUMBER, "acme", 1000.0, 300).split(".")[1]
    assert read_stream_token("k", f"{version}.{forged}.{mac}", 1000.0) == (
        "stream token MAC does not match"
    )  # another call's payload under this call's MAC
    for bad in (None, "", "x", "v1.a.b.c", "v1.!!.??", "v2." + token[3:], "v1." * 1000):
        assert isinstance(read_stream_token("k", bad, 1000.0), str)
    # one nonce per token: two tokens for the same call are distinct
    assert read_stream_token("k", mint_stream_token("k", CALL, NUMBER, "acme", 1000, 300), 1000)
    assert mint_stream_token("k", CALL, NUMBER, "acme", 1000, 300) != token


def test_the_replay_cache_lets_a_token_open_one_stream() -> None:
    cache = ReplayCache(max_entries=2)
    grant = read_stream_token("k", mint_stream_token("k", CALL, NUMBER, "acme", 0, 60), 0)
    assert isinstance(grant, StreamGrant)
    assert cache.claim(grant, 1.0) and not cache.claim(grant, 2.0)
    other = read_stream_token("k", mint_stream_token("k", CALL, NUMBER, "acme", 0, 60), 0)
    third = read_stream_token("k", mint_stream_token("k", CALL, NUMBER, "acme", 100, 60), 100)
    assert isinstance(other, StreamGrant) and isinstance(third, StreamGrant)
    assert cache.claim(other, 2.0)
    assert not cache.claim(third, 30.0)  # full of live nonces: refused, none forgotten
    assert cache.claim(third, 100.0) and len(cache) == 1  # the expired ones were dropped


def test_a_grant_matches_only_its_calls_start() -> None:
    grant = StreamGrant(CALL, NUMBER, "acme", 10.0, "n")
    assert grant.mismatch(CALL, f"+{NUMBER}") is None  # numbers compare normalized
    assert grant.mismatch(OTHER_CALL, NUMBER) is not None
    assert grant.mismatch(CALL, "14155550000") is not None
    assert grant.mismatch(CALL, None) is not None


def test_settings_default_the_token_mode_to_the_signature_mode() -> None:
    env = {"PLIVO_AUTH_TOKEN": "t", "PUBLIC_BASE_URL": "https://b.example.com"}
    assert Settings.from_env(env).stream_tokens == "enforce"
    assert Settings.from_env({**env, "SIGNATURE_MODE": "off"}).stream_tokens == "off"
    assert Settings.from_env({**env, "STREAM_TOKEN_MODE": "log"}).stream_tokens == "log"
    s = Settings.from_env({**env, "STREAM_TOKEN_SECRET": "s", "STREAM_TOKEN_TTL_S": "60"})
    assert (s.stream_token_key, s.stream_token_ttl_s) == ("s", 60.0)
    assert Settings.from_env(env).stream_token_key == "t"
    with pytest.raises(SettingsError, match="STREAM_TOKEN_TTL_S"):
        Settings.from_env({**env, "STREAM_TOKEN_TTL_S": "0"})
    with pytest.raises(SettingsError, match="STREAM_TOKEN_MODE"):
        Settings.from_env({**env, "STREAM_TOKEN_MODE": "loud"})


# --- the answer and the upgrade on loopback ---------------------------------------------------


def test_the_answer_binds_its_stream_url_to_the_call() -> None:
    bridge = TokenBridge("ws://agent.invalid/ws")
    url = bridge.answer()
    u = urlsplit(url)
    assert (u.scheme, u.path) == ("ws", "/plivo/stream")
    (token,) = parse_qs(u.query)["token"]
    grant = read_stream_token(AUTH_TOKEN, token, bridge.clock.now)
    assert isinstance(grant, StreamGrant)
    assert (grant.call_id, grant.number, grant.tenant_id) == (CALL, NUMBER, "acme")
    assert grant.expires_at - bridge.clock.now == pytest.approx(300, abs=2)
    assert bridge.answer() != url  # every answer mints its own token


def test_the_normal_flow_opens_the_stream_and_relays() -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = TokenBridge(agent.url)
            with bridge.server:
                async with bridge.peer(bridge.answer()) as peer:
                    await peer.start()
                    await peer.media(3)
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await agent.calls[0].wait_event("media", count=3)
                    await peer.stop()
                await bridge.wait_closed()
                assert bridge.sessions[0].closes == ["stop"]
                assert agent.calls[0].call_id == CALL

    run(main())


def test_a_captured_header_pair_and_url_open_one_stream_only() -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = TokenBridge(agent.url)
            with bridge.server:
                url = bridge.answer()
                first = bridge.peer(url)
                headers = captured(first)
                async with first:
                    await first.start()
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    with pytest.raises(InvalidStatus) as info:  # while the call runs
                        await connect(url, additional_headers=headers, open_timeout=5)
                    assert info.value.response.status_code == 403
                    await first.stop()
                with pytest.raises(InvalidStatus) as info:  # and after it ended
                    await connect(url, additional_headers=headers, open_timeout=5)
                assert info.value.response.status_code == 403
                assert len(agent.calls) == 1

    run(main())


def test_a_token_cannot_open_another_calls_stream() -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = TokenBridge(agent.url)
            with bridge.server:
                # the captured URL used first, with a start naming another call: refused
                async with bridge.peer(bridge.answer(), call_id=OTHER_CALL) as peer:
                    await peer.start()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                assert peer.close_code == 1008
                # or another number (another tenant's)
                async with bridge.peer(
                    bridge.answer(), extra_headers="mirrorNumber=14155550000"
                ) as peer:
                    await peer.start()
                    await asyncio.wait_for(peer.closed.wait(), 5)
                assert peer.close_code == 1008
                assert agent.calls == [] and bridge.sessions == []
                reasons = [r.end_reason for r in bridge.app.state.relays]
                assert reasons == ["stream_token_mismatch"] * 2
                # a token rewritten to name another call fails its MAC (and the signature)
                url = bridge.answer()
                token = parse_qs(urlsplit(url).query)["token"][0]
                other = parse_qs(urlsplit(bridge.answer(OTHER_CALL)).query)["token"][0]
                spliced = token.rsplit(".", 2)[0][:3] + other.split(".")[1] + "." + token[-43:]
                forged = url.replace(token, spliced)
                with pytest.raises(InvalidStatus) as info:
                    await bridge.peer(forged, call_id=OTHER_CALL).connect()
                assert info.value.response.status_code == 403

    run(main())


def test_an_expired_or_missing_token_is_refused() -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = TokenBridge(agent.url)
            with bridge.server:
                url = bridge.answer()
                bridge.clock.now += bridge.settings.stream_token_ttl_s + 2
                for stale in (url, url.split("?")[0]):  # expired; the old constant URL
                    with pytest.raises(InvalidStatus) as info:
                        await bridge.peer(stale).connect()
                    assert info.value.response.status_code == 403
                assert agent.calls == [] and bridge.app.state.relays == []
                # the allow twin: a fresh answer's URL at the same time works
                async with bridge.peer(bridge.answer()) as peer:
                    await peer.start()
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await peer.stop()

    run(main())


def test_log_mode_only_logs_a_missing_token(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with ScriptedAgent(idle) as agent:
            bridge = TokenBridge(agent.url, mode="log")
            with bridge.server:
                plain = bridge.settings.stream_url
                async with bridge.peer(plain, call_id=OTHER_CALL) as peer:
                    await peer.start()
                    await asyncio.wait_for(agent.connected.wait(), 5)
                    await peer.stop()

    run(main())
    assert "stream upgrade refused: missing stream token" in caplog.text
