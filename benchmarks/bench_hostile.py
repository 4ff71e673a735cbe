"""A hostile upstream, one login per row: what a worker spends on it.

Each row runs a fresh app process (``benchmarks/hostile_worker.py``) that logs in once
normally, then against one hostile answer from the stand-in (``FakePlurality.fail_next``)
with ``PLURALITY_TIMEOUT = 2``: the status, the time the login took, the worker's peak
memory growth for it (VmHWM after, minus VmRSS before), and the calls that reached the
upstream. The 403 rows log in again with the same token after a gateway's HTML 403:
a "no" wrongly remembered answers 401 without asking.

Run: ``python -m benchmarks.bench_hostile [--code DIR]``; ``--code`` measures the
``flask_plurality`` of another checkout (with ``benchmarks/`` copied in), for a
before/after table. The stand-in is always this checkout's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask_plurality.fake import _gzip_bomb
from flask_plurality.testing import FakePlurality

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 2.0
#: (label, fault, fail_next keywords, log in again after it)
SCENARIOS: list[tuple[str, Any, dict[str, Any], bool]] = [
    ("drip-feed body, 1 byte / 0.25 s", "drip", {}, False),
    ("slow headers, 1 byte / 0.25 s", "slow_headers", {}, False),
    ("10 MiB body, Content-Length", "huge", {}, False),
    ("10 MiB body, chunked", "huge_chunked", {}, False),
    ("gzip bomb, 255 KiB -> 256 MiB", "gzip", {}, False),
    ("307 redirect to itself", "redirect", {}, False),
    ("gateway HTML 403, then login again", 403, {}, True),
    ("503 with Retry-After: ²", 503, {"retry_after": "²"}, False),
    ("429 with Retry-After: 1e9", 429, {"retry_after": "1e9"}, False),
]


def _rows(code: Path, quick: bool) -> list[list[str]]:
    rows = []
    with FakePlurality() as fake:
        if quick:
            fake.huge_size, fake.gzip_size, fake.drip_interval = 1 << 20, 8 << 20, 0.05
        _gzip_bomb(fake.gzip_size)  # made before any row: the stand-in's cost, not the worker's
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.hostile_worker",
                fake.url,
                fake.client_id,
                fake.client_secret,
                str(TIMEOUT),
            ],
            cwd=code,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdin is not None and worker.stdout is not None

        def login(token: str, measure: bool) -> dict[str, Any]:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(json.dumps({"token": token, "measure": measure}) + "\n")
            worker.stdin.flush()
            answer: dict[str, Any] = json.loads(worker.stdout.readline())
            return answer

        try:
            login(fake.issue_token(), measure=False)  # warm: imports, the pool, the session store
            for label, fault, kwargs, again in SCENARIOS[:3] if quick else SCENARIOS:
                token = fake.issue_token()
                before = len(fake.calls)
                fake.fail_next(fault, **kwargs)
                seen = login(token, measure=True)
                status = f"{seen['status']} {seen['error'] or ''}".strip()
                if again:
                    status += f"; again: {login(token, measure=False)['status']}"
                rows.append(
                    [
                        label,
                        status,
                        f"{seen['seconds']:.2f} s",
                        f"{seen['kib'] / 1024:.2f} MiB",
                        str(len(fake.calls) - before),
                    ]
                )
        finally:
            worker.stdin.close()
            worker.wait(timeout=60)
    return rows


def _table(rows: list[list[str]]) -> str:
    header = ["hostile answer", "login answered", "took", "memory growth", "upstream calls"]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("=" * w for w in widths)
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def run(quick: bool = False, code: Path = ROOT) -> str:
    """The table as text; ``quick``: three rows, small sizes."""
    return f"PLURALITY_TIMEOUT = {TIMEOUT:g} s, one fresh worker process\n" + _table(_rows(code, quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose flask_plurality to measure")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(quick=args.quick, code=args.code))
