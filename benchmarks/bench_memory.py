"""Unauthenticated bearer tokens and a worker's memory: RSS growth for 10,000 junk tokens.

Each token is JWT-shaped, HS256, unexpired, with claims filling most of the 4,096
characters ``PLURALITY_MAX_TOKEN_LENGTH`` lets through, and not signed by Plurality:
the first ``PLURALITY_LOGIN_MAX_FAILURES`` (10) reach the stand-in and are refused (401),
the rest are refused by the throttle (429). Measured in one process (Flask's test
client, ``benchmarks/memory_worker.py``) and through ``gunicorn -w 1`` over HTTP: the
worker's VmRSS after a warm-up request and after the last (in one process after
``gc.collect()``).

Run: ``python -m benchmarks.bench_memory [--code DIR] [--count N]``; ``--code``
measures the ``flask_plurality`` of another checkout, for a before/after table. Not
part of ``python -m benchmarks`` (it has no ``run()``): minutes of requests or files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from flask_plurality.testing import FakePlurality

from .memory_worker import junk_token
from .servers import ROOT, gunicorn

HERE = Path(__file__).resolve().parent


def _env(code: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(code), str(HERE)])}


def in_process(fake: FakePlurality, code: Path, count: int) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, str(HERE / "memory_worker.py"), fake.url, fake.client_id, fake.client_secret, str(count)],
        cwd=code,
        env={**os.environ, **_env(code)},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"before": result["before"], "after": result["after"], **_statuses(result["statuses"])}


def through_gunicorn(fake: FakePlurality, code: Path, count: int) -> dict[str, int]:
    env = {
        **_env(code),
        "MEMORY_APP": json.dumps([fake.url, fake.client_id, fake.client_secret]),
        "GUNICORN_CMD_ARGS": "--timeout 600",  # a worker whose memory balloons is slow, not dead
    }
    statuses: dict[str, int] = {}
    with gunicorn("memory_worker:create_app()", env, workers=1, cwd=code) as port, requests.Session() as http:
        base = f"http://127.0.0.1:{port}"
        http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {junk_token(-1)}"}, timeout=600)
        before = http.get(f"{base}/rss", timeout=600).json()
        for n in range(count):
            status = http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {junk_token(n)}"}, timeout=600)
            statuses[str(status.status_code)] = statuses.get(str(status.status_code), 0) + 1
        after = http.get(f"{base}/rss", timeout=600).json()
    assert before["pid"] == after["pid"], "the worker was restarted"
    return {"before": before["rss"], "after": after["rss"], **_statuses(statuses)}


def _statuses(statuses: dict[str, int]) -> dict[str, int]:
    return {f"answered {status}": number for status, number in sorted(statuses.items())}


def table(quick: bool = False, code: Path = ROOT, count: int = 10_000, where: str = "both") -> str:
    count = 200 if quick else count
    lines = [
        f"{count:,} junk bearer tokens (~4 KiB each), RSS in MiB ({code})",
        "",
        "| where | before | after | growth | answers |",
        "| --- | --- | --- | --- | --- |",
    ]
    with FakePlurality() as fake:
        for label, measure in (("in-process", in_process), ("gunicorn -w 1", through_gunicorn)):
            if where != "both" and not label.startswith(where):
                continue
            row = measure(fake, code, count)
            answers = ", ".join(f"{k.split()[1]}: {v:,}" for k, v in row.items() if k.startswith("answered"))
            growth = (row["after"] - row["before"]) / 1024
            lines.append(
                f"| {label} | {row['before'] / 1024:.1f} | {row['after'] / 1024:.1f} | {growth:+.1f} | {answers} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)  # a row as soon as it is measured
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose flask_plurality to measure")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--where", choices=["both", "in-process", "gunicorn"], default="both")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(table(quick=args.quick, code=args.code.resolve(), count=args.count, where=args.where))


if __name__ == "__main__":
    main()
