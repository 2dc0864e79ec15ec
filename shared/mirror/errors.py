"""The structured error object every entry point returns for input it cannot use."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def error_response(
    kind: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def validation_error_response(e: ValidationError) -> dict[str, Any]:
    """Name every bad field by its dotted path ('tool_calls.0.id'); never echo the input value,
    which may hold caller PII."""
    fields = [
        {"field": ".".join(str(p) for p in err["loc"]) or "(event)", "message": err["msg"]}
        for err in e.errors(include_input=False, include_url=False)
    ]
    names = ", ".join(f["field"] for f in fields[:5])
    return error_response("invalid_event", f"invalid event: {names}", fields)
