"""`mirror.events`: the one CallEnded model and publisher, used by the bridge and the Api.

Both senders put their event on a moto bus whose rule is PostCallReport's own (template.yaml);
what arrives is read back with the report's parser."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mirror.calls import EventBridgeCallEnded
from mirror.events import (
    CALL_ENDED,
    EventBridgePublisher,
    EventPublishError,
    call_ended_detail,
    parse_call_ended,
)
from mirror.models import CallContext
from mirror.reports.models import parse_call_ended as report_parser
from mirror_bridge.call_end import EventBridgeSink  # tests/conftest.py puts bridge/ on sys.path
from tests.support.bus import call_ended_bus, delivered

pytestmark = pytest.mark.integration


@pytest.fixture
def bus(dynamodb_client: Any) -> dict[str, Any]:
    """A bus with PostCallReport's CallEnded rule, delivering to a queue (inside moto)."""
    return call_ended_bus()


def test_bridge_and_api_send_one_model_from_two_sources(bus: dict[str, Any]) -> None:
    sink = EventBridgeSink(bus["events"], bus_name="mirror-events")
    bridge_detail = call_ended_detail("acme", "CA-bridge", 1_700_000_000.5, "hangup", {"turns": 3})
    asyncio.run(sink.put_event(CALL_ENDED, bridge_detail))
    api = EventBridgeCallEnded("mirror-events", client=bus["events"])
    api(CallContext(call_id="CA-api", tenant_id="acme"), {"ended_at": 1_700_000_100.0})

    bodies = {b["source"]: b for b in delivered(bus)}
    assert set(bodies) == {"mirror.bridge", "mirror.api"}
    assert bodies["mirror.bridge"]["detail"] == bridge_detail  # counts keep their own numbers
    for source, body in bodies.items():
        detail = report_parser(body)  # what PostCallReport reads
        assert detail == parse_call_ended(body)
        assert (detail.tenant_id, detail.call_id) == ("acme", f"CA-{source.split('.')[1]}")
    assert report_parser(bodies["mirror.api"]).reason == "api"
    assert report_parser(bodies["mirror.bridge"]).counts == {"turns": 3.0}


def test_a_refused_or_failed_put_raises_without_the_detail(bus: dict[str, Any]) -> None:
    publisher = EventBridgePublisher("no-such-bus", "mirror.api", client=bus["events"])
    secret = call_ended_detail("acme", "CA-1", 1.0, "caller said 4111 1111 1111 1111")
    with pytest.raises(EventPublishError) as raised:
        publisher.publish(CALL_ENDED, secret)
    assert "CallEnded not published" in str(raised.value) and "4111" not in str(raised.value)


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="source"):
        EventBridgePublisher("bus", "someone.else")
