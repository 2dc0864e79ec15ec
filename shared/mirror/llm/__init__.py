"""The LLM layer: the `LLMClient` port, its OpenAI/Azure/Bedrock adapters, and their settings.

Importing this package loads only the port and the settings (pydantic): `mirror.models` imports
the settings, and no SDK may load at import. The factories are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mirror.llm.base import (
    LLMBadOutput,
    LLMClient,
    LLMError,
    LLMRefusal,
    LLMTimeout,
    LLMUnavailable,
)
from mirror.llm.settings import LLMSettings, Tier1Settings, llm_settings_from_env

if TYPE_CHECKING:  # the type checker sees their signatures; at run time __getattr__ loads them
    from mirror.llm.factory import build_llm_client, build_remote_tiers

__all__ = [
    "LLMBadOutput",
    "LLMClient",
    "LLMError",
    "LLMRefusal",
    "LLMSettings",
    "LLMTimeout",
    "LLMUnavailable",
    "Tier1Settings",
    "build_llm_client",
    "build_remote_tiers",
    "llm_settings_from_env",
]

_LAZY = {"build_llm_client", "build_remote_tiers"}


def __getattr__(name: str) -> Any:
    # mirror.llm.factory imports mirror.models, which imports this package: load it lazily.
    if name in _LAZY:
        from mirror.llm import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'mirror.llm' has no attribute {name!r}")
