"""Plurality slower than the revalidation interval, two app processes sharing Redis.

The stand-in answers in 1.5 s; every session revalidates every second
(``PLURALITY_REVALIDATE = 1``, ``PLURALITY_TIMEOUT`` at its default of 5 s); two
gunicorn processes (one worker each: gthread with as many threads as clients, or
gevent) share one Redis; client threads send requests on every session, to either
process at random, for 12 s: 8 sessions and 16 clients, 2 hot sessions and 32 clients
(where waiters contend most), and 4 sessions and 64 clients on gevent workers.
Counted: the statuses (any 503 is a request the load should not have failed), the
slowest answer, the calls that reached Plurality against the
ideal (one per session per interval elapsed), and each process's breaker at the end
(closed, no failures counted: slow answers were not mistaken for an outage).

Run: ``python -m benchmarks.bench_slow_upstream`` (needs ``redis-server``; it starts a
private one). Run it from a copy of another checkout (``cd /tmp/old && python -m
benchmarks.bench_slow_upstream``) to measure that code: the app processes import the
``flask_plurality`` found in the working directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from flask_plurality.testing import FakePlurality

from .servers import gunicorn, private_redis

#: (sessions, client threads, gunicorn worker class: gthread with as many threads, or gevent)
SETUPS: tuple[tuple[int, int, str | None], ...] = ((8, 16, None), (2, 32, None), (4, 64, "gevent"))
SESSIONS, THREADS, _ = SETUPS[0]
DURATION = 12.0
LATENCY = 1.5
INTERVAL = 1


@dataclass
class Load:
    """What one run of the load saw."""

    duration: float
    sessions: int
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    slowest: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)  # status 0: no HTTP answer, by exception
    calls: int = 0
    breakers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ideal(self) -> int:
        """One call per session per interval elapsed."""
        return self.sessions * math.ceil(self.duration / INTERVAL)

    @property
    def slow_interval_allowance(self) -> int:
        """The issue's allowance: one more call per interval in which an answer took
        longer than the interval (all of them, at this latency)."""
        return math.ceil(self.duration / INTERVAL)


def load(
    *,
    duration: float = DURATION,
    sessions: int = SESSIONS,
    threads: int = THREADS,
    cwd: Path | None = None,
    redis_url: str | None = None,
    worker_class: str | None = None,
) -> Load:
    """Run the load once, on ``redis_url`` (flushed by the caller) or a private
    redis-server; raise ``RuntimeError`` when there is neither."""
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            redis_url = stack.enter_context(private_redis())
        fake = stack.enter_context(FakePlurality())
        if redis_url is None:
            raise RuntimeError("the slow-upstream load needs redis-server (or PLURALITY_BENCH_REDIS_URL)")
        env = {
            "BENCH_API_URL": fake.url,
            "BENCH_CLIENT_ID": fake.client_id,
            "BENCH_CLIENT_SECRET": fake.client_secret,
            "BENCH_REDIS_URL": redis_url,
            "BENCH_INTERVAL": str(INTERVAL),
        }
        extra: dict[str, Any] = {} if cwd is None else {"cwd": cwd}
        if worker_class is not None:
            extra["worker_class"] = worker_class
        app = "benchmarks.slow_app:create_app()"
        with (
            gunicorn(app, env, workers=1, threads=threads, **extra) as port_a,
            gunicorn(app, env, workers=1, threads=threads, **extra) as port_b,
        ):
            urls = [f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"]
            cookies = []
            for n in range(sessions):
                answer = requests.post(f"{urls[n % 2]}/plurality/login", json={"token": fake.issue_token()}, timeout=10)
                answer.raise_for_status()
                cookies.append(answer.cookies["session"])
            time.sleep(INTERVAL)  # every session is due for revalidation when the load starts
            fake.reset_calls()
            fake.latency = LATENCY
            result = Load(duration=duration, sessions=sessions)
            lock = threading.Lock()
            start = time.monotonic()
            stop = start + duration

            def client(n: int) -> None:
                rng = random.Random(n)
                with requests.Session() as http:
                    while time.monotonic() < stop:
                        cookie = cookies[rng.randrange(sessions)]
                        url = urls[rng.randrange(2)]
                        http.cookies.clear()
                        sent = time.monotonic()
                        try:
                            # A new connection each time: a kept-alive one that the server
                            # closes as the next request goes out is the client's race, not ours.
                            headers = {"Cookie": f"session={cookie}", "Connection": "close"}
                            status = http.get(f"{url}/slow", headers=headers, timeout=30).status_code
                        except requests.RequestException as exc:
                            status = 0
                            with lock:
                                result.errors[type(exc).__name__] += 1
                        took = time.monotonic() - sent
                        with lock:
                            result.requests += 1
                            result.statuses[status] += 1
                            result.slowest = max(result.slowest, took)

            workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            result.duration = time.monotonic() - start
            result.calls = len(fake.calls)
            fake.latency = 0.0
            for url in urls:
                result.breakers.extend(requests.get(f"{url}/breaker", timeout=10).json()["breakers"])
    return result


def _table(rows: list[list[str]]) -> str:
    header = ["setup", "requests", "200", "503", "other", "slowest", "calls", "ideal", "calls/ideal", "breakers"]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("=" * w for w in widths)
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def row(label: str, result: Load) -> list[str]:
    other = result.requests - result.statuses[200] - result.statuses[503]
    breakers = ", ".join(f"{'open' if b['open'] else 'closed'} ({b['failures']} failures)" for b in result.breakers)
    return [
        label,
        str(result.requests),
        str(result.statuses[200]),
        str(result.statuses[503]),
        str(other),
        f"{result.slowest:.2f} s",
        str(result.calls),
        str(result.ideal),
        f"{result.calls / result.ideal:.2f}",
        breakers or "-",
    ]


def run(quick: bool = False) -> str:
    """The table as text; ``quick``: one 3 s smoke run."""
    duration = 3.0 if quick else DURATION
    rows = []
    for sessions, threads, worker_class in SETUPS[:1] if quick else SETUPS:
        if worker_class == "gevent" and importlib.util.find_spec("gevent") is None:
            continue
        try:
            result = load(duration=duration, sessions=sessions, threads=threads, worker_class=worker_class)
        except RuntimeError as exc:  # no redis-server here: say so rather than fail the whole table
            return f"skipped: {exc}"
        kind = worker_class or "gthread"
        rows.append(row(f"{kind}, {sessions} sessions, {threads} clients, {duration:g} s", result))
    return f"answers take {LATENCY} s, interval {INTERVAL} s, 2 processes\n" + _table(rows)


if __name__ == "__main__":
    print(run())
