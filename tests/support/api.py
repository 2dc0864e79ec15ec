"""The functions' HTTP surface as the Api tests drive it: the handler paths, the events of
events/, a request through the ASGI app or an HTTP API v2 event through the Lambda entry, and the
structured error's shape. The fixtures that import a handler fresh (inside moto) are
tests/integration/conftest.py's."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import httpx

from tests.conftest import REPO_ROOT
from tests.fakes.lambda_context import FakeContext
from tests.support.handlers import load_event

API_PATH = REPO_ROOT / "functions" / "api" / "app.py"
SCORE_TURN_PATH = REPO_ROOT / "functions" / "score_turn" / "app.py"
GATE_TOOL_PATH = REPO_ROOT / "functions" / "gate_tool" / "app.py"
CORRECTION_PATH = REPO_ROOT / "functions" / "generate_correction" / "app.py"
SERVICE_NAME = "mirror-api-test"
NAMESPACE = "MirrorTest"


# --- the two ways in ---------------------------------------------------------------------------


def asgi(
    api: ModuleType,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One request through the ASGI app, on a private event loop (the main thread's current
    loop belongs to Mangum)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(
                method, url, json=json_body, content=content, headers=headers, params=params
            )

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(go())
    finally:
        loop.close()


def http_event(
    method: str,
    path: str,
    *,
    route: str | None = None,
    body: Any = None,
    raw_body: str | None = None,
    query: Mapping[str, str] | None = None,
    base64_body: bool = False,
    content_type: str | None = "application/json",
    request_id: str | None = None,
) -> dict[str, Any]:
    """An HTTP API v2 event for `method path`, built on events/api_score_turn.json (the shape
    `sam local generate-event apigateway http-api-proxy` gives, with an IAM authorizer)."""
    event = copy.deepcopy(load_event("api_score_turn.json"))
    route_key = f"{method} {route or path}"
    event["routeKey"] = event["requestContext"]["routeKey"] = route_key
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["requestId"] = request_id or uuid.uuid4().hex[:16]
    headers = event["headers"]
    headers.pop("content-type", None)
    headers.pop("content-length", None)
    event.pop("body", None)
    event.pop("queryStringParameters", None)
    event["rawQueryString"] = httpx.QueryParams(query or {}).__str__()
    if query:
        event["queryStringParameters"] = dict(query)
    text = raw_body if raw_body is not None else None if body is None else json.dumps(body)
    if text is not None:
        data = text.encode()
        if content_type is not None:
            headers["content-type"] = content_type
        headers["content-length"] = str(len(data))
        event["body"] = base64.b64encode(data).decode() if base64_body else text
        event["isBase64Encoded"] = base64_body
    return event


def invoke(api: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of the Lambda entry's proxy response."""
    response = api.lambda_handler(event, FakeContext(function_name="mirror-api-test"))
    json.dumps(response)  # a Lambda response must be JSON-serializable
    assert response["isBase64Encoded"] is False
    headers = response.get("headers") or {}
    assert headers.get("content-type") == "application/json"
    return response["statusCode"], headers, json.loads(response["body"])


def error_of(body: Any, kind: str) -> dict[str, Any]:
    """The structured error, checked for its shape: exactly `error`, with type and message."""
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == kind, error
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"type", "message", "fields"}
    return error
