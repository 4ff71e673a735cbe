"""Sphinx configuration: furo, autodoc, and the README sections (see _ext/readme_sections.py).

Builds offline: no intersphinx, no remote images. ``python -m sphinx -W --keep-going -b
html docs docs/_build/html`` (``python3 dev.py lint``) must pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]

import flask_plurality  # noqa: E402

project = "flask-plurality"
author = "flask-plurality developers"
copyright = "flask-plurality developers"
release = flask_plurality.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "readme_sections"]
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"flask-plurality {release}"
html_static_path = ["_static"]
html_css_files = ["tables.css"]  # reference tables fit their column (tests/test_docs.py)

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"
