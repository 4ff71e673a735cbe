"""From ``pip install`` to a passing test suite, as a new user meets the package.

Builds the sdist and the wheel, checks them with ``twine check --strict`` (what PyPI
renders), installs the wheel with the ``testing`` extra into a fresh virtual
environment, and in an empty directory runs README.rst's quickstart (the run command,
then its curl login) and README.rst's test file: without README's ``conftest.py`` (the
plugin is opt-in: its fixtures are missing), then with it, three runs in a row. The code is taken
from README.rst's own code blocks, so README and this test cannot drift apart.

It needs the package index (pip installs Flask and friends into the new environment);
``.ci/run`` sets ``PLURALITY_REQUIRE_PACKAGING=1`` so that an unreachable index fails
here instead of skipping.
"""

from __future__ import annotations

import email
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from helpers import free_port, wait_for

import flask_plurality

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.rst").read_text(encoding="utf-8")

pytestmark = pytest.mark.slow


def readme_blocks(title: str, language: str) -> list[str]:
    """The ``language`` code blocks of README section ``title``, dedented, in order."""
    match = re.search(rf"^{re.escape(title)}\n-+\n(.*?)(?=^\S[^\n]*\n-{{3,}}\n|\Z)", README, re.M | re.S)
    assert match, f"README.rst has no section {title!r}"
    blocks = re.findall(rf"^\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)", match.group(1), re.M)
    return [textwrap.dedent(block).strip() + "\n" for block in blocks]


def run(*cmd: str | Path, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload, no-any-return]


