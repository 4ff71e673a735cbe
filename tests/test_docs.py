"""The docs as a reader sees them: built with ``sphinx -W`` (every warning an error, the
config table checked against DEFAULTS), then the configuration page in headless
Chromium at 1280 px: nothing wider than the window, no table wider than its column.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs-html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


MEASURE = """() => {
  const article = document.querySelector("article");
  const column = article.getBoundingClientRect();
  return {
    page: document.documentElement.scrollWidth,
    column: {left: column.left, right: column.right, width: article.clientWidth},
    tables: [...article.querySelectorAll("table")].map(table => {
      const box = table.getBoundingClientRect();
      const wrapper = table.parentElement;
      return {width: box.width, left: box.left, right: box.right,
              scrolls: wrapper.scrollWidth > wrapper.clientWidth, rows: table.rows.length};
    }),
  };
}"""


@pytest.mark.browser
@pytest.mark.parametrize("page_name", ["configuration", "endpoints", "cli"])
def test_reference_pages_fit_a_1280_px_window(chromium: Any, built_docs: Path, page_name: str) -> None:
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.goto((built_docs / f"{page_name}.html").as_uri())
    measured = page.evaluate(MEASURE)
    if page_name == "configuration":
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "docs-configuration-1280.png"), full_page=True)
    page.close()
    assert measured["page"] <= 1280, measured
    assert measured["tables"], f"{page_name} has no table to measure"
    column = measured["column"]
    for table in measured["tables"]:
        # No wider than the text column (1 px for sub-pixel rounding), inside it (furo's table
        # wrapper pads it by 3 px), and not scrolling inside its wrapper. Before tables.css the
        # configuration table was 852 px wide in a 736 px column.
        assert table["width"] <= column["width"] + 1, (table, column)
        assert table["left"] >= column["left"] - 1 and table["right"] <= column["right"] + 4, (table, column)
        assert not table["scrolls"], table
    if page_name == "configuration":
        from flask_plurality.config import DEFAULTS

        assert measured["tables"][0]["rows"] == len(DEFAULTS) + 1  # a header and one row per key


def test_readme_widget_snippet_loads_the_builds_the_sample_pins() -> None:
    """README's plain-page snippet and the sample app load the same React and widget
    builds (the sample pins them with Subresource Integrity), and the React snippet
    installs the same widget version."""
    import re

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from examples.app import WIDGET_SCRIPTS

    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme[readme.index("\nThe widget in your page\n") : readme.index("\nTesting your app\n")]
    assert re.findall(r'<script src="([^"]+)"', section) == [src for src, _ in WIDGET_SCRIPTS]
    version = re.search(r"smart-profile-wallet@([\d.]+)/", WIDGET_SCRIPTS[-1][0])
    assert version is not None
    assert f"npm install @plurality-network/smart-profile-wallet@{version.group(1)}" in section
    assert "https://developer.plurality.network" in readme and "Invalid domain" in section


def test_read_the_docs_builds_the_docs_as_lint_does() -> None:
    """The Documentation URL of the package's metadata is built by Read the Docs: with
    every warning an error, from docs/conf.py, with the docs tools and the package's
    extras that ``python3 dev.py lint`` builds with, on a Python the CI matrix tests."""
    rtd = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text(encoding="utf-8"))
    assert rtd["version"] == 2
    assert rtd["sphinx"] == {"builder": "html", "configuration": "docs/conf.py", "fail_on_warning": True}
    installs = rtd["python"]["install"]
    assert {"requirements": "requirements/docs.txt"} in installs
    [package] = [step for step in installs if step.get("method") == "pip"]
    assert package["path"] == "."
    dev = (ROOT / "requirements" / "dev.txt").read_text(encoding="utf-8")
    [extras] = re.findall(r"^-e \.\[([^\]]+)\]$", dev, re.M)
    assert sorted(package["extra_requirements"]) == sorted(extras.split(","))
    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["classifiers"]
    assert f"Programming Language :: Python :: {rtd['build']['tools']['python']}" in classifiers
