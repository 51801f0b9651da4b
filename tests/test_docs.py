"""The documentation site: its generated reference pages follow the code, and it builds without a warning.

The site is built into a temporary directory, never into the checkout, which stays clean after ``make test``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
README_LINES = 200  # the README introduces; the site holds the rest


def generator() -> ModuleType:
    """``docs/gen_reference.py``, imported from its file (``docs/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_pages_are_what_the_generator_writes() -> None:
    for path, text in generator().pages().items():
        assert path.read_text() == text.rstrip("\n") + "\n", \
            f"{path.relative_to(ROOT)} is stale: run `make docs` (docs/gen_reference.py) and commit the result"


def test_the_configuration_reference_describes_every_key() -> None:
    page = (ROOT / "docs" / "reference" / "generated" / "configuration.md").read_text()
    undescribed = [row for row in page.splitlines() if row.startswith("| `") and row.endswith("|  |")]
    assert undescribed == [], "give these fields a description in models/settings.py:\n" + "\n".join(undescribed)


def test_the_site_builds_without_warnings(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    for page in ("index.html", "getting-started/index.html", "reference/configuration/index.html",
                 "reference/cli/index.html", "reference/api/index.html", "portal/list-1280.png"):
        assert (site / page).is_file(), f"the site has no {page}"


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_LINES
    assert "make demo" in readme and "make test" in readme
    targets = [target for target in re.findall(r"\]\(([^)#]+)\)", readme) if "://" not in target]
    assert targets, "the README links into the documentation"
    assert [target for target in targets if not (ROOT / target).exists()] == []
