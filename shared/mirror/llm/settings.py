"""Which remote models the judge may call, as plain configuration (no clients, no I/O).

Part of `MirrorConfig`, so this module imports pydantic and nothing else heavy. Keys are never
configuration values: only where to find them (a Secrets Manager name or an env var name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_NLI_MODEL = "facebook/bart-large-mnli"
HF_INFERENCE_URL = "https://router.huggingface.co/hf-inference/models/{model}"

_AZURE_ONLY = ("azure_endpoint", "azure_api_version", "azure_deployment")


class LLMSettings(BaseModel):
    """The Tier 2 judge model.

    `timeout_s` caps one HTTP attempt; the whole call (retries and backoff included) is bounded
    by the caller's budget, `timeouts.tier2_s` for the judge.
    """

    model_config = _STRICT

    provider: Literal["openai", "azure", "bedrock"] = "openai"
    model: str = Field(DEFAULT_OPENAI_MODEL, min_length=1, max_length=256)
    """OpenAI model name, Azure model name (the deployment defaults to it) or Bedrock model id."""
    base_url: str | None = None
    """provider openai only: any OpenAI-compatible endpoint (vLLM, a Selene-style judge...)."""
    api_key_secret: str | None = None
    """Secrets Manager name or ARN holding the key (plain, or JSON with `api_key`)."""
    api_key_env: str | None = None
    """Env var with the key when no secret is set (default: OPENAI_API_KEY, for azure
    AZURE_OPENAI_API_KEY)."""
    azure_endpoint: str | None = None
    azure_api_version: str | None = None
    azure_deployment: str | None = None
    bedrock_region: str | None = None
    """Default: the function's own region (AWS_REGION)."""
    timeout_s: float = Field(10.0, gt=0, le=120)
    max_retries: int = Field(2, ge=0, le=5)
    """Retries after the first attempt, on 429, 5xx and timeouts only."""
    max_tokens: int = Field(400, ge=16, le=8_192)
    temperature: float | None = Field(0.0, ge=0.0, le=2.0)
    """None leaves it out (models that accept only their default, e.g. reasoning models)."""

    @model_validator(mode="after")
    def _fields_fit_provider(self) -> LLMSettings:
        if self.provider == "azure":
            if not (self.azure_endpoint and self.azure_api_version):
                raise ValueError("provider azure needs azure_endpoint and azure_api_version")
        else:
            for name in _AZURE_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is only for provider azure")
        if self.base_url is not None and self.provider != "openai":
            raise ValueError("base_url is only for provider openai (OpenAI-compatible endpoints)")
        if self.provider == "bedrock":
            if "model" not in self.model_fields_set:
                raise ValueError("provider bedrock needs model (a Bedrock model id)")
            if self.api_key_secret or self.api_key_env:
                raise ValueError("provider bedrock authenticates with the function's IAM role")
        elif self.bedrock_region is not None:
            raise ValueError("bedrock_region is only for provider bedrock")
        return self

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def key_env(self) -> str:
        if self.api_key_env:
            return self.api_key_env
        return "AZURE_OPENAI_API_KEY" if self.provider == "azure" else "OPENAI_API_KEY"


class Tier1Settings(BaseModel):
    """The Tier 1 zero-shot (NLI) classifier: one hypothesis per prose policy.

    A policy scoring at least `confident_threshold` is a violation; a turn whose every policy
    scores below `clean_below` is clean; anything in between is uncertain and goes to Tier 2.
    """

    model_config = _STRICT

    provider: Literal["huggingface", "sagemaker"] = "huggingface"
    model: str = Field(DEFAULT_NLI_MODEL, min_length=1, max_length=256)
    """huggingface: the model in the default Inference URL; both: named in the evidence."""
    url: str | None = None
    """huggingface: the endpoint (default: the HF Inference URL for `model`)."""
    endpoint_name: str | None = None
    """sagemaker: the endpoint serving a zero-shot-classification model."""
    region: str | None = None
    """sagemaker: default the function's own region."""
    token_secret: str | None = None
    token_env: str = "HF_TOKEN"
    confident_threshold: float = Field(0.9, gt=0.0, le=1.0)
    clean_below: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _fields_fit_provider(self) -> Tier1Settings:
        if self.clean_below >= self.confident_threshold:
            raise ValueError("clean_below must be below confident_threshold")
        if self.provider == "sagemaker":
            if not self.endpoint_name:
                raise ValueError("provider sagemaker needs endpoint_name")
            if self.url or self.token_secret:
                raise ValueError("url and token_secret are for provider huggingface")
        elif self.endpoint_name or self.region:
            raise ValueError("endpoint_name and region are for provider sagemaker")
        return self

    @property
    def endpoint_url(self) -> str:
        return self.url or HF_INFERENCE_URL.format(model=self.model)


def llm_settings_from_env(environ: Mapping[str, str] | None = None) -> LLMSettings | None:
    """An LLM from the standard env vars, for `mirror eval` and functions without `llm` config.

    MIRROR_LLM_PROVIDER (openai|azure|bedrock) picks explicitly; otherwise Azure when
    AZURE_OPENAI_ENDPOINT is set, OpenAI when OPENAI_API_KEY or OPENAI_BASE_URL is, Bedrock
    when BEDROCK_MODEL_ID is. MIRROR_LLM_MODEL names the model. None: no LLM configured.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        return env.get(name) or None  # empty means unset

    provider = get("MIRROR_LLM_PROVIDER")
    if provider is None:
        if get("AZURE_OPENAI_ENDPOINT"):
            provider = "azure"
        elif get("OPENAI_API_KEY") or get("OPENAI_BASE_URL"):
            provider = "openai"
        elif get("BEDROCK_MODEL_ID"):
            provider = "bedrock"
        else:
            return None
    model = get("MIRROR_LLM_MODEL")
    if provider == "azure":
        deployment = get("AZURE_OPENAI_DEPLOYMENT")
        return LLMSettings(
            provider="azure",
            model=model or deployment or DEFAULT_OPENAI_MODEL,
            azure_endpoint=get("AZURE_OPENAI_ENDPOINT"),
            azure_api_version=get("OPENAI_API_VERSION"),
            azure_deployment=deployment,
        )
    if provider == "bedrock":
        model = model or get("BEDROCK_MODEL_ID")
        if not model:
            raise ValueError("provider bedrock needs MIRROR_LLM_MODEL or BEDROCK_MODEL_ID")
        return LLMSettings(provider="bedrock", model=model)
    if provider != "openai":
        raise ValueError(f"MIRROR_LLM_PROVIDER must be openai, azure or bedrock, not {provider!r}")
    return LLMSettings(
        provider="openai",
        model=model or DEFAULT_OPENAI_MODEL,
        base_url=get("OPENAI_BASE_URL"),
    )
