"""The test categories, enforced at collection: every test module carries exactly one category
marker (`pytestmark = pytest.mark.unit`, `integration` or `e2e`), and it names the directory the
module lives in (tests/unit, tests/integration, tests/e2e). A module that breaks either rule is a
collection error, so `pytest -m unit` can be trusted to run the whole fast set and nothing else.

- unit: pure and in-process (no moto, no sockets, no subprocesses);
- integration: moto, loopback sockets, uvicorn, subprocesses, `sam`/cfn-lint;
- e2e: a whole call, or a whole demo, through the stack.

The root conftest imports the hook below; tests/unit/test_categories.py checks it with pytester.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

CATEGORIES = ("unit", "integration", "e2e")


def category_problem(module: pytest.Module) -> str | None:
    """Why `module` breaks the rules, or None when it carries the marker of its directory."""
    marks = [m.name for m in module.own_markers if m.name in CATEGORIES]
    try:
        parts = module.path.relative_to(module.config.rootpath).parts[:-1]
    except ValueError:  # a module outside the rootdir: judge it by its absolute path
        parts = module.path.parts[:-1]
    directories = [p for p in parts if p in CATEGORIES]
    expected = directories[-1] if directories else None
    if len(marks) != 1:
        found = ", ".join(marks) if marks else "none"
        return (
            f"{module.path}: a test module needs exactly one category marker "
            f"(pytestmark = pytest.mark.{expected or 'unit'}; one of {', '.join(CATEGORIES)}); "
            f"found: {found}"
        )
    if expected is None:
        return (
            f"{module.path}: test modules live in a category directory "
            f"({', '.join('tests/' + c for c in CATEGORIES)})"
        )
    if marks[0] != expected:
        return (
            f"{module.path}: marked {marks[0]!r} but lives in the {expected!r} directory "
            f"(move it, or fix its marker)"
        )
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    report = yield
    if isinstance(collector, pytest.Module) and report.passed:
        problem = category_problem(collector)
        if problem is not None:
            report.outcome = "failed"
            report.longrepr = problem
            report.result = []
    return report
