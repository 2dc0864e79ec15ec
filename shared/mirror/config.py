"""Where a function's configuration comes from: one JSON document in the environment.

`MIRROR_CONFIG` holds a `MirrorConfig` as JSON (the template sets it from a parameter); an event
may add its own `policies` and `irreversible_tools`. A bad document fails at cold start with a
message naming the field, not on the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mirror.llm import llm_settings_from_env
from mirror.models import MirrorConfig, ScoreTurnEvent

CONFIG_ENV = "MIRROR_CONFIG"


class ConfigError(ValueError):
    pass


def config_from_env(environ: Mapping[str, str] = os.environ) -> MirrorConfig:
    """`MIRROR_CONFIG`, with the LLM from the standard variables (`OPENAI_API_KEY`,
    `AZURE_OPENAI_ENDPOINT`, `MIRROR_LLM_PROVIDER`, ...) when the document names none."""
    raw = environ.get(CONFIG_ENV, "").strip()
    try:
        config = MirrorConfig.model_validate_json(raw) if raw else MirrorConfig()
        if config.llm is None and (llm := llm_settings_from_env(environ)) is not None:
            config = config.model_copy(update={"llm": llm})
    except ValueError as e:
        raise ConfigError(f"{CONFIG_ENV} is not a valid Mirror config: {e}") from None
    return config


def config_for_event(base: MirrorConfig, event: ScoreTurnEvent) -> MirrorConfig:
    """The base config with the event's tenant, policies and irreversible tools, if it has them."""
    update: dict[str, object] = {}
    if event.tenant_id is not None:
        update["tenant_id"] = event.tenant_id
    if event.policies is not None:
        update["policies"] = event.policies
    if event.irreversible_tools is not None:
        update["irreversible_tools"] = event.irreversible_tools
    if not update:
        return base
    # Re-validate so event policies are compiled and checked like configured ones.
    return MirrorConfig.model_validate({**base.model_dump(), **update})
