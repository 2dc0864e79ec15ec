"""The `mirror` command's module imports none of its optional, heavy output libraries until a
command needs them (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_importing_the_cli_stays_light() -> None:
    code = (
        "import sys, mirror.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'matplotlib'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
