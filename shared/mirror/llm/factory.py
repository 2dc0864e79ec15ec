"""Clients and remote tiers from configuration: the one place that picks an adapter."""

from __future__ import annotations

from mirror.judge.judge import RemoteTier
from mirror.llm.base import LLMClient
from mirror.llm.settings import LLMSettings
from mirror.models import MirrorConfig


def build_llm_client(settings: LLMSettings) -> LLMClient:
    """No I/O: keys are read and connections opened on the first call."""
    if settings.provider == "bedrock":
        from mirror.llm.bedrock import BedrockLLM

        return BedrockLLM(settings)
    from mirror.llm.openai_client import OpenAIChatLLM

    return OpenAIChatLLM(settings)


def build_remote_tiers(config: MirrorConfig) -> list[RemoteTier]:
    """Tier 1 when `tier1` is configured, then Tier 2 when `llm` is; [] when neither is.

    Build once per function instance and pass the list to every `Judge`: the tiers keep their
    HTTP clients, and they read the per-event config (policies, timeouts) on each turn.
    """
    tiers: list[RemoteTier] = []
    if config.tier1 is not None:
        from mirror.judge.tier1 import ZeroShotTier

        tiers.append(ZeroShotTier(config.tier1))
    if config.llm is not None:
        from mirror.judge.tier2 import LLMJudgeTier

        tiers.append(LLMJudgeTier(build_llm_client(config.llm)))
    return tiers
