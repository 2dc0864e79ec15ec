"""The bridge's settings from the environment: the choice settings (SIGNATURE_MODE, BRIDGE_MODE,
TTS_ENGINE) parse into their Literal values, and any other text fails at start-up naming the
setting, what it may be and what it was."""

from __future__ import annotations

from typing import Any

import pytest

from mirror_bridge.settings import Settings, SettingsError

pytestmark = pytest.mark.unit

BASE = {"PLIVO_AUTH_TOKEN": "a-token", "PUBLIC_BASE_URL": "https://bridge.example.com"}


def test_unset_choices_take_their_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.signature_mode, settings.mode, settings.tts_engine) == ("enforce", "aws", None)


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"SIGNATURE_MODE": "off"}, "signature_mode", "off"),
        ({"SIGNATURE_MODE": " log "}, "signature_mode", "log"),
        ({"BRIDGE_MODE": "LOCAL"}, "mode", "local"),
        ({"TTS_ENGINE": "Polly"}, "tts_engine", "polly"),
        ({"TTS_ENGINE": "offline"}, "tts_engine", "offline"),
        ({"TTS_ENGINE": "  "}, "tts_engine", None),
    ],
)
def test_a_choice_parses_into_its_value(env: dict[str, str], field: str, value: object) -> None:
    assert getattr(Settings.from_env(BASE | env), field) == value


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("SIGNATURE_MODE", "loud", "off, log or enforce"),
        ("BRIDGE_MODE", "cloud", "aws or local"),
        ("TTS_ENGINE", "say", "polly or offline"),
    ],
)
def test_any_other_choice_fails_naming_the_setting(name: str, value: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(BASE | {name: value})
    assert str(info.value) == f"{name} must be {allowed}: {value!r}"


def test_a_settings_object_built_directly_checks_its_choices_too() -> None:
    mode: Any = "cloud"  # what an untyped caller might pass
    with pytest.raises(SettingsError, match="BRIDGE_MODE must be aws or local: 'cloud'"):
        Settings(auth_token="t", public_base_url="https://b.example.com", mode=mode)
