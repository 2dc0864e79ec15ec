"""Fault injection for EventBridge: a real (moto) `events` client whose `put_events` refuses
the entry (`FailedEntryCount: 1`, as EventBridge answers a throttled or internally failed
entry with HTTP 200) or raises, a given number of times, then delegates."""

from __future__ import annotations

from typing import Any


class FlakyEvents:
    """`client` with its first `fail` put_events refused (None: every one). `mode` "entry"
    answers a refused entry, "raise" raises a transport error; `calls` counts every attempt."""

    def __init__(
        self,
        client: Any,
        *,
        fail: int | None = 1,
        mode: str = "entry",
        code: str = "ThrottlingException",
    ) -> None:
        self.client = client
        self.fail = fail
        self.mode = mode
        self.code = code
        self.calls = 0

    def put_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.fail is None or self.calls <= self.fail:
            if self.mode == "raise":
                raise ConnectionError("connection reset by peer")
            return {
                "FailedEntryCount": 1,
                "Entries": [{"ErrorCode": self.code, "ErrorMessage": "injected"}],
            }
        response: dict[str, Any] = self.client.put_events(**kwargs)
        return response
