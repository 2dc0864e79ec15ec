"""Plivo codec, V3 signatures (Plivo's public vectors), the agent's Mirror protocol, tenants."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mirror_bridge import plivo_protocol as pp
from mirror_bridge.agent_protocol import (
    MirrorProtocolError,
    MirrorToolGate,
    MirrorTurn,
    parse_mirror_message,
)
from mirror_bridge.signature import check_post, check_stream_upgrade, check_v3
from mirror_bridge.tenants import (
    DynamoDBTenants,
    TenantConfig,
    normalize_number,
    tenant_item,
)

pytestmark = pytest.mark.unit

TOKEN = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4"
NONCE = "31627761595286130198"
UUID = "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"
PARAMS = {
    "Direction": "outbound",
    "From": "19792014278",
    "ALegUUID": UUID,
    "CallStatus": "in-progress",
    "BillRate": "0.002",
    "ParentAuthID": "MANWVLYTK4ZWU1YTY4QA",
    "To": "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
    "ALegRequestUUID": UUID,
    "CallUUID": UUID,
    "RequestUUID": UUID,
    "SIP-H-To": "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
    "SessionStart": "2020-04-08 11:34:33.238707",
    "Event": "StartApp",
}
BASE = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml"


def _h(sig: str, nonce: str = NONCE) -> dict[str, str]:
    return {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}


@pytest.mark.parametrize(
    ("method", "url", "sig"),
    [
        ("POST", BASE + "/?a=b&c=d", "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c="),
        ("GET", BASE + "/?a=b&c=d", "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ="),
        ("POST", BASE, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0="),
        ("GET", BASE, "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc="),
    ],
)
def test_plivo_public_v3_vectors_and_their_negatives(method: str, url: str, sig: str) -> None:
    cands = [("given", url)]
    assert check_v3(_h(sig), method, cands, TOKEN, params=PARAMS).valid
    assert check_v3(_h("AAAA," + sig), method, cands, TOKEN, params=PARAMS).valid
    assert not check_v3(_h(sig), method, cands, TOKEN + "x", params=PARAMS).valid
    assert not check_v3(_h(sig, NONCE + "1"), method, cands, TOKEN, params=PARAMS).valid
    tampered = {**PARAMS, "From": "19792014279"}
    assert not check_v3(_h(sig), method, cands, TOKEN, params=tampered).valid


def test_post_check_uses_the_configured_url_and_the_request_query() -> None:
    sig = "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c="
    ok = check_post(_h(sig), BASE + "/", "a=b&c=d", PARAMS, TOKEN)
    assert ok.valid and ok.matched == "v3 https"
    assert not check_post(_h(sig), BASE + "/", "a=b&c=e", PARAMS, TOKEN).valid
    missing = check_post({"X-Plivo-Signature-V3": sig}, BASE + "/", "a=b&c=d", PARAMS, TOKEN)
    assert not missing.valid and "Nonce" in missing.reason


@pytest.mark.parametrize(
    ("sig", "matched"),
    [
        ("FOCdb0m6b4PxKpobzJLglLslRPKwTMX8eeJSGops4Ak=", "v3 https"),
        ("kW1+OzabVpK+vCaNJFvcwh6PCLouK9SEz6WxNNlDisI=", "v3 http"),
        ("CTu4rLb6oBiWTCRtkcZU5bX2N4zhF8zuANssU4ePRsc=", "v3 http+/websocket"),
    ],
)
def test_stream_upgrade_url_variants_log_which_matched(sig: str, matched: str) -> None:
    headers = _h(sig, "05429567804466091622")
    check = check_stream_upgrade(
        headers, "wss://bridge.example.com/plivo/stream", "MY_TEST_AUTH_TOKEN"
    )
    assert check.valid and check.matched == matched
    other = check_stream_upgrade(
        headers, "wss://other.example.com/plivo/stream", "MY_TEST_AUTH_TOKEN"
    )
    assert not other.valid


def test_stream_upgrade_query_variant_and_main_account_header() -> None:
    url = "wss://bridge.example.com/plivo/stream?sid=abc&x=1"
    sig = "XcqJRofJtb3Ym0Uy9UCQLSF/QgPz/9Unl7O9waJLXto="
    headers = {
        "X-Plivo-Signature-Ma-V3": sig,
        "X-Plivo-Signature-V3": "nope",
        "X-Plivo-Signature-V3-Nonce": "05429567804466091622",
    }
    assert not check_stream_upgrade(headers, url, "sub-token").valid
    check = check_stream_upgrade(headers, url, "sub-token", main_auth_token="MY_TEST_AUTH_TOKEN")
    assert check.valid and check.matched == "ma-v3 https"


# --- Plivo events --------------------------------------------------------------------------


def test_start_parses_nested_stream_id_and_every_extra_headers_form() -> None:
    base = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "c1",
            "streamId": "s1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
    }
    for extra, want in [
        ("", {}),
        (None, {}),
        ("a=1;b=2", {"a": "1", "b": "2"}),
        ("a=1,b=2", {"a": "1", "b": "2"}),
        ('{"a":"1"}', {"a": "1"}),
        ("{}", {}),
    ]:
        raw = dict(base) if extra is None else {**base, "extra_headers": extra}
        ev = pp.parse_event(raw)
        assert isinstance(ev, pp.StartEvent)
        assert (ev.call_id, ev.stream_id, ev.extra_headers) == ("c1", "s1", want)
        assert ev.media_format == pp.MediaFormat("audio/x-mulaw", 8000)
    with pytest.raises(pp.PlivoProtocolError):
        pp.parse_event({"event": "start", "start": {"callId": "c1"}})


def test_inbound_events_are_lenient_where_the_sdk_was_strict() -> None:
    media = pp.parse_frame(
        json.dumps(
            {
                "event": "media",
                "streamId": "s",
                "media": {
                    "timestamp": 1705312200000,
                    "chunk": 3,
                    "payload": base64.b64encode(b"\xff" * 160).decode(),
                },
            }
        )
    )
    assert isinstance(media, pp.MediaEvent) and media.timestamp == "1705312200000"
    assert media.audio() == b"\xff" * 160 and media.sequence_number is None
    played = pp.parse_event({"event": "playedStream", "name": "n1"})  # no seq, no streamId
    assert isinstance(played, pp.PlayedStreamEvent) and played.name == "n1"
    assert isinstance(pp.parse_event({"event": "played", "name": "n1"}), pp.PlayedStreamEvent)
    cleared = pp.parse_event({"sequenceNumber": 0, "event": "clearedAudio", "streamId": "s"})
    assert isinstance(cleared, pp.ClearedAudioEvent) and cleared.sequence_number == 0
    stop1 = pp.parse_event({"event": "stop", "streamId": "s", "reason": "hangup"})
    stop2 = pp.parse_event({"event": "stop", "stop": {"callId": "c", "streamId": "s"}})
    assert isinstance(stop1, pp.StopEvent) and stop1.reason == "hangup"
    assert isinstance(stop2, pp.StopEvent) and (stop2.stream_id, stop2.call_id) == ("s", "c")
    dtmf = pp.parse_event({"event": "dtmf", "dtmf": {"digit": "5"}})
    assert isinstance(dtmf, pp.DtmfEvent) and dtmf.digit == "5"
    unknown = pp.parse_event({"event": "playFailed", "reason": "x"})
    assert isinstance(unknown, pp.UnknownEvent) and unknown.event == "playFailed"


@pytest.mark.parametrize(
    "frame",
    [
        "nope",
        "[]",
        "{}",
        '{"event": 5}',
        '{"event": "media", "media": {}}',
        '{"event": "media", "media": "x"}',
        '{"event": "dtmf", "dtmf": {}}',
        '{"event": "playedStream", "name": ""}',
    ],
)
def test_malformed_frames_raise_the_protocol_error_only(frame: str) -> None:
    with pytest.raises(pp.PlivoProtocolError):
        pp.parse_frame(frame)


def test_outbound_messages_exactly_as_documented() -> None:
    assert pp.play_audio(b"\xff" * 3) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "////"},
    }
    assert pp.checkpoint("sid", "mirror-1-buffer") == {
        "event": "checkpoint",
        "streamId": "sid",
        "name": "mirror-1-buffer",
    }
    assert pp.clear_audio("sid") == {"event": "clearAudio", "streamId": "sid"}
    with pytest.raises(ValueError):
        pp.play_audio(b"", "audio/x-mulaw", 16000)
    assert pp.check_outbound(pp.play_audio(b"\x00" * 160)) == "playAudio"
    with pytest.raises(pp.PlivoProtocolError):
        pp.check_outbound({"event": "media"})
    assert pp.payload_seconds(base64.b64encode(b"\xff" * 1600).decode(), pp.MediaFormat()) == 0.2


# --- Mirror messages -----------------------------------------------------------------------


def test_mirror_messages_parse_and_errors_carry_the_reference() -> None:
    turn = parse_mirror_message(
        {
            "event": "mirror.turn",
            "turn_id": "t1",
            "customer_text": "hi",
            "agent_text": "hello",
            "tool_calls": [{"id": "c1", "name": "place_order", "args": {"n": 1}}],
        }
    )
    assert isinstance(turn, MirrorTurn) and turn.tool_calls[0].name == "place_order"
    gate = parse_mirror_message(
        {
            "event": "mirror.tool_gate",
            "request_id": "g1",
            "tool_calls": [{"id": "c1", "name": "place_order"}],
        }
    )
    assert isinstance(gate, MirrorToolGate)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"event": "mirror.nope", "turn_id": "t9"}, "unknown_event"),
        ({"event": "mirror.tool_gate", "request_id": "g2", "tool_calls": []}, "invalid_message"),
        ({"event": "mirror.turn", "turn_id": "t3", "extra": 1}, "invalid_message"),
    ]
    for message, code in cases:
        with pytest.raises(MirrorProtocolError) as info:
            parse_mirror_message(message)
        wire = info.value.error.to_wire()
        assert wire["event"] == "mirror.error" and wire["code"] == code
        # an unknown event's name is the agent's input: never sent back (issue 13 item 9)
        assert wire["ref_event"] == (None if code == "unknown_event" else message["event"])
        assert wire["ref_id"] == message.get("turn_id", message.get("request_id"))


# --- tenants -------------------------------------------------------------------------------


def test_numbers_normalize() -> None:
    assert normalize_number("+1 (415) 555-0199") == "14155550199"
    assert normalize_number("sip:14155550199@phone.plivo.com") == "14155550199"


class _FakeDynamo:
    """get_item only; counts reads to prove the cache."""

    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items
        self.reads = 0

    def get_item(self, TableName: str, Key: dict[str, Any], **_: Any) -> dict[str, Any]:  # noqa: N803
        self.reads += 1
        item = self.items.get(Key["pk"]["S"])
        return {"Item": item} if item else {}


def test_dynamodb_tenants_reads_the_item_shape_and_caches() -> None:
    import asyncio

    config = TenantConfig(
        tenant_id="acme",
        agent_url="wss://agent.acme.test/ws",
        policies=['FORBID "free delivery"'],
        voice="Matthew",
    )
    item = tenant_item("+1 415 555 0199", config, 1_700_000_000)
    assert item["pk"] == {"S": "@tenant#14155550199"} and item["sk"] == {"S": "CONFIG"}
    broken = {"pk": {"S": "@tenant#1"}, "sk": {"S": "CONFIG"}, "data": {"S": "{}"}}
    client = _FakeDynamo({item["pk"]["S"]: item, "@tenant#1": broken})
    now = [0.0]
    tenants = DynamoDBTenants("t", client=client, ttl_s=30, clock=lambda: now[0])

    async def main() -> None:
        assert await tenants.get("14155550199") == config
        assert await tenants.get("+14155550199") == config
        assert client.reads == 1
        now[0] = 31.0
        assert await tenants.get("14155550199") == config
        assert client.reads == 2
        assert await tenants.get("1") is None  # unusable item: logged, treated as absent
        assert await tenants.get("2") is None

    asyncio.run(main())


@pytest.mark.parametrize(
    ("given", "bidirectional"),
    [({}, True), ({"bidirectional": False}, False), ({"bidirectional": "false"}, False)],
)
def test_start_says_whether_the_stream_is_bidirectional(
    given: dict[str, object], bidirectional: bool
) -> None:
    start = {"callId": "c", "streamId": "s", **given}
    event = pp.parse_event({"event": "start", "start": start})
    assert isinstance(event, pp.StartEvent) and event.bidirectional is bidirectional
