"""Pull sections of README.rst into the docs, and check the docs' config table.

The README is the short page PyPI and GitHub show (install, quickstart, widget, a test
file); the docs hold the reference. Text lives in one place only: a docs page that needs
README's text pulls it in with ``.. readme-section:: Title``, which renders the README
section whose ``---`` heading starts with ``Title`` (several candidates: ``A|B``), without
its heading. At build start, the config table of ``docs/configuration.rst`` is checked
against ``flask_plurality.config.DEFAULTS`` (every key, every default): a mismatch is a
warning, which ``-W`` turns into a failed build.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

README = Path(__file__).resolve().parents[2] / "README.rst"
#: Where the config table lives (the first list-table of the page).
CONFIG_PAGE = Path(__file__).resolve().parents[1] / "configuration.rst"
log = logging.getLogger(__name__)

_UNDERLINE = re.compile(r"([=\-~^\"'`#*+])\1{2,}")
_TARGET = re.compile(r"^\.\. _([^:]+): \S+$")


def _headings(lines: list[str]) -> list[tuple[int, str]]:
    """(line index, underline character) of every section title."""
    found = []
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        match = _UNDERLINE.fullmatch(under)
        if title.strip() and not title.startswith((" ", "..")) and match and len(under) >= len(title.rstrip()):
            found.append((i, match.group(1)))
    return found


def section(title: str, *, intro: bool = False) -> tuple[int, list[str]] | None:
    """(first line number, lines) of README's section ``title``, heading excluded."""
    lines = README.read_text(encoding="utf-8").splitlines()
    heads = _headings(lines)
    wanted = [t.strip().lower() for t in title.split("|")]
    for n, (i, char) in enumerate(heads):
        name = lines[i].strip().lower()
        if not any(name == w or name.startswith(w) for w in wanted):
            continue
        end = len(lines)
        for j, other in heads[n + 1 :]:
            if intro or other == char or char == "=":
                end = j
                break
        body = lines[i + 2 : end]
        # Hyperlink targets defined elsewhere in the README that this section uses.
        text = "\n".join(body)
        for line in lines:
            target = _TARGET.match(line)
            if target and f"`{target.group(1)}`_" in text and line not in body:
                body += ["", line]
        return i + 3, body
    return None


def placeholder_left(name: str) -> bool:
    return f".. SECTION: {name}" in README.read_text(encoding="utf-8")


class ReadmeSection(SphinxDirective):
    """``.. readme-section:: Title|Other title`` with ``:placeholder: name`` for a
    section another contributor has not written yet, and ``:intro:`` for the text
    between a title and its first subsection."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {
        "placeholder": directives.unchanged,
        "intro": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(README))
        found = section(self.arguments[0], intro="intro" in self.options)
        if found is None:
            name = self.options.get("placeholder")
            if name and placeholder_left(name):
                return [nodes.paragraph(text="This part of the documentation is not written yet.")]
            log.warning("README.rst has no section titled %r", self.arguments[0], location=self.get_location())
            return []
        start, body = found
        content = StringList()
        for offset, line in enumerate(body):
            content.append(line, str(README), start + offset - 1)
        container = nodes.section() if any(_UNDERLINE.fullmatch(line) for line in body) else nodes.container()
        container.document = self.state.document
        nested_parse_with_titles(self.state, content, container)
        return list(container.children)


def _config_rows() -> dict[str, str]:
    """{key: default cell} from the list-table of ``docs/configuration.rst``."""
    lines = CONFIG_PAGE.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(".. list-table::")), None)
    if start is None:
        return {}
    table = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break  # the first line not indented ends the table
        table.append(line)
    rows: dict[str, str] = {}
    cells: list[str] = []
    for line in [*table, "   * - end"]:
        if line.startswith("   * - "):
            if len(cells) >= 2 and cells[0].startswith("``"):
                rows[cells[0].strip("`")] = cells[1]
            cells = [line[7:].strip()]
        elif line.startswith("     - "):
            cells.append(line[7:].strip())
    return rows


def _plain(cell: str) -> str:
    return cell.replace("``", "").strip().strip("\"'")


def check_config_table(app: Sphinx) -> None:
    """The docs' config table names every key of DEFAULTS with its default, and no other."""
    from flask_plurality.config import DEFAULTS

    rows = _config_rows()
    where = "configuration"  # the docname
    for key in DEFAULTS.keys() - rows.keys():
        log.warning("the config table lacks %s, which DEFAULTS has", key, location=where)
    for key in rows.keys() - DEFAULTS.keys():
        log.warning("the config table lists %s, which DEFAULTS does not have", key, location=where)
    for key in rows.keys() & DEFAULTS.keys():
        value: Any = DEFAULTS[key]
        expected = "required" if value is None and key in ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET") else value
        if _plain(rows[key]) != _plain(str(expected)):
            log.warning(
                "the config table gives %s the default %s; DEFAULTS says %r", key, rows[key], expected, location=where
            )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("readme-section", ReadmeSection)
    app.connect("builder-inited", check_config_table)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
