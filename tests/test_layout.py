"""The package's shape: the import contracts in .importlinter, and what they cannot see.

``lint-imports`` (run by ``python3 dev.py lint``) checks the contracts on the tree; these
tests check that the contracts would catch what they are for (a cycle put back, the
stand-in imported by the request path), and, at run time, the two imports of the
stand-in they let through because they sit inside functions off the request path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
OFF_THE_REQUEST_PATH = ("flask_plurality.fake", "flask_plurality.testing", "flask_plurality.pytest_plugin")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts on the package copied into ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / ".importlinter")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "flask_plurality", tmp_path / "flask_plurality", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_the_contracts_hold_on_the_tree(package_copy: Path) -> None:
    done = lint_imports(package_copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in done.stdout


CYCLES = "No import cycles between the package's modules"
LAYERS = "Each module imports only modules below it"
REQUEST_PATH = "The stand-in and the test helpers stay out of the request path"
STORES = "Inside the store layer, each backend's store builds on the shared parts only"


@pytest.mark.parametrize(
    ("module", "line", "broken", "kept"),
    [
        # A cycle put back: the leaf that every sibling reaches the extension through.
        ("state.py", "from . import extension", [CYCLES, LAYERS], []),
        # The old cycle: views reaching into the extension that registers them.
        ("views.py", "from . import extension", [CYCLES, LAYERS], [REQUEST_PATH]),
        # An import up the layers that makes no cycle.
        ("tokens.py", "from . import state", [LAYERS], [CYCLES, REQUEST_PATH]),
        # The stand-in on the request path, directly and through a module it imports.
        ("decorators.py", "from . import fake", [REQUEST_PATH], [CYCLES]),
        ("tokens.py", "from . import testing", [REQUEST_PATH, LAYERS], [CYCLES]),
        # One backend's store building on another's, and the protocol on an implementation.
        ("stores/redis.py", "from . import memcached", [STORES], [CYCLES, LAYERS, REQUEST_PATH]),
        ("stores/protocol.py", "from . import base", [STORES], [CYCLES, LAYERS, REQUEST_PATH]),
    ],
)
def test_the_contracts_catch_what_they_are_for(
    package_copy: Path, module: str, line: str, broken: list[str], kept: list[str]
) -> None:
    path = package_copy / "flask_plurality" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402, F401\n")
    done = lint_imports(package_copy)
    assert done.returncode == 1, done.stdout + done.stderr
    for contract in broken:
        assert f"{contract} BROKEN" in done.stdout, done.stdout
    for contract in kept:
        assert f"{contract} KEPT" in done.stdout, done.stdout


def test_serving_requests_loads_neither_the_stand_in_nor_the_test_helpers(tmp_path: Path) -> None:
    """Every module of the package but those three, an app, a login and protected requests:
    none of the three is imported. Demo mode then imports the stand-in (and only it)."""
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import flask_plurality
        from flask import Flask
        from flask_plurality import Plurality, plurality_required

        off = {OFF_THE_REQUEST_PATH!r}
        for module in pkgutil.iter_modules(flask_plurality.__path__, "flask_plurality."):
            if module.name not in off:
                importlib.import_module(module.name)

        def app(name, **config):
            app = Flask(name, instance_path={str(tmp_path)!r} + "/" + name)
            app.config.update(SECRET_KEY="x", PLURALITY_CLIENT_ID="id", PLURALITY_CLIENT_SECRET="secret", **config)
            Plurality(app)

            @app.get("/protected")
            @plurality_required
            def protected():
                return "yes"

            return app

        client = app("plain", PLURALITY_API_URL="http://127.0.0.1:9/api", PLURALITY_TIMEOUT=0.5).test_client()
        assert client.get("/protected").status_code == 401
        status = client.post("/plurality/login", json={{"token": "x.y.z"}}, headers={{"Origin": "http://localhost"}})
        assert status.status_code in (400, 401, 503), status.status_code
        print(sorted(name for name in off if name in sys.modules))
        demo = app("demo", PLURALITY_FAKE=True, TESTING=True).test_client()
        assert demo.get("/protected").status_code == 401
        print(sorted(name for name in off if name in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["[]", "['flask_plurality.fake']"], done.stdout


def test_bearer_reaches_few_modules() -> None:
    """The bearer module reads the header and asks the throttle, the answer cache (through
    the extension) and the revocation check: what is not about bearer tokens lives elsewhere."""
    import grimp

    graph = grimp.build_graph("flask_plurality", exclude_type_checking_imports=True)
    imported = graph.find_modules_directly_imported_by("flask_plurality.bearer")
    assert len(imported) <= 6, sorted(imported)
    assert {"flask_plurality.throttle", "flask_plurality.revocation"} <= imported


def _contract_modules(contract: str) -> set[str]:
    """The modules an ``.importlinter`` contract lists (its ``layers`` or ``source_modules``)."""
    import configparser
    import re

    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    section = parser[f"importlinter:contract:{contract}"]
    listed = section.get("layers") or section.get("source_modules") or ""
    return set(re.findall(r"flask_plurality(?:\.\w+)+", listed))


def _package_modules() -> set[str]:
    """Every module of the package, a subpackage counting as one (its own contract lists its parts)."""
    names = set()
    for path in (ROOT / "flask_plurality").iterdir():
        if path.suffix == ".py" and path.stem != "__init__":
            names.add(f"flask_plurality.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").is_file():
            names.add(f"flask_plurality.{path.name}")
    return names


def test_every_module_has_a_layer() -> None:
    """A module left out of the layers is held by no "imports only below" rule."""
    assert _package_modules() - _contract_modules("layers") == set()
    assert _contract_modules("layers") - _package_modules() == set()  # nor a layer for a module that is gone


def test_the_module_map_lists_every_module() -> None:
    """CONTRIBUTING.rst's module map names each module once, so a newcomer finds everything."""
    contributing = (ROOT / "CONTRIBUTING.rst").read_text()
    start = contributing.index("The module map")
    section = contributing[start : contributing.index("Running the tests", start)]
    missing = [name for name in sorted(_package_modules()) if f"``{name.split('.', 1)[1]}" not in section]
    assert missing == []


