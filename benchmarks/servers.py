"""Processes a benchmark run starts and always stops: a private Redis, gunicorn."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def private_redis() -> Iterator[str | None]:
    """A throwaway redis-server on a free port (no disk), so no other user of a shared
    Redis can flush the benchmark's sessions; else $PLURALITY_BENCH_REDIS_URL, else None."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield os.environ.get("PLURALITY_BENCH_REDIS_URL")
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="plurality-bench-redis-") as workdir:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(process)


@contextlib.contextmanager
def gunicorn(
    app: str,
    env: dict[str, str],
    *,
    workers: int,
    threads: int = 1,
    worker_class: str | None = None,
    cwd: Path = ROOT,
) -> Iterator[int]:
    """``gunicorn -w N`` (sync workers, the default; ``gthread`` with ``threads`` > 1, or
    ``worker_class``, e.g. ``gevent``) serving ``app`` on a loopback port, run in ``cwd``
    (whose ``flask_plurality`` it imports)."""
    port = free_port()
    kind = ["-k", worker_class] if worker_class else ["--threads", str(threads)]
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), *kind, "-b", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--log-level=warning", app],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        yield port
    finally:
        stop(process)
        if process.stderr is not None:
            errors = process.stderr.read().decode(errors="replace").strip()
            process.stderr.close()
            if "Traceback" in errors:
                print(errors, file=sys.stderr)
