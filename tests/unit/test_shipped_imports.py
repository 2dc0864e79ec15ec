"""What ships imports no development tooling.

The Lambda layer is shared/mirror (layers/deps/mirror is a symlink to it) and the bridge image
copies shared/mirror, bridge/mirror_bridge and bridge/main.py; neither carries moto, pytest,
PyYAML, the tests or the development package `mirror_dev` (dev/), so an import of one of them
there would fail in production, maybe only on the path that reaches it. Every import in those
trees is read from the source (the AST: also the ones inside functions, which run later), and
the few allowed ones are listed below with their reason, each checked to still be there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (REPO_ROOT / "shared" / "mirror", REPO_ROOT / "bridge" / "mirror_bridge")
SHIPPED_FILES = (REPO_ROOT / "bridge" / "main.py",)

DEV_ONLY = frozenset(
    {
        "mirror_dev",  # dev/: the demo, moto helpers, in-process transport, scripted peers
        "tests",
        "benchmarks",
        "scripts",
        "moto",
        "pytest",
        "_pytest",
        "respx",
        "hypothesis",
        "schemathesis",
        "cfnlint",
        "statelint",
        "samcli",
        "mypy",
        "yaml",  # PyYAML: in .venv through cfn-lint, in neither the layer nor the image
        "unittest",  # unittest.mock's patching belongs to the tests and the local runs
    }
)
"""Top-level modules only the checkout's .venv has (requirements-dev.txt, dev/, tests/)."""


@dataclass(frozen=True)
class Allowed:
    path: str
    """Relative to the repository root."""
    module: str
    function: str
    """The function the import must sit in: never at module level, so importing the file
    never needs it."""
    why: str


ALLOWED = (
    Allowed(
        "bridge/mirror_bridge/wiring.py",
        "mirror_dev.in_process",
        "local_transport",
        "BRIDGE_MODE=local only; without mirror_dev (the image) a one-line SettingsError",
    ),
    Allowed(
        "shared/mirror/fixes/diff.py",
        "yaml",
        "_syntax",
        "a patched .yaml file is parsed when PyYAML is there, reported unparsed when not",
    ),
)


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    module: str
    function: str | None
    """The innermost enclosing function, None at module or class level."""


def shipped_files() -> list[Path]:
    files = [p for tree in SHIPPED for p in sorted(tree.rglob("*.py"))]
    return files + [p for p in SHIPPED_FILES if p.is_file()]


def imports(path: Path, root: Path = REPO_ROOT) -> Iterator[Import]:
    """Every absolute import in the file, with the function it sits in; `importlib.import_module`
    and `__import__` of a literal name count too."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)

    def visit(node: ast.AST, function: str | None) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(rel, child.lineno, alias.name, inner)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield Import(rel, child.lineno, child.module, inner)
            elif isinstance(child, ast.Call) and _dynamic_import(child):
                first = child.args[0]
                assert isinstance(first, ast.Constant)
                yield Import(rel, child.lineno, str(first.value), inner)
            yield from visit(child, inner)

    yield from visit(tree, None)


def _dynamic_import(call: ast.Call) -> bool:
    func = call.func
    named = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    return (
        named
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
    )


def dev_imports() -> list[Import]:
    return [
        found
        for path in shipped_files()
        for found in imports(path)
        if found.module.split(".")[0] in DEV_ONLY
    ]


def is_allowed(found: Import) -> bool:
    return any(
        a.path == found.path and a.module == found.module and a.function == found.function
        for a in ALLOWED
    )


def test_the_shipped_trees_import_no_development_tooling() -> None:
    assert len(shipped_files()) > 50  # both trees found (a wrong root would pass vacuously)
    offending = [f for f in dev_imports() if not is_allowed(f)]
    assert not offending, "development tooling imported by shipped code:\n" + "\n".join(
        f"  {f.path}:{f.line}: {f.module}"
        + (f" (in {f.function}())" if f.function else " (at import time)")
        for f in offending
    )


@pytest.mark.parametrize("allowed", ALLOWED, ids=lambda a: f"{a.path}:{a.module}")
def test_each_allowed_import_is_still_there_and_lazy(allowed: Allowed) -> None:
    found = [f for f in dev_imports() if f.path == allowed.path and f.module == allowed.module]
    assert found, f"{allowed.path} no longer imports {allowed.module}: drop it from ALLOWED"
    assert all(f.function == allowed.function for f in found), found


def test_the_walk_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    """The detector itself: module-level, in-function, from-imports and import_module."""
    source = tmp_path / "sample.py"
    source.write_text(
        "import moto.core\n"
        "from yaml import safe_load\n"
        "from . import sibling\n"
        "import json\n"
        "def later():\n"
        "    from mirror_dev.local import import_file\n"
        "    import importlib\n"
        "    return importlib.import_module('pytest')\n"
        "class Holder:\n"
        "    async def run(self):\n"
        "        __import__('tests.support')\n",
        encoding="utf-8",
    )
    found = {(f.module, f.function) for f in imports(source, tmp_path)}
    assert found == {
        ("moto.core", None),
        ("yaml", None),
        ("json", None),
        ("mirror_dev.local", "later"),
        ("importlib", "later"),
        ("pytest", "later"),
        ("tests.support", "run"),
    }


def test_neither_the_layer_nor_the_image_carries_the_development_package() -> None:
    """The layer is layers/deps/ as it stands (requirements plus the `mirror` symlink); the
    image copies what bridge/Dockerfile's COPY lines name. None of it is dev/ or the tests."""
    layer = REPO_ROOT / "layers" / "deps"
    assert (layer / "mirror").resolve() == (REPO_ROOT / "shared" / "mirror").resolve()
    assert {p.name for p in layer.iterdir() if p.name != "__pycache__"} == {
        "mirror",
        "requirements.txt",
    }
    dockerfile = (REPO_ROOT / "bridge" / "Dockerfile").read_text(encoding="utf-8")
    sources = [
        word
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for word in line.split()[1:-1]
        if not word.startswith("--")
    ]
    assert "shared/mirror" in sources and "bridge/mirror_bridge" in sources
    for source in sources:
        assert source.split("/")[0] not in ("dev", "tests", "scripts", "benchmarks"), source
