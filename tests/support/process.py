"""A Python subprocess in the repository with a clean environment: what `make demo` runs, or a
module imported cold, unaffected by the developer's own AWS and Powertools settings."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def clean_python(
    args: list[str], *, strip: tuple[str, ...], timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python args` in the repository, in a fresh process whose environment has none of the
    caller's settings that start with `strip` (plus `env`); its output captured as text."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(strip)}
    clean.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
