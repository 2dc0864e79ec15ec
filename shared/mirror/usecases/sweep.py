"""Re-send the CallEnded events left pending: the CallEndedSweeper function's use case
(`mirror.sweeper` holds the rules). Returns a `SweepOutcome` or a `Failure`; never raises."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mirror.state import StateStoreError
from mirror.sweeper import PendingIndex, Publisher, SweepResult, sweep
from mirror.usecases.failure import Failure

DEFAULT_MIN_AGE_S = 300.0
"""A mark younger than this may still be published by its sender (the Api's client retrying
`POST /end`; the bridge's own retries finish within its 5 s close budget)."""
DEFAULT_LIMIT = 200
"""Marks re-sent per source and run (the schedule runs every few minutes)."""


class SweepOverrides(BaseModel):
    """A direct invoke (or the schedule's `Input`) may narrow a run; both optional."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    min_age_s: Annotated[float, Field(ge=0, le=7 * 24 * 3600)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None


class SweepEvent(BaseModel):
    """An EventBridge Scheduler / schedule rule event (`detail` is `{}`), or a bare
    `SweepOverrides` object on a direct invoke."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    detail: SweepOverrides = Field(default_factory=SweepOverrides)

    @classmethod
    def parse(cls, event: object) -> SweepEvent:
        """Raises ValidationError for anything but a JSON object of that shape."""
        if isinstance(event, dict) and "detail" not in event:
            return cls(detail=SweepOverrides.model_validate(event))
        return cls.model_validate(event)


@dataclass(frozen=True, slots=True)
class SweepSettings:
    min_age_s: float = DEFAULT_MIN_AGE_S
    limit: int = DEFAULT_LIMIT

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> SweepSettings:
        """CALL_ENDED_SWEEP_MIN_AGE_S and CALL_ENDED_SWEEP_LIMIT; a malformed value raises
        ValueError naming the variable (read at cold start)."""
        env = os.environ if env is None else env
        values: dict[str, float | int] = {}
        for name, key, kind in (
            ("CALL_ENDED_SWEEP_MIN_AGE_S", "min_age_s", float),
            ("CALL_ENDED_SWEEP_LIMIT", "limit", int),
        ):
            raw = env.get(name)
            if not raw:
                continue
            try:  # ValidationError is a ValueError
                values[key] = kind(raw)
                SweepOverrides.model_validate({key: values[key]})
            except ValueError:
                raise ValueError(f"{name} is not valid: {raw[:40]!r}") from None
        settings = SweepSettings()
        return SweepSettings(
            min_age_s=float(values.get("min_age_s", settings.min_age_s)),
            limit=int(values.get("limit", settings.limit)),
        )


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """One run: the call ids re-published (`swept`), only unindexed (`cleared`: their
    sender had published), still pending (`failed`, with the error class), and the publish
    retries it took."""

    swept: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: int = 0

    @staticmethod
    def of(result: SweepResult) -> SweepOutcome:
        return SweepOutcome(
            list(result.swept), list(result.cleared), dict(result.failed), result.retries
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "found": len(self.swept) + len(self.cleared) + len(self.failed),
            "swept": self.swept,
            "cleared": self.cleared,
            "failed": self.failed,
            "retries": self.retries,
        }


def sweep_call_ended(
    index: PendingIndex,
    publishers: dict[str, Publisher],
    settings: SweepSettings,
    request: SweepEvent,
    *,
    clock: Callable[[], float] = time.time,
) -> SweepOutcome | Failure:
    """One sweep with the request's overrides over the settings."""
    min_age_s = request.detail.min_age_s
    limit = request.detail.limit
    try:
        result = sweep(
            index,
            publishers,
            now=clock(),
            min_age_s=settings.min_age_s if min_age_s is None else min_age_s,
            limit=settings.limit if limit is None else limit,
        )
    except StateStoreError as e:
        return Failure("state_unavailable", str(e), log_detail=str(e))
    except Exception as e:  # noqa: BLE001 - the index could not be read: an outcome too
        if getattr(e, "response", None) is not None:  # a botocore ClientError
            return Failure(
                "state_unavailable",
                f"the call table's pending index could not be read ({type(e).__name__})",
                log_detail=f"{type(e).__name__}: {e}",
            )
        return Failure.unexpected(e)
    return SweepOutcome.of(result)
