"""Fixtures of the unit tests that read template.yaml: the parsed template and its Resources,
parsed once per module (a test may not change them)."""

from __future__ import annotations

from typing import Any

import pytest

from mirror_dev.local import load_template
from tests.conftest import TEMPLATE_PATH


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]
