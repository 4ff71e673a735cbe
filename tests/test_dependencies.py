"""What pyproject.toml declares is what the package imports, and its lower bounds are the
versions the CI matrix tests as "lowest" (requirements/minimum.txt)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def declared() -> list[Requirement]:
    """The package's requirements and every extra's, without the package itself."""
    lines = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        lines.extend(extra)
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if canonicalize_name(r.name) != canonicalize_name(PROJECT["name"])]


def lower_bound(requirement: Requirement) -> str | None:
    bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return bounds[0] if len(bounds) == 1 else None


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / "minimum.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.]*)", line)
        assert match, f"requirements/minimum.txt: {line!r} is not name==version"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"requirements/minimum.txt pins {name} twice"
        found[name] = match.group(2)
    return found


def test_every_declared_requirement_has_one_lower_bound() -> None:
    assert [str(r) for r in declared() if lower_bound(r) is None] == []


def test_minimum_txt_pins_exactly_pyprojects_lower_bounds() -> None:
    """One pin per declared requirement, at its ``>=`` bound: raising a bound in one
    file and not in the other fails here. (One name in two extras has one bound.)"""
    bounds: dict[str, set[str]] = {}
    for requirement in declared():
        bounds.setdefault(canonicalize_name(requirement.name), set()).add(str(lower_bound(requirement)))
    assert {name: found for name, found in bounds.items() if len(found) > 1} == {}
    expected = {name: Version(found.pop()) for name, found in bounds.items()}
    assert {name: Version(pin) for name, pin in pins().items()} == expected


def test_no_development_tools_are_published() -> None:
    """Users get the package and the extras they ask for; sphinx, mypy and the test
    tools live in requirements/ (dev.py installs them)."""
    assert set(PROJECT["optional-dependencies"]) == {
        "redis",
        "sqlalchemy",
        "memcached",
        "metrics",
        "tracing",
        "testing",
        "flask-login",
    }
    # The pytest plugin is opt-in: no pytest11 entry point. The one entry point is the
    # `flask plurality` group, found before Flask loads the app.
    assert PROJECT["entry-points"] == {"flask.commands": {"plurality": "flask_plurality.cli:plurality_cli"}}


def imported_modules() -> set[str]:
    """Top-level names the package's modules import, other than the standard library's."""
    names: set[str] = set()
    for path in (ROOT / "flask_plurality").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("flask_plurality", "_typeshed")}


def test_the_package_declares_every_library_it_imports() -> None:
    """werkzeug, click and urllib3 arrive with Flask and requests, but the package
    imports them (and subclasses urllib3's pools): it declares the versions it needs."""
    names = {canonicalize_name(r.name) for r in declared()}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(imported_modules()):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & names:
            undeclared[module] = sorted(dists) or "no installed distribution provides it"
    assert undeclared == {}
    assert {"flask", "werkzeug", "click", "urllib3", "requests", "jwt", "redis"} <= imported_modules()


def test_upper_bounds_only_where_the_package_uses_internals() -> None:
    """A cap without a known break only keeps users off fixes; the newest run of the CI
    matrix tests what the open ranges allow. Flask-Session's and urllib3's internals are
    used (flask_session_shim.py, client.py), so their next release lines are kept out."""
    capped = {canonicalize_name(r.name) for r in declared() if any(s.operator in ("<", "<=") for s in r.specifier)}
    assert capped == {"flask-session", "urllib3"}


def test_the_classifiers_name_every_python_the_ci_matrix_runs() -> None:
    matrix = ROOT / ".ci" / "matrix.py"
    if not matrix.is_file():
        pytest.skip("an sdist has no .ci/: a clone's check")
    [versions] = re.findall(r"^PYTHONS = \(([^)]*)\)", matrix.read_text(encoding="utf-8"), re.M)
    tested = {v.strip().strip('"') for v in versions.split(",") if v.strip()}
    named = {
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert named == tested and tested
    assert PROJECT["requires-python"] == f">={min(tested, key=Version)}"


def test_the_demo_installs_what_the_package_and_the_sample_app_need() -> None:
    """``python3 dev.py demo`` installs requirements/demo.txt, not the package (it runs
    from the checkout): the package's requirements and the sample app's extra, as
    pyproject.toml declares them, nothing of the test, lint or docs tools."""
    lines = (ROOT / "requirements" / "demo.txt").read_text(encoding="utf-8").splitlines()
    demo = {str(Requirement(line)) for line in lines if line.strip() and not line.startswith("#")}
    wanted = {
        str(Requirement(line)) for line in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["sqlalchemy"]
    }
    assert demo == wanted
