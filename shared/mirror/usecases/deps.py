"""The dependency container behind every entry point: one per Lambda container.

Each handler module (and the Api) holds one `Deps`, built from the environment at import
(config only: no client, no I/O) and filling in its services on first use. The bridge's
in-process transport loads a handler file several times, one "container" per worker; each copy
has its own `Deps`, so each behaves like its own Lambda container. The parts are built under a
lock (two threads asking first build one), and the gate's lock is the container's: GateService
is not thread-safe with idempotency on.

The ONE way to swap dependencies (tests, the benchmark, the demo) is `using`:

    with app.deps.using(store=InMemoryStateStore()):
        app.lambda_handler(event, context)

Every part not given is built afresh from the given ones inside the block (the scorer on the
given store, ...), and the container is back as it was after it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from mirror.models import MirrorConfig

if TYPE_CHECKING:
    from mirror.calls import CallsService
    from mirror.correction import CorrectionService
    from mirror.fixes.approval import FixApprovals
    from mirror.gate import GateService
    from mirror.judge import RemoteTier
    from mirror.reports.service import PostCallReportService, ReportSettings
    from mirror.service import ScoreTurnService
    from mirror.state import StateStore

T = TypeVar("T")

PARTS = (
    "store",
    "remote_tiers",
    "scorer",
    "gate",
    "corrections",
    "calls",
    "fixes",
    "reports",
)
"""What `using` may replace; each is built on first use from `CALL_TABLE` (and the config).
`remote_tiers` is the function that builds a config's Tier 1 / Tier 2 (`remote_tiers`)."""


class FixesNotConfigured(Exception):
    """REPORTS_TABLE is not set: this deployment has no fix workflow, so no fix exists."""


def remote_tiers(config: MirrorConfig) -> list[RemoteTier]:
    """Tier 1 / Tier 2 as the config asks (none: Tier 0 only). Imported here, not at module
    level: the factory loads an SDK only for a configured tier."""
    from mirror.llm import build_remote_tiers

    return list(build_remote_tiers(config))


