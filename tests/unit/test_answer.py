"""POST /plivo/answer and /plivo/stream-status: V3 over the form, the <Stream> XML, recording."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from mirror.models import CallContext
from mirror.state.memory import InMemoryStateStore
from mirror_bridge.app import create_app
from mirror_bridge.settings import Settings
from mirror_bridge.tenants import StaticTenants, TenantConfig
from mirror_dev.plivo_peer import signed_headers
from tests.conftest import AUTH_TOKEN

pytestmark = pytest.mark.unit

PUBLIC = "https://bridge.example.com"
FORM = {
    "CallUUID": "11111111-2222-3333-4444-555555555555",
    "From": "14155550100",
    "To": "+14155550199",
    "Direction": "inbound",
    "CallStatus": "ringing",
}


def _client(
    store: InMemoryStateStore | None = None, default_agent: str | None = None
) -> TestClient:
    settings = Settings(
        auth_token=AUTH_TOKEN, public_base_url=PUBLIC, default_agent_url=default_agent
    )
    tenants = StaticTenants(
        {"14155550199": TenantConfig(tenant_id="acme", agent_url="ws://agent.test/ws")}
    )
    return TestClient(create_app(settings, tenants=tenants, store=store, clock=lambda: 1000.0))


def _post(
    client: TestClient,
    path: str,
    form: dict[str, str],
    signed_url: str,
    query: str = "",
    **sign_kw: str,
) -> object:
    headers = signed_headers(AUTH_TOKEN, signed_url, "POST", form, **sign_kw)
    headers["content-type"] = "application/x-www-form-urlencoded"
    return client.post(
        path + (f"?{query}" if query else ""), content=urlencode(form), headers=headers
    )


def test_answer_returns_the_bidirectional_stream_xml() -> None:
    r = _post(_client(), "/plivo/answer", FORM, f"{PUBLIC}/plivo/answer")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(r.text)
    assert root.tag == "Response" and len(root) == 1
    stream = root[0]
    assert stream.tag == "Stream"
    assert stream.text == "wss://bridge.example.com/plivo/stream"  # no surrounding whitespace
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        "audioTrack": "inbound",
        "streamTimeout": "3660",  # Plivo's backstop: a minute after the bridge's MAX_CALL_S
        "statusCallbackUrl": "https://bridge.example.com/plivo/stream-status?tenant=acme",
        "statusCallbackMethod": "POST",
        "extraHeaders": "mirrorNumber=14155550199",
    }


def test_answer_signature_tampered_wrong_nonce_missing_and_http_variant() -> None:
    client = _client()
    url = f"{PUBLIC}/plivo/answer"
    headers = signed_headers(AUTH_TOKEN, url, "POST", FORM, nonce="123")
    headers["content-type"] = "application/x-www-form-urlencoded"
    tampered = urlencode({**FORM, "To": "+14155550100"})
    assert client.post("/plivo/answer", content=tampered, headers=headers).status_code == 403
    wrong_nonce = {**headers, "X-Plivo-Signature-V3-Nonce": "124"}
    assert (
        client.post("/plivo/answer", content=urlencode(FORM), headers=wrong_nonce).status_code
        == 403
    )
    assert client.post("/plivo/answer", content=urlencode(FORM)).status_code == 403
    assert client.post("/plivo/answer", content=urlencode(FORM), headers=headers).status_code == 200
    # the load balancer's internal scheme: Plivo signed http://...
    r = _post(client, "/plivo/answer", FORM, "http://bridge.example.com/plivo/answer")
    assert r.status_code == 200
    # a query on the answer URL is part of what is signed
    assert _post(client, "/plivo/answer", FORM, f"{url}?x=1", query="x=1").status_code == 200
    assert _post(client, "/plivo/answer", FORM, f"{url}?x=1", query="x=2").status_code == 403


def test_answer_for_an_unknown_number_hangs_up_unless_a_default_agent_exists() -> None:
    form = {**FORM, "To": "+19999999999"}
    r = _post(_client(), "/plivo/answer", form, f"{PUBLIC}/plivo/answer")
    assert r.status_code == 200 and ET.fromstring(r.text)[0].tag == "Hangup"
    r = _post(
        _client(default_agent="ws://default/ws"), "/plivo/answer", form, f"{PUBLIC}/plivo/answer"
    )
    stream = ET.fromstring(r.text)[0]
    assert stream.tag == "Stream" and stream.attrib["statusCallbackUrl"].endswith("tenant=default")


def test_outbound_calls_use_the_from_number() -> None:
    form = {**FORM, "Direction": "outbound", "From": "+14155550199", "To": "+19999999999"}
    r = _post(_client(), "/plivo/answer", form, f"{PUBLIC}/plivo/answer")
    assert ET.fromstring(r.text)[0].attrib["extraHeaders"] == "mirrorNumber=14155550199"


def test_stream_status_is_recorded_in_the_call_meta() -> None:
    store = InMemoryStateStore()
    client = _client(store)
    url = f"{PUBLIC}/plivo/stream-status?tenant=acme"
    for event in ("StartStream", "StopStream"):
        form = {"CallUUID": FORM["CallUUID"], "Event": event, "StreamID": "s-1"}
        r = _post(client, "/plivo/stream-status", form, url, query="tenant=acme")
        assert r.status_code == 200
    meta = store.get_call_meta(CallContext(call_id=FORM["CallUUID"], tenant_id="acme"), 1000.0)
    assert meta is not None
    assert meta["stream_event"] == "StopStream" and meta["stream_id"] == "s-1"
    assert meta["stream_StartStream_at"] == 1000 and meta["stream_StopStream_at"] == 1000
    bad = {"CallUUID": "x", "Event": "StartStream"}
    headers = signed_headers(AUTH_TOKEN + "x", url, "POST", bad)
    assert (
        client.post(
            "/plivo/stream-status?tenant=acme", content=urlencode(bad), headers=headers
        ).status_code
        == 403
    )
    assert store.get_call_meta(CallContext(call_id="x", tenant_id="acme"), 1000.0) is None


def test_health() -> None:
    client = _client()
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/healthz").status_code == 200
