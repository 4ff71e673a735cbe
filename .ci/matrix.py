#!/usr/bin/env python3
"""The CI matrix: a fast subset of the suite on every supported Python, with the lowest
and with the newest versions of the dependencies that pyproject.toml allows.

    python3 .ci/matrix.py                          # all of it: 3 Pythons x {lowest, newest}
    python3 .ci/matrix.py --python 3.12 --deps lowest
    python3 .ci/matrix.py --jobs 1                 # one combination at a time
    python3 dev.py matrix ...                      # the same

*lowest* installs pyproject.toml's requirements (the package's and every extra's) under
the constraints of requirements/minimum.txt, which pins each ``>=`` bound; *newest* lets
pip pick the newest versions the ranges allow (re-resolved once a day, UTC). Each gets a
venv of its own under ``$PLURALITY_MATRIX_DIR`` (default ``~/.cache/flask-plurality/matrix``),
reused while its inputs (the Python, pyproject.toml, requirements/) are unchanged; the
checkout's ``flask_plurality`` is tested from the checkout (pytest's ``pythonpath``), so
one venv serves every clone. A Python that cannot be found is an error, never a skip.

The Redis tests use ``PLURALITY_TEST_REDIS_URL`` and **flush that database**. Since two
runs on one database would flush each other's keys, each combination first runs with no
Redis URL, then runs the tests that skipped for want of one again, one combination at a
time. Prints a table (combination -> passed/failed/skipped) and exits non-zero when a
combination failed, could not be installed or ran no test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13")
SETS = ("lowest", "newest")
MINIMUM = ROOT / "requirements" / "minimum.txt"
TEST_TOOLS = ROOT / "requirements" / "test.txt"
#: The fast subset: login and logout (with the body limit), the decorator, sessions on
#: files and on Redis, bearer tokens, the CLI, the HTTP client (requests and urllib3) and
#: the extras' metrics and tracing. A minute or two each on an idle machine.
SUBSET = (
    "tests/test_login.py",
    "tests/test_security.py",
    "tests/test_body_limit.py",
    "tests/test_decorator.py",
    "tests/test_sessions.py",
    "tests/test_redis.py",
    "tests/test_bearer.py",
    "tests/test_cli.py",
    "tests/test_upstream.py",
    "tests/test_tracing.py",
    "tests/test_sqlite_sessions.py",
    "tests/test_other_logins.py",
    "tests/test_dependencies.py",
)
#: Shown in the table: the versions a combination really ran with.
SHOWN = ("Flask", "Werkzeug", "Flask-Session", "cachelib", "requests", "urllib3", "redis", "PyJWT", "blinker")
#: How a Redis test says it skipped for want of PLURALITY_TEST_REDIS_URL (tests/helpers.py).
NO_REDIS = "PLURALITY_TEST_REDIS_URL is not set"


class MatrixError(Exception):
    """A combination that cannot run at all (no such Python, pip failed)."""


@dataclass
class Result:
    name: str
    counts: dict[str, int] = field(default_factory=lambda: {"passed": 0, "failed": 0, "skipped": 0, "error": 0})
    versions: dict[str, str] = field(default_factory=dict)
    problem: str = ""
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problem and not self.counts["failed"] and not self.counts["error"] and self.counts["passed"] > 0


# -- finding the Pythons ---------------------------------------------------------------


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/versions/(\d+)\.(\d+)\.(\d+)/", path)
    return tuple(int(part) for part in match.groups()) if match else (0,)


def python_candidates(version: str) -> list[str]:
    """Where a Python ``version`` may be: ``$PLURALITY_PYTHON_3_12`` (say), ``python3.12``
    on PATH, pyenv's versions (newest patch release first), the usual system places."""
    found: list[str] = []
    override = os.environ.get("PLURALITY_PYTHON_" + version.replace(".", "_"))
    if override:
        found.append(override)
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append(on_path)
    roots = {os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv"), "/root/.pyenv", "/opt/pyenv"}
    for root in sorted(r for r in roots if r):
        pattern = os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")
        found.extend(sorted(glob.glob(pattern), key=_version_key, reverse=True))
    found.extend(f"{prefix}/bin/python{version}" for prefix in ("/usr/local", "/usr", "/opt/python"))
    return list(dict.fromkeys(found))


def find_python(version: str) -> tuple[str, str]:
    """(path, full version) of a working Python ``version`` with venv; MatrixError if none."""
    tried = []
    for candidate in python_candidates(version):
        if not os.access(candidate, os.X_OK):
            tried.append(f"{candidate} (absent)")
            continue
        probe = subprocess.run(  # noqa: S603 - our own probe of a found interpreter
            [candidate, "-c", "import sys, venv, ensurepip; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        full = probe.stdout.strip()
        if probe.returncode == 0 and full.rsplit(".", 1)[0] == version:
            return candidate, full
        tried.append(f"{candidate} ({full or probe.stderr.strip()[-200:] or 'failed'})")
    raise MatrixError(
        f"no usable Python {version} (with venv and ensurepip) found; looked at:\n    "
        + "\n    ".join(tried)
        + f"\n  install it (pyenv install {version}), or point PLURALITY_PYTHON_{version.replace('.', '_')} at one"
    )


# -- what to install ---------------------------------------------------------------------


def declared_requirements() -> list[str]:
    """pyproject.toml's requirements: the package's and those of every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    own = re.compile(rf"^{re.escape(project['name'])}\b", re.I)
    return sorted(set(r for r in requirements if not own.match(r)))


def install_command(python: Path, deps: str) -> list[str]:
    command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input"]
    command += [*declared_requirements(), "-r", str(TEST_TOOLS)]
    if deps == "lowest":
        command += ["-c", str(MINIMUM)]
    return command


def venv_key(python: str, full_version: str, deps: str) -> str:
    """What a venv was built from; a change to any of it builds a new one."""
    inputs = [python, full_version, deps, *declared_requirements(), TEST_TOOLS.read_text(encoding="utf-8")]
    if deps == "lowest":
        inputs.append(MINIMUM.read_text(encoding="utf-8"))
    else:  # the newest versions: resolved again each day
        inputs.append(datetime.datetime.now(datetime.UTC).date().isoformat())
    return hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    configured = os.environ.get("PLURALITY_MATRIX_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "flask-plurality" / "matrix"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Held across threads and processes (two checkouts building the same venv)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_venv(name: str, python: str, full_version: str, deps: str, log: Path) -> Path:
    """The combination's venv, built unless one of the same inputs is ready."""
    base = cache_dir()
    target = base / f"{name}-{venv_key(python, full_version, deps)}"
    with file_lock(base / f"{name}.lock"):
        ready = target / ".matrix-ready"
        if ready.is_file():
            ready.touch()
            return target
        for old in base.glob(f"{name}-*"):  # an older build of this combination
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        with log.open("a") as out:
            out.write(f"$ {python} -m venv {target}\n")
            out.flush()
            made = subprocess.run([python, "-m", "venv", str(target)], stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
            if made.returncode != 0:
                raise MatrixError(f"{python} -m venv failed (see {log})")
            command = install_command(target / "bin" / "python", deps)
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            installed = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
            checked = subprocess.run(  # noqa: S603
                [str(target / "bin" / "python"), "-m", "pip", "check"], stdout=out, stderr=subprocess.STDOUT
            )
        if installed.returncode != 0 or checked.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise MatrixError(f"pip could not install the {deps} set (see {log})")
        ready.write_text(json.dumps({"python": python, "version": full_version, "deps": deps}))
    return target


def installed_versions(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    listed = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    return {_canonical(name): version for name, version in json.loads(listed.stdout).items()}


def _canonical(name: str) -> str:
    """A distribution's name as pip compares them: prometheus_client is prometheus-client."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in MINIMUM.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_canonical(name.strip())] = version.strip()
    return pins


# -- running one combination ---------------------------------------------------------------


def _pytest(
    python: Path, env: dict[str, str], report: Path, log: Path, only: Path | None = None
) -> dict[str, list[str]]:
    env = {**env, "MATRIX_REPORT": str(report), "PYTHONPATH": str(ROOT / ".ci")}
    if only is not None:
        env["MATRIX_ONLY"] = str(only)
    command = [str(python), "-m", "pytest", "-q", "-rfE", "-p", "matrix_report", "-p", "no:cacheprovider", *SUBSET]
    with log.open("a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    if not report.is_file():
        return {"(pytest)": ["error", f"pytest wrote no report (see {log})"]}
    return json.loads(report.read_text(encoding="utf-8"))


def run_combination(version: str, deps: str, redis_url: str | None, logs: Path) -> Result:
    name = f"py{version}-{deps}"
    result = Result(name)
    log = logs / f"{name}.log"
    log.write_text("")
    started = time.monotonic()
    try:
        python, full_version = find_python(version)
        venv = ensure_venv(name, python, full_version, deps, log)
        py = venv / "bin" / "python"
        versions = installed_versions(py)
        result.versions = {shown: versions.get(_canonical(shown), "-") for shown in SHOWN}
        result.versions["Python"] = full_version
        if deps == "lowest":  # the constraints hold: every pinned package at its pin
            wrong = {n: (v, versions.get(n)) for n, v in pinned_versions().items() if versions.get(n) != v}
            if wrong:
                raise MatrixError(f"not the pinned versions: {wrong}")
        env = {k: v for k, v in os.environ.items() if k not in ("PLURALITY_TEST_REDIS_URL", "PLURALITY_REQUIRE_REDIS")}
        env.pop("VIRTUAL_ENV", None)
        with tempfile.TemporaryDirectory(prefix=f"matrix-{name}-") as tmp:
            outcomes = _pytest(py, env, Path(tmp) / "first.json", log)
            again = sorted(n for n, (outcome, why) in outcomes.items() if outcome == "skipped" and NO_REDIS in why)
            if again and redis_url:
                (Path(tmp) / "redis.json").write_text(json.dumps(again))
                redis_env = {**env, "PLURALITY_TEST_REDIS_URL": redis_url}
                if os.environ.get("PLURALITY_REQUIRE_REDIS"):
                    redis_env["PLURALITY_REQUIRE_REDIS"] = os.environ["PLURALITY_REQUIRE_REDIS"]
                digest = hashlib.sha256(redis_url.encode()).hexdigest()[:12]
                with file_lock(cache_dir() / f"redis-{digest}.lock"):  # one run at a time flushes it
                    outcomes.update(
                        _pytest(py, redis_env, Path(tmp) / "redis-run.json", log, only=Path(tmp) / "redis.json")
                    )
        for nodeid, (outcome, _) in sorted(outcomes.items()):
            result.counts[outcome] += 1
            if outcome in ("failed", "error"):
                result.failures.append(nodeid)
        if again and not redis_url and os.environ.get("PLURALITY_REQUIRE_REDIS"):
            result.problem = f"{len(again)} Redis tests skipped: PLURALITY_TEST_REDIS_URL is not set"
    except MatrixError as exc:
        result.problem = str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        result.problem = f"{type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    return result


# -- the table ------------------------------------------------------------------------------


def summary(r: Result) -> str:
    failed = r.counts["failed"] + r.counts["error"]
    return f"{r.name} -> {r.counts['passed']} passed, {failed} failed, {r.counts['skipped']} skipped"


def table(results: list[Result]) -> str:
    columns = ["combination", "Python", *SHOWN, "passed", "failed", "skipped", "time"]
    rows = []
    for r in results:
        status = [str(r.counts["passed"]), str(r.counts["failed"] + r.counts["error"]), str(r.counts["skipped"])]
        rows.append(
            [
                r.name,
                r.versions.get("Python", "-"),
                *(r.versions.get(s, "-") for s in SHOWN),
                *status,
                f"{r.seconds:.0f}s",
            ]
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    for r in results:
        lines.append(f"{summary(r)}: {'ok' if r.ok else 'FAILED'}")
        if r.problem:
            lines.append(f"    {r.problem}")
        lines.extend(f"    {nodeid}" for nodeid in r.failures[:20])
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 .ci/matrix.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", choices=PYTHONS, help="only this Python (repeatable)")
    parser.add_argument("--deps", action="append", choices=SETS, help="only this dependency set (repeatable)")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="combinations at once (default: %(default)s)"
    )
    parser.add_argument("--logs", type=Path, default=ROOT / "artifacts" / "matrix", help="default: %(default)s")
    args = parser.parse_args(argv)
    pythons, sets = args.python or list(PYTHONS), args.deps or list(SETS)
    missing = []
    for version in pythons:  # loudly, before anything is built
        try:
            find_python(version)
        except MatrixError as exc:
            missing.append(str(exc))
    if missing:
        print("error: " + "\nerror: ".join(missing), file=sys.stderr)
        return 2
    redis_url = os.environ.get("PLURALITY_TEST_REDIS_URL")
    args.logs.mkdir(parents=True, exist_ok=True)
    combinations = [(v, d) for v in pythons for d in sets]
    print(f"matrix: {len(combinations)} combinations, {args.jobs} at a time; logs in {args.logs}", flush=True)
    done: list[Result] = []
    lock = threading.Lock()

    def one(combination: tuple[str, str]) -> Result:
        result = run_combination(*combination, redis_url, args.logs)
        with lock:
            print(f"  {summary(result)} in {result.seconds:.0f}s {result.problem}", flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(one, combinations))
    print(table(done), flush=True)
    return 0 if all(r.ok for r in done) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