#: What users may import: the package, and the modules docs/api.rst names as public.
PUBLIC_MODULES = {
    "flask_plurality",
    "flask_plurality.signals",
    "flask_plurality.testing",
    "flask_plurality.pytest_plugin",
    "flask_plurality.metrics",
    "flask_plurality.openapi",
}


def test_the_sample_app_and_the_docs_import_only_the_public_api() -> None:
    """What the sample app and the docs show is what users copy: no internal module."""
    import re

    sources = [*sorted((ROOT / "examples").rglob("*.py")), ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]
    found = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in sources
        for name in re.findall(r"(?:from|import)\s+(flask_plurality(?:\.\w+)*)", path.read_text())
    }
    assert {(where, name) for where, name in found if name not in PUBLIC_MODULES} == set()
    assert ("examples/app.py", "flask_plurality") in found  # the search sees what it is for


# -- the checkout -------------------------------------------------------------------------

#: What a run of .ci/run (or of dev.py) writes inside the checkout.
WRITTEN_BY_A_RUN = [
    ".venv/pyvenv.cfg",
    "dist/flask_plurality-0.1.0.tar.gz",
    "docs/_build/html/index.html",
    "artifacts/matrix/log.txt",
    ".schemathesis/default/cache/crashes/manifest.json",
    "examples/instance/plurality-stand-in.sqlite3",
    ".coverage",
    ".hypothesis/examples/x",
    "flask_plurality.egg-info/PKG-INFO",
]


def test_what_a_run_writes_is_ignored_and_not_tracked() -> None:
    """``git status`` is as clean after ``bash .ci/run`` as before: nothing a run writes
    is tracked (a tracked file it rewrites would show as modified), and all of it is ignored."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout (an unpacked sdist)")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    areas = tuple(path.rsplit("/", 1)[0] + "/" if "/" in path else path for path in WRITTEN_BY_A_RUN)
    assert [path for path in tracked.stdout.split("\0") if path.startswith(areas)] == []
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(WRITTEN_BY_A_RUN),
        capture_output=True,
        text=True,
    )
    assert sorted(ignored.stdout.split()) == sorted(WRITTEN_BY_A_RUN)
