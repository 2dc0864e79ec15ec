"""A moto EventBridge bus carrying PostCallReport's own CallEnded rule (template.yaml),
delivering to an SQS queue, so a test reads back exactly what the report function would get."""

from __future__ import annotations

import json
from typing import Any

from mirror_dev.local import load_template
from tests.conftest import TEMPLATE_PATH, TEST_REGION, boto_session

BUS_NAME = "mirror-events"


def call_ended_bus() -> dict[str, Any]:
    """Inside an active moto mock: {"events": client, "sqs": client, "queue": url}."""
    session = boto_session()
    events = session.client("events", region_name=TEST_REGION)
    sqs = session.client("sqs", region_name=TEST_REGION)
    fn = load_template(TEMPLATE_PATH)["Resources"]["PostCallReportFunction"]
    pattern = fn["Properties"]["Events"]["CallEnded"]["Properties"]["Pattern"]
    events.create_event_bus(Name=BUS_NAME)
    queue = sqs.create_queue(QueueName="reports")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="ended", EventBusName=BUS_NAME, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="ended", EventBusName=BUS_NAME, Targets=[{"Id": "q", "Arn": arn}])
    return {"events": events, "sqs": sqs, "queue": queue}


def delivered(bus: dict[str, Any]) -> list[dict[str, Any]]:
    """The envelopes delivered since the last call (each read once)."""
    out: list[dict[str, Any]] = []
    while True:
        messages = bus["sqs"].receive_message(QueueUrl=bus["queue"], MaxNumberOfMessages=10)
        batch = messages.get("Messages", [])
        if not batch:
            return out
        for m in batch:
            out.append(json.loads(m["Body"]))
            bus["sqs"].delete_message(QueueUrl=bus["queue"], ReceiptHandle=m["ReceiptHandle"])
