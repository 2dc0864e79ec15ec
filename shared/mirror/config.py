"""Where a function's configuration comes from: one JSON document in the environment.

`MIRROR_CONFIG` holds a `MirrorConfig` as JSON (the template sets it from a parameter); an event
may add its own `policies` and `irreversible_tools`. A bad document fails at cold start with a
message naming the field, not on the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mirror.models import MirrorConfig, ScoreTurnEvent

CONFIG_ENV = "MIRROR_CONFIG"


class ConfigError(ValueError):
    pass


def config_from_env(environ: Mapping[str, str] = os.environ) -> MirrorConfig:
    raw = environ.get(CONFIG_ENV, "").strip()
    if not raw:
        return MirrorConfig()
    try:
        return MirrorConfig.model_validate_json(raw)
    except ValueError as e:
        raise ConfigError(f"{CONFIG_ENV} is not a valid Mirror config: {e}") from None


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
