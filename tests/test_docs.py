"""The documentation: a README read in minutes, and a site that builds without a broken link.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the navigation,
an API object mkdocstrings cannot find and a docstring it cannot parse; it runs when the
``[docs]`` extra is installed (``.ci/run`` installs it) and skips, saying so, otherwise.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing_docs_packages() -> list[str]:
    missing = []
    for name in DOCS_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def test_the_site_builds_strictly(tmp_path):
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install -e '.[docs]' to build "
                    f"the documentation site in the tests")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})   # mkdocs' banner about its successor
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "sampling" / "index.html").read_text()
    for name in ("inpaint_any_size", "sample_loop", "SAMPLERS", "RunOptions"):
        assert f'id="priorpaint.sampling.{name}"' in api, name   # rendered from the docstrings


def test_the_readme_is_short_shows_its_figure_and_links_every_page_of_the_site():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    nav = re.findall(r":\s+([\w/.-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), flags=re.M)
    assert len(nav) >= 15, nav
    linked = set(re.findall(r"\]\(docs/([\w/.-]+\.md)\)", readme))
    assert set(nav) - {"index.md"} <= linked, sorted(set(nav) - linked)
    for page in nav:
        assert (REPO / "docs" / page).is_file(), page
    assert not re.search(r"(?<![\w/])#\d+\b", readme)   # no issue numbers
    figure = re.search(r"!\[[^\]]*\]\((docs/images/[\w.]+\.png)\)", readme)
    assert figure and (REPO / figure.group(1)).is_file()
    assert "scripts/readme_figure.py" in readme and (REPO / "scripts/readme_figure.py").is_file()
