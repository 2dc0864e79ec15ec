"""One-way streams, chosen per tenant in the answer XML and detected from what Plivo sends
(issue 13, item 12): the answer asks for `bidirectional="false"` and marks it in
`extraHeaders`, which Plivo echoes in `start`; the session then speaks through REST Speak and
Stop Speak, never with playAudio (which Plivo ignores on a one-way stream)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mirror_bridge.app import create_app, stream_xml
from mirror_bridge.plivo_protocol import StartEvent, parse_event
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import StaticTenants, TenantConfig
from tests.conftest import AUTH_TOKEN, run
from tests.fakes.session import make_session, start_event, turn, until
from tests.fakes.transport import CORRECTION, INTERVENE, FakeTransport
from tests.unit.test_answer import FORM, PUBLIC, _post

pytestmark = pytest.mark.unit

SETTINGS = Settings(auth_token=AUTH_TOKEN, public_base_url=PUBLIC)


def _stream(xml: str) -> dict[str, str]:
    return dict(ET.fromstring(xml)[0].attrib)


def test_a_one_way_tenant_gets_a_one_way_stream_marked_in_its_extra_headers() -> None:
    attrs = _stream(stream_xml(SETTINGS, "14155550199", "acme", bidirectional=False))
    assert attrs["bidirectional"] == "false"
    assert attrs["extraHeaders"] == "mirrorNumber=14155550199,mirrorStream=oneway"


def test_a_tenant_by_default_gets_a_two_way_stream_and_no_marker() -> None:
    attrs = _stream(stream_xml(SETTINGS, "14155550199", "acme"))
    assert attrs["bidirectional"] == "true"
    assert attrs["extraHeaders"] == "mirrorNumber=14155550199"


@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_answer_route_asks_for_the_tenants_stream(bidirectional: bool) -> None:
    tenant = TenantConfig(
        tenant_id="acme", agent_url="ws://agent.test/ws", bidirectional=bidirectional
    )
    app = create_app(SETTINGS, tenants=StaticTenants({"14155550199": tenant}))
    r: Any = _post(TestClient(app), "/plivo/answer", FORM, f"{PUBLIC}/plivo/answer")
    assert r.status_code == 200
    assert _stream(r.text)["bidirectional"] == ("true" if bidirectional else "false")


def _start(extra_headers: str) -> StartEvent:
    raw = {**start_event(), "extra_headers": extra_headers}
    event = parse_event(raw)
    assert isinstance(event, StartEvent)
    return event


def test_the_start_plivo_echoes_says_which_stream_it_is() -> None:
    assert not _start("mirrorNumber=14155550199,mirrorStream=oneway").bidirectional
    assert not _start("mirrorNumber=1;mirrorStream=ONEWAY").bidirectional
    assert _start("mirrorNumber=14155550199").bidirectional  # the real start: no marker
    assert _start("").bidirectional


class FakeRest:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def speak(self, call_uuid: str, text: str) -> None:
        self.calls.append(("speak", call_uuid, text))

    async def stop(self, call_uuid: str) -> None:
        self.calls.append(("stop", call_uuid))

    async def hangup(self, call_uuid: str) -> None:
        self.calls.append(("hangup", call_uuid))


@pytest.mark.parametrize("one_way", [True, False])
def test_an_echoed_one_way_start_makes_interventions_speak_through_rest(one_way: bool) -> None:
    async def scenario() -> None:
        rest = FakeRest()
        transport = FakeTransport(
            {"score_turn": [(0.0, INTERVENE)], "generate_correction": [(0.0, CORRECTION)]}
        )
        session, wire, _ = make_session(
            transport, extra={"rest": rest}, rest_speech_s=lambda text: 0.01,
            checkpoint_margin_s=0.05,
        )  # fmt: skip
        headers = "mirrorNumber=14155550199" + (",mirrorStream=oneway" if one_way else "")
        await session.on_start({**start_event(), "extra_headers": headers})
        await session.on_mirror_message(turn("t1"))
        await until(lambda: any(m["event"] == "mirror.override" for m in wire.agent), 3)
        if one_way:
            assert wire.plivo == []  # nothing Plivo would ignore on a one-way stream
            assert [c[0] for c in rest.calls] == ["stop", "speak", "speak"]
            assert rest.calls[2][2] == CORRECTION["correction_text"]
        else:  # the allow twin: a two-way stream plays its audio, REST is not used
            assert "clearAudio" in wire.events() and "playAudio" in wire.events()
            assert rest.calls == []
        await session.close("stop")

    run(scenario())