class Deps:
    """One container's services, built lazily (see the module docstring)."""

    def __init__(
        self,
        base_config: MirrorConfig | None = None,
        *,
        environ: Mapping[str, str] = os.environ,
        logger: Any = None,
        on_first_client: Callable[[], None] | None = None,
        report_settings: ReportSettings | None = None,
        llm_timeout_s: float | None = None,
        **parts: Any,
    ) -> None:
        """`base_config`: the function's config (default: `MIRROR_CONFIG`, read now, so a bad
        document fails at cold start). `logger` gets the LLM builders' warnings;
        `on_first_client` runs before the first AWS client is built (the tracer's botocore
        patch). `report_settings`: PostCallReport's (read at its cold start). `llm_timeout_s`:
        the corrections' LLM timeout (`mirror.correction.llm_timeout_from_env`, read at the
        cold start of a function that corrects; default: read when first needed). `parts`:
        any of `PARTS`, given instead of built."""
        from mirror.config import config_from_env

        unknown = set(parts) - set(PARTS)
        if unknown:
            raise TypeError(f"unknown dependencies: {sorted(unknown)}")
        self.base_config = base_config if base_config is not None else config_from_env(environ)
        self._llm_timeout_s = llm_timeout_s
        self.environ = environ
        self.logger = logger
        self.on_first_client = on_first_client
        self.report_settings = report_settings
        self.gate_lock = threading.Lock()
        """GateService is not thread-safe with idempotency on: one gate at a time."""
        self._built: dict[str, Any] = dict(parts)
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def llm_timeout_s(self) -> float:
        if self._llm_timeout_s is None:
            from mirror.correction import llm_timeout_from_env

            self._llm_timeout_s = llm_timeout_from_env(self.environ)
        return self._llm_timeout_s

    # --- swapping --------------------------------------------------------------------------

    @contextmanager
    def using(self, **parts: Any) -> Iterator[Deps]:
        """Inside the block, `parts` replace the built ones and everything else is built
        afresh on first use (from the given parts); after it, the container is as before."""
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise TypeError(f"unknown dependencies: {sorted(unknown)}")
        with self._lock:
            saved = self._built
            self._built = dict(parts)
        try:
            yield self
        finally:
            with self._lock:
                self._built = saved

    def built(self) -> tuple[str, ...]:
        """The parts built (or given) so far: none after import, for a light cold start."""
        return tuple(sorted(self._built))

    def _part(self, name: str, build: Callable[[], T]) -> T:
        built = self._built.get(name)
        if built is None:
            with self._lock:
                built = self._built.get(name)
                if built is None:
                    built = self._built[name] = build()
        return built

    # --- the parts -------------------------------------------------------------------------

    def remote_tiers(self) -> Callable[[MirrorConfig], Sequence[RemoteTier]]:
        return self._part("remote_tiers", lambda: remote_tiers)

    def store(self) -> StateStore:
        def build() -> StateStore:
            from mirror.state import DynamoDBStateStore

            if self.on_first_client is not None:
                self.on_first_client()
            return DynamoDBStateStore(self.environ["CALL_TABLE"])

        return self._part("store", build)

    def scorer(self) -> ScoreTurnService:
        def build() -> ScoreTurnService:
            from mirror.service import ScoreTurnService

            # looked up per config at call time, so the judge's tiers follow `remote_tiers`
            return ScoreTurnService(self.store(), remote_tiers_for=self.remote_tiers())

        return self._part("scorer", build)

    def gate(self) -> GateService:
        def build() -> GateService:
            from mirror.gate import GateService, idempotency_layer
            from mirror.state import DynamoDBStateStore

            store = self.store()
            persistence = None
            if isinstance(store, DynamoDBStateStore):  # Powertools idempotency: first gate only
                persistence = idempotency_layer(store.table_name, store.client)
            tiers = list(self.remote_tiers()(self.base_config))
            return GateService(store, tiers, persistence=persistence)

        return self._part("gate", build)

    def built_gate(self) -> GateService | None:
        """The gate if it was built (its spoken lines for a failure), without building it."""
        return self._built.get("gate")

    def corrections(self) -> CorrectionService:
        def build() -> CorrectionService:
            from mirror.correction import CorrectionService, build_correction_llm

            logger = self.logger

            def log_llm_error(e: BaseException) -> None:
                # LLMError messages hold no prompts, keys or model output (mirror.llm.base)
                if logger is not None:
                    logger.warning("correction LLM failed", extra={"error_type": type(e).__name__})

            return CorrectionService(
                self.store(),
                build_correction_llm(self.base_config, logger or _NullLogger()),
                llm_timeout_s=self.llm_timeout_s,
                on_llm_error=log_llm_error,
            )

        return self._part("corrections", build)

    def calls(self) -> CallsService:
        """Ending a call publishes CallEnded on EVENT_BUS_NAME when it is set (source
        mirror.api)."""

        def build() -> CallsService:
            from mirror.calls import CallsService, EventBridgeCallEnded

            bus = self.environ.get("EVENT_BUS_NAME", "").strip()
            if bus:
                return CallsService(self.store(), on_ended=EventBridgeCallEnded(bus))
            return CallsService(self.store())

        return self._part("calls", build)

    def fixes(self) -> FixApprovals:
        """Raises `FixesNotConfigured` without REPORTS_TABLE."""

        def build() -> FixApprovals:
            from mirror.fixes.approval import FixApprovals
            from mirror.fixes.store import FixStore

            table = self.environ.get("REPORTS_TABLE", "").strip()
            if not table:
                raise FixesNotConfigured("REPORTS_TABLE is not set: no fix workflow here")
            return FixApprovals(FixStore(table))

        return self._part("fixes", build)

    def reports(self) -> PostCallReportService:
        """PostCallReport's service (needs `report_settings`); the auditor LLM is the config's
        `llm` or the standard variables, None when it cannot be built (the deterministic
        report still goes out)."""

        def build() -> PostCallReportService:
            from mirror.reports.service import PostCallReportService
            from mirror.reports.store import (
                DynamoDBReportStore,
                FixWorkflowStarter,
                S3TranscriptStore,
            )
            from mirror.state import DynamoDBStateStore

            settings = self.report_settings
            if settings is None:
                raise RuntimeError("this container has no report settings")
            if self.on_first_client is not None:
                self.on_first_client()
            return PostCallReportService(
                state=DynamoDBStateStore(self.environ["CALL_TABLE"], read_timeout_s=5.0),
                reports=DynamoDBReportStore(settings.reports_table),
                settings=settings,
                transcripts=S3TranscriptStore(settings.bucket) if settings.bucket else None,
                starter=(
                    FixWorkflowStarter(settings.state_machine_arn)
                    if settings.state_machine_arn
                    else None
                ),
                llm=self._auditor_llm(),
                run=self.run,
            )

        return self._part("reports", build)

    def _auditor_llm(self) -> Any:
        if self.base_config.llm is None:
            return None
        from mirror.llm import build_llm_client

        try:
            return build_llm_client(self.base_config.llm)
        except Exception:  # noqa: BLE001
            if self.logger is not None:
                self.logger.exception(
                    "LLM client could not be built; reports are deterministic only"
                )
            return None

    # --- async code from a synchronous handler ---------------------------------------------

    def loop(self) -> asyncio.AbstractEventLoop:
        """One event loop for the container's life: async HTTP clients keep their connection
        pools across invocations, which a fresh `asyncio.run` loop per invocation would
        break."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """`coro` to completion on the container's loop (one invocation at a time)."""
        return self.loop().run_until_complete(coro)


class _NullLogger:
    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        pass

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        pass
