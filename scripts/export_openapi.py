"""Write the Api function's OpenAPI document to functions/api/openapi.json.

The committed file is what clients and the property test read; a unit test fails when it differs
from what the app serves at `GET /openapi.json`, so run this after changing a route or a model:

    .venv/bin/python scripts/export_openapi.py          # rewrite the file
    .venv/bin/python scripts/export_openapi.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
APP_PATH = REPO / "functions" / "api" / "app.py"
OPENAPI_PATH = REPO / "functions" / "api" / "openapi.json"


def load_app_module(name: str = "mirror_api_app_export") -> ModuleType:
    """The Api handler module, imported from its file (its directory is not a package)."""
    for path in (str(REPO / "shared"), str(REPO / "dev")):
        if path not in sys.path:
            sys.path.insert(0, path)
    from mirror_dev.local import import_file

    return import_file(APP_PATH, name)


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    args = parser.parse_args(argv)
    text = render(load_app_module().app.openapi())
    current = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.exists() else None
    if args.check:
        if current != text:
            print(f"{_shown(OPENAPI_PATH)} is stale: run scripts/export_openapi.py")
            return 1
        return 0
    if current != text:
        OPENAPI_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {_shown(OPENAPI_PATH)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
