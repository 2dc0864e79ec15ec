"""Where a function's configuration comes from: one JSON document in the environment.

`MIRROR_CONFIG` holds a `MirrorConfig` as JSON (the template sets it from a parameter); an event
may add its own `policies` and `irreversible_tools`. An event's irreversible tools are ADDED to
the operator's (a union): the supervised agent sends the events, and it may ask for more gating,
never for less. A bad document fails at cold start with a message naming the field, not on the
first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from mirror.llm import llm_settings_from_env
from mirror.models import MirrorConfig

CONFIG_ENV = "MIRROR_CONFIG"
OVERLAY_MEMO_SIZE = 256
"""Event configs kept per base config; a container that sees more distinct ones builds the
rest each time."""


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


class EventOverlay(Protocol):
    """What an event may overlay on the base config (ScoreTurn's and GateTool's events)."""

    @property
    def tenant_id(self) -> str | None: ...
    @property
    def policies(self) -> Sequence[str] | None: ...
    @property
    def irreversible_tools(self) -> Sequence[str] | None: ...


def config_for_event(base: MirrorConfig, event: EventOverlay) -> MirrorConfig:
    """The base config with the event's tenant, policies and irreversible tools, if it has them
    (`config_overlay`). ScoreTurn's, GateTool's and the Api's events all read this way."""
    return config_overlay(base, event.tenant_id, event.policies, event.irreversible_tools)


def config_overlay(
    base: MirrorConfig,
    tenant_id: str | None,
    policies: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
) -> MirrorConfig:
    """The ONE config overlay: the base config with a tenant, policies and irreversible tools,
    where given (`tools` are added to the base's list, never replace it); the same object for
    the same overlay (`MirrorConfig.event_overlays`): nothing is re-validated per turn, and its
    judge is found by a fingerprint computed once. Raises
    pydantic's ValidationError (field `policies`) when a directive does not compile."""
    key = (
        tenant_id,
        None if policies is None else tuple(policies),
        None if tools is None else tuple(tools),
    )
    if key == (None, None, None):
        return base
    memo = base.event_overlays
    config = memo.get(key)
    if config is None:
        update: dict[str, object] = {}
        if tenant_id is not None:
            update["tenant_id"] = tenant_id
        if policies is not None:
            update["policies"] = list(policies)
        if tools is not None:  # a union: an event cannot remove the operator's tools
            known = set(base.irreversible_tools)
            added = [t for t in dict.fromkeys(tools) if t not in known]
            update["irreversible_tools"] = [*base.irreversible_tools, *added]
        # Re-validated so event policies are compiled and checked like configured ones; a
        # config that does not validate raises here every time (nothing is kept for it).
        config = MirrorConfig.model_validate({**base.model_dump(), **update})
        if len(memo) < OVERLAY_MEMO_SIZE:
            memo[key] = config
    return config
