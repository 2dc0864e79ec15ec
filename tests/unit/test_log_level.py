"""Issue 13: the default log level of every stack, the local one included, is INFO.

INFO is where the functions' and the bridge's operational lines live (verdicts, call ends,
skipped frames); a stack at WARNING drops them, one at DEBUG writes transcripts' detail. Pinned
here: the template's parameter, every function's and the bridge task's environment, the
deploy profiles in samconfig.toml, the bridge's entry point and the local stack's uvicorn.
"""

from __future__ import annotations

import sys
import tomllib
from typing import Any

import pytest

from mirror_dev.local import load_template
from tests.conftest import REPO_ROOT, TEMPLATE_PATH

pytestmark = pytest.mark.unit

LEVEL_VARS = ("LOG_LEVEL", "POWERTOOLS_LOG_LEVEL")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def test_the_template_defaults_to_info(template: dict[str, Any]) -> None:
    assert template["Parameters"]["LogLevel"]["Default"] == "INFO"


def test_every_function_and_the_bridge_take_the_parameter(template: dict[str, Any]) -> None:
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    for var in LEVEL_VARS:
        assert globals_env[var] == {"Ref": "LogLevel"}
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            env = (resource["Properties"].get("Environment") or {}).get("Variables") or {}
            for var in LEVEL_VARS:  # an override would set a level of its own
                assert env.get(var, {"Ref": "LogLevel"}) == {"Ref": "LogLevel"}, name
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in resource["Properties"]["ContainerDefinitions"]:
                env = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
                for var in LEVEL_VARS:
                    assert env[var] == {"Ref": "LogLevel"}, (name, var)


def test_no_deploy_profile_lowers_or_raises_it() -> None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())
    profiles = 0
    for env, commands in config.items():
        if not isinstance(commands, dict):
            continue
        overrides = commands.get("deploy", {}).get("parameters", {}).get("parameter_overrides")
        if overrides is None:
            continue
        profiles += 1
        pairs = dict(item.split("=", 1) for item in overrides.split())
        assert pairs.get("LogLevel", "INFO") == "INFO", env
    assert profiles >= 2


class _Recorder:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.kwargs = kwargs
        return self


def test_the_bridge_entry_point_serves_at_info(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.delenv("LOG_LEVEL", raising=False)
    run = _Recorder()
    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bridge"))
    sys.modules.pop("main", None)
    import main

    try:
        main.main()
    finally:
        sys.modules.pop("main", None)
    assert run.kwargs["log_level"] == "info"


@pytest.mark.parametrize(("env", "expected"), [(None, "info"), ("WARNING", "warning")])
def test_the_local_stack_serves_at_info_unless_told(
    monkeypatch: pytest.MonkeyPatch, env: str | None, expected: str
) -> None:
    import uvicorn

    from scripts.local_stack import BridgeServer, default_log_level

    if env is None:
        monkeypatch.delenv("LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("LOG_LEVEL", env)
    config = _Recorder()
    monkeypatch.setattr(uvicorn, "Config", config)
    monkeypatch.setattr(uvicorn, "Server", lambda config: None)
    BridgeServer(app=None, port=1)
    assert config.kwargs["log_level"] == expected
    assert default_log_level("debug") == "DEBUG"
