"""What metrics and tracing add to a protected request, in CPU instructions (callgrind).

    python -m benchmarks.observability [--quick] [--baseline REV]

Wall-clock ratios on a shared 2-core machine swing by several percent between runs, far
more than the difference measured here, so this counts instructions instead: each row
runs in a fresh ``valgrind --tool=callgrind`` process twice, with N and N+100 requests
(everything else identical: the same setup, the same sessions prepared), and the
difference divided by 100 is one request's instructions, start-up and setup cancelled.

- off: no metrics, and opentelemetry cannot be imported (as when not installed);
- metrics (``--modes off,metrics,on``): ``init_metrics`` only, opentelemetry not importable;
- on: ``init_metrics`` into a registry, and an OpenTelemetry SDK tracer provider that
  records every span (a ``SimpleSpanProcessor`` into an in-memory exporter);
- ``--baseline REV``: also the package as of a git revision (before this module), off.

Rows, in benchmarks.app's app called as a WSGI callable, with sessions on files:

1. ``@plurality_required``, no revalidation due: the hot path (no signal, no span);
2. interval revalidation answered by the shared answer cache (a signal and a span);
3. ``revalidate=True``: a call to the stand-in over loopback HTTP on every request.

The child mode (``--child MODE ROW N``) is what runs under valgrind.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, str]] = [
    ("/plurality", "1 @plurality_required, hot path"),
    ("/interval", "2 interval revalidation, cache hit"),
    ("/always", "3 revalidate=True, upstream call"),
]
WARMUP = 20
STEP = 100


def _child(mode: str, path: str, count: int, total: int) -> None:
    """Set up an app, then serve ``count`` requests to ``path`` (``total`` prepared)."""
    if mode in ("off", "metrics"):
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # as if not installed
    from flask_plurality import current_profile, plurality_required
    from flask_plurality.testing import FakePlurality

    from . import loadgen
    from .app import create_app
    from .per_request import _call, _copies, _environ

    fake = FakePlurality().start()
    instance = tempfile.mkdtemp(prefix="plurality-obs-")
    app = create_app(
        "cachelib",
        instance_path=instance,
        api_url=fake.url,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
    )

    @app.get("/always")
    @plurality_required(revalidate=True)
    def always() -> str:
        return current_profile.id

    if mode in ("metrics", "on"):
        from prometheus_client import CollectorRegistry

        app.extensions["plurality"].init_metrics(app, registry=CollectorRegistry())
    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        trace.set_tracer_provider(provider)

    def call(method: str, where: str, cookie: str | None = None, body: Any = None) -> tuple[int, Any, bytes]:
        return _call(app, _environ(method, where, cookie, body))

    status, headers, body = call("POST", "/plurality/login", body={"token": fake.issue_token()})
    if status != 200:
        raise RuntimeError(f"login failed: {status} {body[:200]!r}")
    cookie = loadgen.session_cookie(headers)
    cookies = _copies(app, cookie, total + WARMUP + 1, stale=path == "/interval")
    if path == "/interval":  # one stale session fills the shared answer cache
        assert call("GET", path, cookies.pop())[0] == 200
    environs = [_environ("GET", path, c) for c in cookies]
    for _ in range(WARMUP):
        status, _, body = _call(app, environs.pop())
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
    calls = len(fake.calls)
    if path != "/always":
        fake.stop()  # its polling thread would add instructions that depend on wall time
    gc.collect()
    gc.freeze()  # what setup allocated (more with metrics on) moves no collection into the loop
    for environ in environs[:count]:
        answer = app(environ, lambda status, headers, exc_info=None: None)
        b"".join(answer)
        answer.close()  # type: ignore[attr-defined]
    expected = count if path == "/always" else 0
    if len(fake.calls) - calls != expected:
        raise RuntimeError(f"{path}: {len(fake.calls) - calls} upstream calls while measuring, not {expected}")
    fake.stop()  # (again: harmless)
    shutil.rmtree(instance, ignore_errors=True)


def _instructions(mode: str, path: str, count: int, total: int, out: Path, cwd: Path = ROOT) -> int:
    """Instructions of one child process under callgrind (every thread)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--trace-children=no",
        sys.executable,
        "-m",
        "benchmarks.observability",
        "--child",
        mode,
        path,
        str(count),
        str(total),
    ]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind run failed ({mode} {path} {count}):\n{done.stderr[-3000:]}")
    match = re.search(r"^(?:summary|totals):\s*(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def _checkout(revision: str, into: Path) -> Path:
    """The package as of ``revision`` beside this benchmarks folder: run from there, the
    child imports that package (the current folder comes first on ``sys.path``)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, "flask_plurality"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    shutil.copytree(ROOT / "benchmarks", into / "benchmarks")
    return into


def run(quick: bool = False, baseline: str | None = None, rows: str = "", modes: str = "off,on") -> str:
    """The table: instructions per request of each row in each mode, and the ratios to "off"."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    base = 20 if quick else 100
    total = base + STEP
    chosen = [ROWS[int(n) - 1] for n in rows.split(",")] if rows else ROWS
    columns = [m for m in modes.split(",") if m != "off"]
    header = f"{'row':40} {'off':>11}" + "".join(f" {m:>11} {m + '/off':>11}" for m in columns)
    if baseline:
        header += f" {baseline[:11]:>11} {'off/' + baseline[:7]:>11}"
    lines = [f"instructions per request (callgrind; runs of {base} and {total} requests, difference / {STEP})", header]
    with tempfile.TemporaryDirectory() as tmp:
        before = _checkout(baseline, Path(tmp, "baseline")) if baseline else None
        for path, label in chosen:
            per: dict[str, float] = {}
            for mode in ["off", *columns] + (["before"] if before else []):
                child, cwd = ("off", before) if mode == "before" and before else (mode, ROOT)
                short = _instructions(child, path, base, total, Path(tmp, f"{mode}-short.out"), cwd)
                long = _instructions(child, path, total, total, Path(tmp, f"{mode}-long.out"), cwd)
                per[mode] = (long - short) / STEP
            line = f"{label:40} {per['off']:>11,.0f}"
            line += "".join(f" {per[m]:>11,.0f} {per[m] / per['off'] - 1:>+11.2%}" for m in columns)
            if before:
                line += f" {per['before']:>11,.0f} {per['off'] / per['before'] - 1:>+11.2%}"
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests; figures less exact")
    parser.add_argument("--baseline", metavar="REV", help="also run the package as of this git revision (off)")
    parser.add_argument("--rows", default="", help="which rows, e.g. 1,2 (default: all)")
    parser.add_argument("--modes", default="off,on", help="off, metrics (metrics only), on (metrics and tracing)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "PATH", "COUNT", "TOTAL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, path, count, total = args.child
        _child(mode, path, int(count), int(total))
        return 0
    print(run(quick=args.quick, baseline=args.baseline, rows=args.rows, modes=args.modes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
