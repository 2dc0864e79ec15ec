"""The category rule of tests/categories.py, on made-up test modules run by pytester: a module
without a category marker, with two, or with the marker of another directory fails collection
(naming the module and the rule); a module marked as its directory collects and `-m` selects it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

pytest_plugins = ["pytester"]  # runs pytest on made-up modules

CONFTEST = "from tests.categories import pytest_make_collect_report  # noqa: F401\n"
INI = """
[pytest]
markers =
    unit: u
    integration: i
    e2e: e
"""


def make(pytester: pytest.Pytester, **modules: str) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    for path, body in modules.items():
        target = pytester.path / f"{path.replace('__', '/')}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("import pytest\n" + body + "\ndef test_x():\n    pass\n")


def test_a_module_marked_as_its_directory_collects_and_is_selected_by_its_marker(
    pytester: pytest.Pytester,
) -> None:
    other = "pytest.mark.filterwarnings('ignore')"  # another marker beside the category is fine
    make(
        pytester,
        unit__test_a="pytestmark = pytest.mark.unit\n",
        integration__test_b=f"pytestmark = [pytest.mark.integration, {other}]\n",
        e2e__test_c="pytestmark = pytest.mark.e2e\n",
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
    pytester.runpytest("-p", "no:cacheprovider", "-m", "unit").assert_outcomes(
        passed=1, deselected=2
    )


@pytest.mark.parametrize(
    ("path", "marker", "message"),
    [
        ("unit__test_none", "", "needs exactly one category marker"),
        ("unit__test_other", "pytestmark = pytest.mark.slow\n", "found: none"),
        (
            "unit__test_two",
            "pytestmark = [pytest.mark.unit, pytest.mark.integration]\n",
            "found: unit, integration",
        ),
        (
            "unit__test_wrong",
            "pytestmark = pytest.mark.integration\n",
            "marked 'integration' but lives in the 'unit' directory",
        ),
        ("e2e__test_wrong", "pytestmark = pytest.mark.unit\n", "lives in the 'e2e' directory"),
        ("test_outside", "pytestmark = pytest.mark.unit\n", "live in a category directory"),
    ],
)
def test_a_module_breaking_the_rule_fails_collection_naming_it(
    pytester: pytest.Pytester, path: str, marker: str, message: str
) -> None:
    make(pytester, unit__test_fine="pytestmark = pytest.mark.unit\n", **{path: marker})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)  # only the offender; a collection error stops the run
    assert result.ret == pytest.ExitCode.INTERRUPTED
    module = path.replace("__", "/") + ".py"
    result.stdout.fnmatch_lines([f"*ERROR collecting {module}*"])
    assert message in result.stdout.str()
