#!/usr/bin/env python3
"""Set up and run flask-plurality from a fresh clone, with nothing but Python 3.11+.

    python3 dev.py demo     # create .venv, install, start the sample app (no credentials)
    python3 dev.py test     # create .venv, install, run the whole test suite
                            # (test --cov: under coverage.py; fails under setup.cfg's fail_under)
    python3 dev.py lint     # ruff check and format, mypy --strict, import contracts, docs build
    python3 dev.py bench    # the benchmark table (bench --instructions: counted by callgrind)
    python3 dev.py dist     # build the sdist and the wheel into dist/, then twine check them
    python3 dev.py matrix   # the fast tests on Python 3.11-3.13 x the lowest and newest
                            # dependencies pyproject.toml allows (.ci/matrix.py; own venvs)

Every command first makes sure .venv exists and holds this checkout's dependencies:
``demo`` only the libraries the package and the sample app import (requirements/demo.txt;
the package runs from the checkout, unbuilt), the others every tool of requirements/dev.txt.
Extra arguments go to the underlying tool (``python3 dev.py test -k login``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> int:
    """Run a command to its end and return its exit code.

    Ctrl-C goes to the whole foreground process group, so the command gets it too and
    stops in its own way (the demo server says "Stopped."); dev.py waits for that
    instead of dying with a traceback of its own. SIGTERM (an IDE's stop button, a
    process manager) and SIGHUP (the terminal closed) reach dev.py alone: it passes them
    on and waits, so the command never outlives it (an orphaned demo would keep its port).
    """
    process = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env={**os.environ, **(env or {})})  # noqa: S603

    def pass_on(signum: int, frame: object) -> None:
        process.send_signal(signum)

    passed = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, pass_on) for signum in passed}
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


#: What each command installs into .venv; dev.txt holds everything demo.txt does.
REQUIREMENTS = {"demo": ROOT / "requirements" / "demo.txt", "dev": ROOT / "requirements" / "dev.txt"}


def _digest() -> str:
    """Of every file an install reads: pyproject.toml and all of requirements/ (dev.txt
    includes others with ``-r``), so a change to any of them installs again."""
    digest = hashlib.sha256()
    for path in [ROOT / "pyproject.toml", *sorted((ROOT / "requirements").glob("*.txt"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def setup(kind: str = "dev") -> None:
    """Create the venv and install ``requirements/<kind>.txt``, once per change of those
    files. The demo needs only the libraries the package and the sample app import (the
    package itself runs from the checkout: building it would double the install's time);
    the test, lint and docs tools come with the first command that needs them."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit("flask-plurality needs Python 3.11 or newer")
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = _digest()
    # dev.txt holds everything demo.txt does: an up-to-date dev install serves the demo.
    if any(
        (VENV / f".installed-{done}").is_file() and (VENV / f".installed-{done}").read_text() == digest
        for done in ("dev", kind)
    ):
        return
    print(f"installing {REQUIREMENTS[kind].relative_to(ROOT)} into .venv ...", flush=True)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if _run(*pip, "-r", REQUIREMENTS[kind]) != 0:
        sys.exit("pip install failed")
    (VENV / f".installed-{kind}").write_text(digest)


def _test_with_coverage(args: list[str]) -> int:
    """``coverage run -m pytest``, then ``coverage report`` (which fails under setup.cfg's
    ``fail_under``). coverage.py starts before pytest reads ``tests/conftest.py``, whose
    ``pytest_plugins`` turns on this package's own pytest plugin (which imports the
    package), so the import-time lines count as run. pytest's summary line is printed
    again after the report, so the output still closes on it."""
    cmd = [str(PY), "-m", "coverage", "run", "-m", "pytest", *args]
    summary = ""
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1) as pytest:  # noqa: S603
        assert pytest.stdout is not None
        for line in pytest.stdout:
            print(line, end="", flush=True)
            if line.strip():
                summary = line.rstrip("\n")
    status = pytest.returncode or _run(PY, "-m", "coverage", "report")
    print(summary, flush=True)
    return status


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in ("demo", "test", "lint", "bench", "dist", "matrix"):
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    if command == "matrix":  # venvs of its own, one per Python and dependency set
        return _run(sys.executable, ROOT / ".ci" / "matrix.py", *rest)
    setup("demo" if command == "demo" else "dev")
    if command == "demo":
        return _run(PY, "-m", "examples.app", *rest)
    if command == "test":
        if "--cov" in rest:
            return _test_with_coverage([arg for arg in rest if arg != "--cov"])
        return _run(PY, "-m", "pytest", *rest)
    if command == "bench":
        return _run(PY, "-m", "benchmarks", *rest)
    if command == "dist":
        dist = ROOT / "dist"
        for old in dist.glob("flask_plurality-*"):
            old.unlink()
        status = _run(PY, "-m", "build", "--outdir", dist, *rest)
        built = sorted(str(path) for path in dist.glob("flask_plurality-*"))
        return status or _run(PY, "-m", "twine", "check", "--strict", *built)
    status = _run(PY, "-m", "ruff", "check", ".")
    status |= _run(PY, "-m", "ruff", "format", "--check", ".")  # as .pre-commit-config.yaml formats
    status |= _run(PY, "-m", "mypy", "--strict", "flask_plurality")
    status |= _run(BIN / "lint-imports", "--no-cache")  # the import contracts in .importlinter
    if (ROOT / "docs" / "conf.py").exists():
        status |= _run(PY, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html")
    return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # during set-up: pip has stopped too
        sys.exit(130)
