"""The typed error every use case returns instead of raising."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from mirror.errors import error_response, validation_error_response

FailureKind = Literal[
    "invalid_event",  # the input cannot be used (incl. the store's size refusals): 422
    "state_unavailable",  # the state store could not be used: 503
    "event_unavailable",  # the call's end is stored but CallEnded is not out: 503
    "forbidden",  # the caller may not act for the tenant, or decide fixes: 403
    "call_not_found",  # 404 (also a call of a tenant the caller may not act for)
    "fix_not_found",  # 404
    "fix_conflict",  # 409
    "fix_unavailable",  # 503
    "internal_error",  # a bug: 500
]

HTTP_STATUS: dict[str, int] = {
    "invalid_event": 422,
    "state_unavailable": 503,
    "event_unavailable": 503,
    "forbidden": 403,
    "call_not_found": 404,
    "fix_not_found": 404,
    "fix_conflict": 409,
    "fix_unavailable": 503,
    "internal_error": 500,
}
"""The Api's status for each kind; the direct handlers return the same `{"error": ...}` body."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an operation has no outcome. `message` is safe to return (no caller data);
    `log_detail` is for the log line only and is redacted before it is written."""

    kind: FailureKind
    message: str
    fields: list[dict[str, str]] | None = None
    log_detail: str | None = None
    error_type: str | None = None

    @staticmethod
    def invalid(e: ValidationError) -> Failure:
        """A pydantic error: every bad field by its path, never the input value."""
        body = validation_error_response(e)["error"]
        return Failure("invalid_event", body["message"], body.get("fields"))

    @staticmethod
    def unexpected(e: BaseException) -> Failure:
        return Failure(
            "internal_error",
            "internal error; see the function's logs",
            log_detail=f"{type(e).__name__}: {e}",
            error_type=type(e).__name__,
        )

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.kind, 500)

    def response(self) -> dict[str, Any]:
        """The `{"error": {...}}` object every entry point returns."""
        return error_response(self.kind, self.message, self.fields)
