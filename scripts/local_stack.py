"""The bridge's local stack, shared by `scripts/demo_call.py` and `benchmarks/bridge.py`.

- `add_paths()`: the bridge package (`bridge/`, not installed), the development package
  (`dev/`: the Plivo peer, the scripted agent, the in-process transport; installed by
  `make venv`, on the path here all the same) and the checkout on sys.path.
- `MotoServer`: moto in server mode on a free loopback port, the call table created from
  template.yaml's definition, an EventBridge rule sending `CallEnded` to an SQS queue so the
  event can be read back.
- `BridgeServer`: uvicorn serving an app on 127.0.0.1 in a thread with its own event loop.

Nothing here listens beyond 127.0.0.1 or talks to anything but these local servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
BRIDGE_DIR = REPO / "bridge"
DEV_DIR = REPO / "dev"
TEMPLATE = REPO / "template.yaml"
REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
CALL_ENDED_PATTERN = {"source": ["mirror.bridge"], "detail-type": ["CallEnded"]}


def add_paths() -> None:
    for path in (str(REPO), str(BRIDGE_DIR), str(DEV_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)


def default_log_level(level: str | None = None) -> str:
    """`level`, else `LOG_LEVEL`, else INFO: the default of every Mirror stack."""
    return (level or os.environ.get("LOG_LEVEL", "")).strip().upper() or "INFO"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- moto server ----------------------------------------------------------------------------


@dataclass
class MotoServer:
    """moto in server mode on 127.0.0.1 with the call table and a CallEnded queue."""

    table_name: str = "mirror-local-call-state"
    queue_name: str = "mirror-local-call-ended"
    rule_name: str = "mirror-local-call-ended"
    port: int = field(default_factory=free_port)
    queue_url: str = ""

    def __post_init__(self) -> None:
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=DUMMY_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client(service, endpoint_url=self.endpoint)

    def start(self) -> MotoServer:
        from moto.server import ThreadedMotoServer

        from mirror_dev.local import call_table_properties, create_call_table

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        create_call_table(self.client("dynamodb"), self.table_name, call_table_properties(TEMPLATE))
        sqs = self.client("sqs")
        self.queue_url = sqs.create_queue(QueueName=self.queue_name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        events = self.client("events")
        events.put_rule(Name=self.rule_name, EventPattern=json.dumps(CALL_ENDED_PATTERN))
        events.put_targets(
            Rule=self.rule_name,
            Targets=[{"Id": "queue", "Arn": arn["Attributes"]["QueueArn"]}],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def call_items(self, pk: str) -> list[dict[str, Any]]:
        """Every item of one call (partition key `pk`), as plain values."""
        from boto3.dynamodb.types import TypeDeserializer

        client = self.client("dynamodb")
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
        }
        deserialize = TypeDeserializer().deserialize
        while True:
            page = client.query(**kwargs)
            items += [{k: deserialize(v) for k, v in item.items()} for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def call_ended_events(self, wait_s: float = 2.0) -> list[dict[str, Any]]:
        """The EventBridge envelopes the rule delivered to the queue so far."""
        sqs = self.client("sqs")
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait_s
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            for message in batch.get("Messages", []):
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            if out or time.monotonic() > deadline:
                return out
            time.sleep(0.05)


# --- the bridge under uvicorn ---------------------------------------------------------------


class BridgeServer:
    """uvicorn serving `app` on 127.0.0.1 in a daemon thread with its own event loop."""

    def __init__(
        self,
        app: Any,
        port: int | None = None,
        lifespan: str = "on",
        log_level: str | None = None,
    ) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            # INFO unless told otherwise, as in every stack (bridge/main.py, template.yaml)
            log_level=default_log_level(log_level).lower(),
            lifespan=lifespan,
            ws_ping_interval=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="bridge", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/plivo/stream"

    def start(self) -> BridgeServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the bridge (uvicorn) did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run `coro` on the bridge's loop (e.g. warming a cache its sessions share)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


def environment(overrides: Mapping[str, str]) -> Callable[[], None]:
    """Apply environment overrides now; returns the function that restores the old values."""
    import os

    saved = {k: os.environ.get(k) for k in overrides}
    for k, v in overrides.items():
        if v == "":
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    return restore
