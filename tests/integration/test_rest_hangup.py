"""The call-length guard hangs the call up through Plivo's REST API (issue 13, item 12):
Hangup Call, `DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`, faked at the HTTP layer
(`responses`: the real plivo SDK and requests, no network)."""

from __future__ import annotations

import asyncio
import re

import plivo
import pytest
import responses

from mirror_bridge.tts import PlivoRestSpeaker
from mirror_dev.scripted_agent import ScriptedAgent, idle
from tests.conftest import AUTH_TOKEN, run
from tests.fakes.session import CALL_ID, make_session, start_event
from tests.fakes.transport import FakeTransport
from tests.support.harness import SupervisedBridge

pytestmark = pytest.mark.integration

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
API = f"https://api.plivo.com/v1/Account/{AUTH_ID}/Call/"


def _speaker() -> PlivoRestSpeaker:
    return PlivoRestSpeaker(client=plivo.RestClient(AUTH_ID, AUTH_TOKEN))


def _deletes(mock: responses.RequestsMock) -> list[str]:
    return [c.request.url or "" for c in mock.calls if c.request.method == "DELETE"]


@pytest.mark.parametrize(("reason", "hung_up"), [("max_duration", True), ("stop", False)])
def test_the_session_hangs_up_through_rest_at_the_call_limit_only(
    reason: str, hung_up: bool
) -> None:
    async def scenario() -> dict[str, int]:
        session, _, _ = make_session(FakeTransport(), extra={"rest": _speaker()})
        await session.on_start(start_event())
        await session.close(reason)
        return dict(session.counts)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.DELETE, f"{API}{CALL_ID}/", status=204)
        counts = run(scenario())
        assert _deletes(mock) == ([f"{API}{CALL_ID}/"] if hung_up else [])
    assert counts.get("hangups", 0) == (1 if hung_up else 0)


def test_a_call_already_gone_counts_as_hung_up_and_a_rest_failure_is_counted() -> None:
    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        gone, _, _ = make_session(FakeTransport(), extra={"rest": _speaker()})
        await gone.close("max_duration")
        failing, _, _ = make_session(FakeTransport(), extra={"rest": _speaker()})
        await failing.close("max_duration")
        return dict(gone.counts), dict(failing.counts)

    with responses.RequestsMock() as mock:
        mock.add(responses.DELETE, f"{API}{CALL_ID}/", status=404, json={"error": "not found"})
        mock.add(responses.DELETE, f"{API}{CALL_ID}/", status=500, json={"error": "boom"})
        gone, failing = run(scenario())
    assert gone.get("hangups") == 1
    assert failing.get("hangup_failures") == 1 and not failing.get("hangups")


def test_the_call_limit_on_loopback_hangs_the_call_up_through_rest() -> None:
    async def main() -> str:
        async with ScriptedAgent(idle) as agent:
            bridge = SupervisedBridge(agent.url, transport=FakeTransport(), max_call_s=0.3)
            bridge.supervision.rest = _speaker()
            with bridge.server:
                async with bridge.peer(speed=1.0) as peer:
                    await peer.start()
                    await bridge.wait_ended(1, timeout=5)
                    await asyncio.wait_for(peer.closed.wait(), 5)
                    call_id = peer.call_id
                assert bridge.relays[0].end_reason == "max_duration"
                assert bridge.call_ended()[0]["reason"] == "max_duration"
        return call_id

    with responses.RequestsMock() as mock:
        mock.add(responses.DELETE, re.compile(re.escape(API) + r"[^/]+/"), status=204)
        call_id = run(main())
        assert _deletes(mock) == [f"{API}{call_id}/"]  # this call, once
