"""What the CorrectionService tests share (the unit tests on the in-memory store and the note's
tests on both stores): the sample event of events/, a fixed clock, the pizzeria's config, and one
`generate` call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mirror.correction import CorrectionEvent, CorrectionService, GeneratedCorrection
from mirror.models import CallContext, MirrorConfig
from tests.conftest import REPO_ROOT

SAMPLE = json.loads((REPO_ROOT / "events" / "generate_correction.json").read_text("utf-8"))
NOW = 1_700_000_000.0
CONFIG = MirrorConfig(tenant_id="pizzeria")


def event(**update: Any) -> CorrectionEvent:
    return CorrectionEvent.model_validate({**SAMPLE, **update})


def generate(
    service: CorrectionService,
    ev: CorrectionEvent | None = None,
    turn_id: str = "t-0003",
    config: MirrorConfig = CONFIG,
    **kwargs: Any,
) -> GeneratedCorrection:
    return asyncio.run(service.generate(ev or event(), config, turn_id, **kwargs))


def ctx() -> CallContext:
    """The sample event's call."""
    return CallContext(call_id=SAMPLE["call_id"], tenant_id=SAMPLE["tenant_id"])