def user_env(venv: Path) -> dict[str, str]:
    """A shell of someone who just activated the new virtual environment: none of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_", "FLASK_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    version = flask_plurality.__version__
    files = {
        "sdist": out / f"flask_plurality-{version}.tar.gz",
        "wheel": out / f"flask_plurality-{version}-py3-none-any.whl",
    }
    assert all(path.is_file() for path in files.values()), sorted(out.iterdir())
    return files


def test_twine_check_passes_for_both(dist: dict[str, Path]) -> None:
    """PyPI must be able to render the README: plain reStructuredText, no Sphinx roles."""
    checked = run(sys.executable, "-m", "twine", "check", "--strict", dist["sdist"], dist["wheel"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_wheel_metadata(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"flask_plurality-{flask_plurality.__version__}.dist-info"
        metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
        extras = metadata.get_all("Provides-Extra", [])
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert {"flask_plurality/py.typed", "flask_plurality/pytest_plugin.py", f"{info}/licenses/LICENSE"} <= names
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    assert metadata["Version"] == flask_plurality.__version__  # one version, read from __version__
    assert metadata["License-Expression"] == "MIT"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Source", "Changes"} <= set(urls), urls
    assert all(url.startswith("https://") for url in urls.values())
    # The pytest plugin is opt-in (no pytest11 entry point); the `flask plurality` group is
    # found before the app loads; no development tools published.
    assert entry_points.split() == ["[flask.commands]", "plurality", "=", "flask_plurality.cli:plurality_cli"]
    assert sorted(extras) == ["flask-login", "memcached", "metrics", "redis", "sqlalchemy", "testing", "tracing"]
    requires = metadata.get_all("Requires-Dist", [])
    assert 'extra == "testing"' in " ".join(requires)
    assert not [r for r in requires if re.match(r"(sphinx|mypy|playwright|gevent|ruff|coverage)\b", r, re.I)]


def test_sdist_ships_the_package_docs_and_test_suite(dist: dict[str, Path]) -> None:
    """A packager runs the tests from the sdist: it holds them with everything they read."""
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"LICENSE", "README.rst", "CHANGES.rst", "pyproject.toml", "flask_plurality/py.typed"} <= names
    assert {"docs/conf.py", "docs/configuration.rst", "docs/_static/tables.css"} <= names
    tracked = subprocess.run(
        ["git", "ls-files", "tests", "examples", "benchmarks", "requirements"], cwd=ROOT, capture_output=True, text=True
    )
    suite = set(tracked.stdout.split()) if tracked.returncode == 0 else set()
    suite |= {"tests/conftest.py", "tests/helpers.py", "setup.cfg", "CONTRIBUTING.rst", ".importlinter", "dev.py"}
    assert suite - names == set()
    assert not any(name.startswith((".ci/", ".github/", "docs/_build", "examples/instance/")) for name in names)
    assert not any(name.endswith((".pyc", "/.env")) for name in names)


@pytest.mark.timeout(600)
def test_the_sdists_own_tests_pass_unpacked(dist: dict[str, Path], tmp_path: Path) -> None:
    """Unpacked anywhere, the sdist's tests run against the sdist's own package (pytest's
    ``pythonpath = .``, from its setup.cfg): a fast part of them here, the whole suite with
    ``python3 dev.py test`` in the unpacked directory."""
    with tarfile.open(dist["sdist"]) as sdist:
        sdist.extractall(tmp_path, filter="data")
    [unpacked] = tmp_path.iterdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_REQUIRE_", "PYTHONPATH"))}
    tests = ["tests/test_layout.py", "tests/test_dependencies.py", "tests/test_login.py"]
    result = run(sys.executable, "-m", "pytest", "-q", *tests, cwd=unpacked, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b\d{2,} passed\b", result.stdout) and " failed" not in result.stdout, result.stdout[-500:]


def test_readmes_install_lines_work_before_the_first_release(tmp_path: Path) -> None:
    """The quickstart's first command is one that works today: from a clone (this one,
    where README's ``git clone`` puts it), and the bare name only once released."""
    [install] = [block for block in readme_blocks("Quickstart", "sh") if "pip install" in block]
    lines = [line.split("#", 1)[0].strip() for line in install.splitlines()]
    clone = next(line for line in lines if line.startswith("git clone "))
    assert clone.rsplit("/", 1)[1] == "flask-plurality"
    assert "pip install ./flask-plurality" in lines and "pip install flask-plurality" not in lines
    [from_url] = [line for line in lines if "git+" in line]
    assert clone.split()[2] in from_url
    (tmp_path / "flask-plurality").symlink_to(ROOT)  # the clone, as README's git clone names it
    command = next(line for line in lines if line.startswith("pip install ./")).split()
    report = tmp_path / "report.json"
    dry = run(sys.executable, "-m", *command, "--dry-run", "--no-deps", "--report", report, cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    [would] = json.loads(report.read_text())["install"]
    assert (
        would["metadata"]["name"] == "flask-plurality" and would["metadata"]["version"] == flask_plurality.__version__
    )


@pytest.mark.timeout(900)  # a pip install and four pytest runs: past the suite's 120 s on a busy machine
def test_readme_quickstart_and_test_file_against_the_installed_wheel(dist: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    env = user_env(venv)
    installed = run(venv / "bin" / "python", "-m", "pip", "install", f"{dist['wheel']}[testing]", env=env)
    if installed.returncode != 0:
        reason = f"pip could not install the wheel's dependencies:\n{installed.stderr[-2000:]}"
        if os.environ.get("PLURALITY_REQUIRE_PACKAGING") or "No matching distribution" not in installed.stderr:
            pytest.fail(reason)
        pytest.skip(reason)  # no package index here

    project = tmp_path / "project"  # an empty directory, nowhere near the checkout
    project.mkdir()
    [app_py] = readme_blocks("Quickstart", "python")
    [conftest_py, test_app_py] = readme_blocks("Testing your app", "python")
    (project / "app.py").write_text(app_py)
    (project / "test_app.py").write_text(test_app_py)

    # The quickstart's run command, as written, on a port of the test's own.
    shell = readme_blocks("Quickstart", "sh")
    [run_line] = [line for block in shell for line in block.splitlines() if "FLASK_PLURALITY_FAKE" in line]
    [try_it] = [block for block in shell if "curl" in block]
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ["bash", "-c", f"exec env {run_line} --port {port}"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(base + "/dashboard", server, log).status_code == 401  # the app answers
        # README's curl login, as written, on that port.
        login = run("bash", "-euc", try_it.replace("127.0.0.1:5000", f"127.0.0.1:{port}"), cwd=project, env=env)
        assert login.returncode == 0, login.stdout + login.stderr
        login_answer, dashboard = login.stdout.split("\n", 1)
        logged_in = json.loads(login_answer)
        assert logged_in["authenticated"] is True and logged_in["profile"]["email"] == "demo@example.com"
        assert json.loads(dashboard) == {"email": "demo@example.com", "user": logged_in["profile"]["id"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    instance_before = sorted(p.name for p in (project / "instance").rglob("*"))
    assert "plurality_sessions" in instance_before  # the server's own store, with the login in it

    # README's test file, as written: without README's conftest.py the wheel's plugin does
    # not load (no fixtures); with it, three runs in a row pass (failed-login counters once
    # crossed runs and made the third fail).
    expected = test_app_py.count("\ndef test_")
    assert expected >= 5
    without = run(venv / "bin" / "pytest", "-q", "-p", "no:cacheprovider", cwd=project, env=env)
    assert without.returncode != 0 and "fixture 'plurality_config' not found" in without.stdout, without.stdout
    (project / "conftest.py").write_text(conftest_py)
    for attempt in range(3):
        tested = run(venv / "bin" / "pytest", "-q", "-p", "no:cacheprovider", cwd=project, env=env)
        assert tested.returncode == 0, f"run {attempt + 1}:\n{tested.stdout[-4000:]}{tested.stderr[-2000:]}"
        assert f"{expected} passed" in tested.stdout, tested.stdout
    # The tests did not write into the instance folder the development server uses.
    assert sorted(p.name for p in (project / "instance").rglob("*")) == instance_before
