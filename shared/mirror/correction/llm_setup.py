"""What the GenerateCorrection and Api functions read from their environment: the LLM's
timeout and the LLM client itself (built on first use, never at import).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from mirror.llm.base import LLMClient
from mirror.models import MirrorConfig

DEFAULT_LLM_TIMEOUT_S = 2.5
"""The LLM's budget: the buffer line ("Let me make sure I got that right.") plays meanwhile."""
LLM_TIMEOUT_ENV = "CORRECTION_LLM_TIMEOUT_S"


def llm_timeout_from_env(environ: Mapping[str, str] = os.environ) -> float:
    """`CORRECTION_LLM_TIMEOUT_S` (default `DEFAULT_LLM_TIMEOUT_S`); a bad value raises, so a
    bad deployment fails at cold start, not on a call."""
    raw = environ.get(LLM_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LLM_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 60:  # also false for nan
        raise ValueError(f"{LLM_TIMEOUT_ENV} must be a number of seconds in (0, 60], not {raw!r}")
    return value


class _ExceptionLogger(Protocol):
    def exception(self, msg: str, /) -> None: ...


def build_correction_llm(config: MirrorConfig, logger: _ExceptionLogger) -> LLMClient | None:
    """The LLM client from the config's `llm` settings or the standard env vars; None (templates
    only) when none is configured or it cannot be built. Built on first use, never at import:
    the adapters load their SDKs (openai, botocore's bedrock-runtime) only when configured."""
    from mirror.llm import build_llm_client, llm_settings_from_env

    try:
        settings = config.llm or llm_settings_from_env()
        return None if settings is None else build_llm_client(settings)
    except Exception:  # a bad LLM setting must not take the spoken correction down with it
        logger.exception("LLM client could not be built; corrections use templates only")
        return None
