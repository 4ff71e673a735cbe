"""CPU instructions per request, counted by valgrind's callgrind: figures that repeat exactly.

``python -m benchmarks --instructions`` (``python3 dev.py bench --instructions``).

Wall-clock figures on a shared 2-core machine swing by several percent from one run to the
next; an instruction count does not, so a change of a few hundred instructions on the hot
path shows. For each store, the rows of ``benchmarks.app`` (the same app, sessions and
WSGI calls as the in-process column of ``benchmarks.per_request``) run in one process
under ``valgrind --tool=callgrind``:

1. a setup process (no valgrind) logs in against the stand-in, copies the session once per
   request to come (every request reads and writes a session of its own) and fills the
   shared answer cache for row 4;
2. the measured process builds the app, warms every row up, then, for each row, makes N
   and then N + 100 requests. Before each batch it calls ``os.getppid()`` and after it
   ``os.getpgrp()``: callgrind is started with ``--zero-before=getppid
   --dump-before=getpgrp``, so each batch's instructions land in a dump of their own;
3. a row's figure is (instructions of the N + 100 batch - those of the N batch) / 100:
   what the batch costs on top of its requests (the two marker calls, the loop) cancels.

``PYTHONHASHSEED=0`` in both processes, and the cyclic garbage collector off during each
batch (else a full collection, millions of instructions, falls into one batch or the other
depending on allocations made long before): the counts then repeat run after run.
``--package DIR`` measures the ``flask_plurality`` of another checkout (say a git
worktree of an older commit) with this checkout's benchmark app, to compare before and
after a change. The stand-in runs in this process, outside valgrind; the run checks that
Plurality is not called while measuring.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: libc functions the measured process calls around each batch, and nothing else calls.
ZERO, DUMP = "getppid", "getpgrp"


@dataclass(frozen=True)
class Plan:
    n: int  # requests in the first batch of each row
    step: int  # the second batch has n + step requests
    warmup: int  # requests per row before measuring


FULL = Plan(n=100, step=100, warmup=20)
QUICK = Plan(n=2, step=2, warmup=2)


@dataclass
class Spec:
    """What the setup and measured processes are told (as JSON)."""

    store: str
    instance: str
    redis_url: str | None
    api_url: str
    client_id: str
    client_secret: str
    token: str
    package: str | None
    plan: dict[str, int]
    cookies: dict[str, list[str]] = field(default_factory=dict)


def _use_package(package: str | None) -> str:
    """Import ``flask_plurality`` from ``package`` (a checkout's root) before anything else
    does; its submodules follow its ``__path__``. The benchmark app stays this checkout's."""
    if package:
        sys.path.insert(0, package)
        try:
            import flask_plurality
        finally:
            sys.path.remove(package)
    import flask_plurality

    return str(Path(flask_plurality.__file__).parent)


def _app(spec: Spec) -> Any:
    from .app import create_app

    return create_app(
        spec.store,
        instance_path=spec.instance,
        redis_url=spec.redis_url,
        api_url=spec.api_url,
        client_id=spec.client_id,
        client_secret=spec.client_secret,
    )


def setup(spec: Spec) -> Spec:
    """Log in, make every session the measured process will use, fill the answer cache."""
    _use_package(spec.package)
    from .app import ROWS
    from .per_request import STALE, _call, _copies, _environ, _sign_in

    app = _app(spec)
    plan = Plan(**spec.plan)

    def call(method: str, path: str, cookie: str | None = None, body: Any = None) -> Any:
        return _call(app, _environ(method, path, cookie, body))

    cookie = _sign_in(call, spec.token)
    per_row = plan.warmup + 2 * plan.n + plan.step
    spec.cookies = {path: _copies(app, cookie, per_row, stale=path == STALE) for path, _ in ROWS}
    stale = _copies(app, cookie, 1, stale=True)[0]
    status, _, body = call("GET", STALE, stale)  # the one upstream call: fills the shared answer cache
    if status != 200:
        raise RuntimeError(f"{STALE} answered {status}: {body[:200]!r}")
    _close(app)
    return spec


def measure(spec: Spec) -> None:
    """Runs under callgrind: warm up, then two marked batches per row (N, then N + step)."""
    _use_package(spec.package)
    from .app import ROWS
    from .per_request import _call, _environ, _start_response

    app = _app(spec)
    plan = Plan(**spec.plan)
    environs = {path: [_environ("GET", path, c) for c in spec.cookies[path]] for path, _ in ROWS}
    for path, _ in ROWS:
        for _ in range(plan.warmup):
            status, _, body = _call(app, environs[path].pop())
            if status != 200:
                raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
    for path, _ in ROWS:
        for count in (plan.n, plan.n + plan.step):
            batch = [environs[path].pop() for _ in range(count)]
            gc.collect()
            gc.disable()  # a full collection would land in one batch or the other: not per request
            os.getppid()  # callgrind: --zero-before=getppid
            for environ in batch:
                answer = app(environ, _start_response)
                b"".join(answer)
                answer.close()
            os.getpgrp()  # callgrind: --dump-before=getpgrp
            gc.enable()
            if not _start_response.status.startswith("200"):  # type: ignore[attr-defined]
                raise RuntimeError(f"{path} answered {_start_response.status}")  # type: ignore[attr-defined]
    _close(app)


def _close(app: Any) -> None:
    client = getattr(app.session_interface, "client", None)
    if client is not None:
        client.close()


def _child(mode: str, spec_path: Path, *, valgrind: list[str] | None = None) -> None:
    cmd = [*(valgrind or []), sys.executable, "-m", "benchmarks.instructions", mode, str(spec_path)]
    done = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def callgrind_command(workdir: Path) -> list[str]:
    """valgrind's callgrind, one dump per marked batch, the dumps in ``workdir``."""
    return [
        "valgrind",
        "--tool=callgrind",
        f"--zero-before={ZERO}",
        f"--dump-before={DUMP}",
        f"--callgrind-out-file={workdir}/callgrind.out.%p",
    ]


def _dumps(workdir: Path) -> list[int]:
    """Instructions of each batch, in order: callgrind's numbered dumps (``out.<pid>.<k>``)."""
    found = []
    for path in workdir.glob("callgrind.out.*.*"):
        match = re.search(r"^summary:\s+(\d+)", path.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no summary line in {path}")
        found.append((int(path.name.rsplit(".", 1)[1]), int(match.group(1))))
    return [count for _, count in sorted(found)]


def count(spec: Spec, workdir: Path) -> dict[str, float]:
    """Instructions per request of each row, for one store."""
    from .app import ROWS

    plan = Plan(**spec.plan)
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    _child("--setup", spec_path)
    _child("--measure", workdir / "spec.json.ready", valgrind=callgrind_command(workdir))
    counts = _dumps(workdir)
    if len(counts) != 2 * len(ROWS):
        raise RuntimeError(f"expected {2 * len(ROWS)} callgrind dumps, found {len(counts)}")
    return {path: (counts[2 * i + 1] - counts[2 * i]) / plan.step for i, (path, _) in enumerate(ROWS)}


def _describe(package_dir: str) -> str:
    """The package directory, and the last commit that changed it (+ "modified": it has
    uncommitted changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", package_dir, *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h", "--", ".")
    dirty = " + modified" if commit and git("status", "--porcelain", "--", ".") else ""
    return package_dir + (f" (as of git {commit}{dirty})" if commit else "")


def run(quick: bool = False, package: str | None = None, redis_url: str | None = None) -> str:
    """The instructions table: one row per ``benchmarks.app`` row, for each store."""
    if shutil.which("valgrind") is None:
        return "(skipped: valgrind is not installed; on Debian: apt-get install valgrind)"
    from flask_plurality.testing import FakePlurality

    from .app import ROWS
    from .servers import private_redis

    plan = QUICK if quick else FULL
    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        fake = stack.enter_context(FakePlurality())
        redis = redis_url or stack.enter_context(private_redis())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plurality-callgrind-")))
        for store in ["cachelib"] + (["redis"] if redis else []):
            here = workdir / store
            here.mkdir()
            spec = Spec(
                store=store,
                instance=str(here / "instance"),
                redis_url=redis,
                api_url=fake.url,
                client_id=fake.client_id,
                client_secret=fake.client_secret,
                token=fake.issue_token(),
                package=package,
                plan=asdict(plan),
            )
            calls = len(fake.calls)
            results[store] = count(spec, here)
            if len(fake.calls) != calls + 2:  # the setup's login and its one cache-filling call
                raise RuntimeError(f"{store}: Plurality was called while measuring: row 4 was not a cache hit")
    package_dir = str(Path(package).resolve() / "flask_plurality") if package else str(ROOT / "flask_plurality")
    lines = [
        f"Instructions per request (callgrind Ir): Python {platform.python_version()}, PYTHONHASHSEED=0; "
        f"flask_plurality from {_describe(package_dir)}.",
        f"Each row: (instructions of {plan.n + plan.step} requests - those of {plan.n}) / {plan.step}, "
        f"WSGI calls in one process after {plan.warmup} warm-up requests per row.",
        "",
        f"{'store':9} {'row':44} {'instr/req':>10} {'x (1)':>6} {'over (2)':>9}",
    ]
    for store, rows in results.items():
        for path, label in ROWS:
            lines.append(
                f"{store:9} {label:44} {rows[path]:10.0f} {rows[path] / rows['/bare']:6.3f} "
                f"{rows[path] - rows['/hand']:+9.0f}"
            )
    if not (redis_url or "redis" in results):
        lines.append("redis     (skipped: no redis-server on PATH, no PLURALITY_BENCH_REDIS_URL and no --redis-url)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--setup", "--measure"):  # the two child processes of ``count``
        path = Path(args[1])
        spec = Spec(**json.loads(path.read_text()))
        if args[0] == "--setup":
            Path(f"{path}.ready").write_text(json.dumps(asdict(setup(spec))))
        else:
            measure(spec)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few requests per row")
    parser.add_argument("--package", help="measure the flask_plurality of this checkout (its root directory)")
    parser.add_argument("--redis-url", help="use this Redis (its database must be yours) instead of a private one")
    options = parser.parse_args(args)
    print(run(quick=options.quick, package=options.package, redis_url=options.redis_url), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
