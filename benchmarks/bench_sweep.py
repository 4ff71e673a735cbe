"""The file store's sweep over a large directory: what a request running beside it waits.

A directory of N session files (default 100,000; every other one expired) is swept by
``FileStore.sweep`` in a thread, as the session guard runs it, while the same process
keeps a "request" ticking every millisecond: each tick measures how late it woke, which
is how long any request of that worker would have waited for the sweep. In a gevent
worker (threads are greenlets there) the sweep holds the loop for as long as it runs
without pausing; in a sync or gthread worker it competes for the interpreter lock.
Rows: the longest wait of a tick, the 99th percentile, and the sweep's own duration.

Run: ``python -m benchmarks.bench_sweep [--code DIR] [--files N]``; ``--code`` measures
the ``flask_plurality`` of another checkout, for a before/after table. Not part of
``python -m benchmarks`` (it has no ``run()``): minutes of requests or files.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .servers import ROOT

_WORKER = r"""
import json, os, sys, threading, time
if sys.argv[2] == "gevent":
    from gevent import monkey
    monkey.patch_all()
from cachelib.file import FileSystemCache
from flask_plurality.stores.files import FileStore
store = FileStore(FileSystemCache(sys.argv[1], threshold=0))
gaps, done, took = [], threading.Event(), []
def sweep():
    start = time.perf_counter()
    store.sweep()
    took.append(time.perf_counter() - start)
    done.set()
worker = threading.Thread(target=sweep, daemon=True)
before = time.perf_counter()
worker.start()  # under gevent the sweep's greenlet runs first, until it yields
gaps.append(time.perf_counter() - before)
while not done.is_set():
    before = time.perf_counter()
    time.sleep(0.001)
    gaps.append(time.perf_counter() - before - 0.001)
worker.join()
gaps.sort()
print(json.dumps({"max": gaps[-1], "p99": gaps[int(len(gaps) * 0.99)], "sweep": took[0],
                  "left": len(os.listdir(sys.argv[1]))}))
"""


def make_directory(files: int) -> Path:
    """``files`` entries as the store writes them: every other one expired an hour ago."""
    directory = Path(tempfile.mkdtemp(prefix="plurality-sweep-"))
    now = int(time.time())
    blob = pickle.dumps({"_plurality": {"token": "x" * 260, "profile": {"id": "u" * 36}}})
    for n in range(files):
        expires = now - 3600 if n % 2 else now + 86400
        (directory / f"{n:032x}").write_bytes(struct.pack("I", expires) + blob)
    return directory


def measure(code: Path, files: int, mode: str) -> dict[str, float]:
    directory = make_directory(files)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, str(directory), mode],
            cwd=code,
            env={**os.environ, "PYTHONPATH": str(code)},
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def table(quick: bool = False, code: Path = ROOT, files: int = 100_000) -> str:
    files = 2_000 if quick else files
    lines = [
        f"Sweep of {files:,} session files (half expired) in a thread, a 1 ms ticker beside it ({code})",
        "",
        "| worker | longest wait of a tick | 99th percentile | sweep took | files left |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode in ("gevent", "threads"):
        row = measure(code, files, mode)
        lines.append(
            f"| {mode} | {row['max'] * 1000:.1f} ms | {row['p99'] * 1000:.2f} ms | {row['sweep']:.2f} s "
            f"| {int(row['left']):,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose flask_plurality to measure")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(table(quick=args.quick, code=args.code.resolve(), files=args.files))


if __name__ == "__main__":
    main()
