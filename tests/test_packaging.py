"""A plain ``pip install walhook`` has every library walhook's own code imports.

``walhook receiver`` once needed ``standardwebhooks``, which only the dev extra installed: on a
plain install every POST it took was a 500 with a traceback. This reads every import of the shipped
packages and checks that the distribution providing it is a core dependency in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("cdc", "publisher", "control", "models", "walhook")
# Files that run only with the ``embedded`` extra (the local Postgres and broker of the demo and tests).
EMBEDDED_ONLY = {"walhook/stack.py"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the shipped files importing it."""
    found: dict[str, set[str]] = {}
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in SHIPPED:
                        found.setdefault(top, set()).add(relative)
    return found


def test_every_library_the_code_imports_is_a_core_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(requirement) for requirement in project["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in _imports().items():
        if files <= EMBEDDED_ONLY:
            continue
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not distributions & core:
            missing[module] = sorted(files)
    assert missing == {}, f"imported but not in [project] dependencies: {missing}"
