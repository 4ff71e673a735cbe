"""Revalidation: upstream calls made against the ideal, and what a cache hit costs.

Two tables:

1. ``N`` requests over ``M`` sessions with an interval policy, sent by concurrent
   clients over real HTTP to one or two app instances ("workers") sharing a session
   store, against the stand-in with a realistic upstream latency. "needed" counts the
   requests that found their session due for revalidation; "calls" the calls that
   reached Plurality; "ideal" is one call per session per interval elapsed.
2. The time of a request whose revalidation is answered by the shared cache (its
   interval has elapsed, another worker already asked) as a ratio to the same request
   with no revalidation, both measured side by side in this process: interleaved,
   median of per-round medians. An upstream call on loopback is shown for scale.

Run: ``python -m benchmarks.bench_revalidation``. Redis rows appear when
``PLURALITY_BENCH_REDIS_URL`` (else ``PLURALITY_TEST_REDIS_URL``) points at a Redis;
they use keys under a random prefix and delete only those, but a test run flushing
the same database meanwhile would wipe their sessions: give the benchmark its own db.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from cachelib.file import FileSystemCache
from flask import Flask
from flask.testing import FlaskClient

from flask_plurality import Plurality, current_profile, plurality_required, signals
from flask_plurality.testing import FakePlurality, config_for, live_server

SESSIONS = 20
INTERVAL = 1  # seconds, table 1
DURATION = 3.5  # seconds of traffic after the logins: three whole intervals
THREADS = 8
LATENCY = 0.05  # the stand-in's answer time in table 1, like a real API across the internet
HIT_INTERVAL = 600  # table 2
ROUNDS = 7
SAMPLES = 60  # per route and round


def _redis_url() -> str | None:
    url = os.environ.get("PLURALITY_BENCH_REDIS_URL") or os.environ.get("PLURALITY_TEST_REDIS_URL")
    if not url:
        return None
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None
    return url


@contextmanager
def _store(kind: str, tmp: str) -> Iterator[dict[str, Any]]:
    """Flask-Session config for a store every app built with it shares."""
    if kind == "cachelib":
        path = os.path.join(tmp, f"sessions-{secrets.token_hex(4)}")
        yield {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": FileSystemCache(path, threshold=0)}
        return
    import redis

    url = _redis_url()
    assert url is not None
    client = redis.Redis.from_url(url)
    run = f"bench-{secrets.token_hex(4)}:"
    try:
        yield {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS": client,
            "SESSION_KEY_PREFIX": run + "session:",
            "PLURALITY_KEY_PREFIX": run + "plurality:",
        }
    finally:
        for key in client.scan_iter(match=run + "*"):
            client.delete(key)
        client.close()


def _app(fake: FakePlurality, store: dict[str, Any], tmp: str) -> Flask:
    app = Flask("bench_revalidation", instance_path=tmp)
    app.config.update(
        TESTING=True,
        **config_for(fake),
        PLURALITY_LOGIN_MAX_FAILURES=10**9,
        **store,
    )
    Plurality(app)

    @app.get("/plain")
    @plurality_required(revalidate=False)
    def plain() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/interval")
    @plurality_required(revalidate=INTERVAL)
    def interval() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/hit")
    @plurality_required(revalidate=HIT_INTERVAL)
    def hit() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/always")
    @plurality_required(revalidate=True)
    def always() -> dict[str, Any]:
        return {"id": current_profile.id}

    return app


def _login(app: Flask, fake: FakePlurality) -> FlaskClient:
    client = app.test_client()
    response = client.post(
        "/plurality/login", json={"token": fake.issue_token()}, headers={"Origin": "http://localhost"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return client


def _age(client: FlaskClient, seconds: float) -> None:
    with client.session_transaction() as sess:
        data = dict(sess["_plurality"])
        data["v"] -= seconds  # when Plurality last said yes (see flask_plurality.logins.Login)
        sess["_plurality"] = data


# -- table 1 --------------------------------------------------------------------------------


def _traffic(fake: FakePlurality, store_kind: str, workers: int, tmp: str, duration: float) -> list[str]:
    with _store(store_kind, tmp) as store:
        apps = [_app(fake, store, tmp) for _ in range(workers)]
        needed = [0]
        lock = threading.Lock()

        def count(sender: Any, **kwargs: Any) -> None:
            with lock:
                needed[0] += 1

        logins: list[tuple[str, float]] = []
        for _ in range(SESSIONS):
            client = _login(apps[0], fake)
            cookie = client.get_cookie("session")
            assert cookie is not None
            logins.append((cookie.value, time.time()))
        calls_before = len(fake.calls)
        fake.latency = LATENCY
        requests_sent = [0] * THREADS
        failures: list[int] = []
        with _serve_all(apps) as urls:
            for app in apps:
                signals.revalidated.connect(count, sender=app)
                signals.revalidation_failed.connect(count, sender=app)
            stop = time.time() + duration

            def client_thread(n: int) -> None:
                rng = random.Random(n)
                with requests.Session() as http:
                    while time.time() < stop:
                        cookie, _ = logins[rng.randrange(SESSIONS)]
                        url = urls[rng.randrange(workers)]
                        # The Cookie header, not cookies=: requests would keep the jar's own
                        # "session" cookie from an earlier answer and send that one instead.
                        http.cookies.clear()
                        response = http.get(f"{url}/interval", headers={"Cookie": f"session={cookie}"}, timeout=10)
                        requests_sent[n] += 1
                        if response.status_code != 200:
                            failures.append(response.status_code)

            threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            end = time.time()
            for app in apps:
                signals.revalidated.disconnect(count, sender=app)
                signals.revalidation_failed.disconnect(count, sender=app)
        fake.latency = 0.0
        if failures:
            raise RuntimeError(
                f"{len(failures)} of {sum(requests_sent)} requests failed ({sorted(set(failures))}) on {store_kind}: "
                "is something else flushing this store (a test run on the same Redis db)?"
            )
        calls = len(fake.calls) - calls_before
        ideal = sum(math.floor((end - at) / INTERVAL) for _, at in logins)
        label = f"{workers} worker{'s' if workers > 1 else ''}, {store_kind}"
        return [
            label,
            str(sum(requests_sent)),
            str(SESSIONS),
            f"{INTERVAL} s",
            str(needed[0]),
            str(calls),
            str(ideal),
            f"{calls / ideal:.2f}",
        ]


@contextmanager
def _serve_all(apps: list[Flask]) -> Iterator[list[str]]:
    if not apps:
        yield []
        return
    with live_server(apps[0]) as first, _serve_all(apps[1:]) as rest:
        yield [first, *rest]


# -- table 2 --------------------------------------------------------------------------------


def _overhead(fake: FakePlurality, store_kind: str, tmp: str, rounds: int, samples_per_round: int) -> list[list[str]]:
    with _store(store_kind, tmp) as store:
        worker_a, worker_b = _app(fake, store, tmp), _app(fake, store, tmp)
        client_a = _login(worker_a, fake)
        _age(client_a, HIT_INTERVAL + 1)
        assert client_a.get("/hit").status_code == 200  # worker A asks Plurality: the cache holds the answer
        client_b = worker_b.test_client()
        cookie = client_a.get_cookie("session")
        assert cookie is not None
        client_b.set_cookie("session", cookie.value)
        calls_before = len(fake.calls)

        routes = ["/plain", "/hit", "/always"]
        per_round: dict[str, list[float]] = {r: [] for r in routes}
        ratios: dict[str, list[float]] = {r: [] for r in routes}
        for round_no in range(rounds + 1):  # round 0 warms up
            samples: dict[str, list[float]] = {r: [] for r in routes}
            for i in range(samples_per_round):
                order = routes if (i + round_no) % 2 == 0 else routes[::-1]
                for route in order:
                    _age(client_b, HIT_INTERVAL + 1)  # B's copy of the session is due again
                    started = time.perf_counter()
                    response = client_b.get(route)
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.get_data(as_text=True)
                    samples[route].append(elapsed)
            if round_no == 0:
                continue
            medians = {r: statistics.median(samples[r]) for r in routes}
            for route in routes:
                per_round[route].append(medians[route])
                ratios[route].append(medians[route] / medians["/plain"])
        hit_calls = len(fake.calls) - calls_before
        always_calls = (rounds + 1) * samples_per_round
        assert hit_calls == always_calls, (hit_calls, always_calls)  # cache hits made no call
    labels = {
        "/plain": "no revalidation (baseline)",
        "/hit": "revalidation, answer from shared cache",
        "/always": "revalidation, upstream call (loopback)",
    }
    return [
        [
            store_kind,
            labels[r],
            f"{statistics.median(per_round[r]) * 1e6:.0f}",
            f"{statistics.median(ratios[r]):.2f}x",
        ]
        for r in routes
    ]


# -- output ---------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("=" * w for w in widths)
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def run(quick: bool = False) -> str:
    """Both tables as text (reStructuredText simple tables); ``quick``: a smoke run."""
    duration, rounds, samples = (1.5, 1, 5) if quick else (DURATION, ROUNDS, SAMPLES)
    stores = ["cachelib"] + (["redis"] if _redis_url() else [])
    with FakePlurality() as fake, tempfile.TemporaryDirectory() as tmp:
        traffic = [_traffic(fake, kind, workers, tmp, duration) for kind in stores for workers in (1, 2)]
        overhead = [row for kind in stores for row in _overhead(fake, kind, tmp, rounds, samples)]
    first = _table(
        ["setup", "requests", "sessions", "interval", "needed", "calls", "ideal", "calls/ideal"],
        traffic,
    )
    second = _table(["store", "protected request", "median µs", "vs baseline"], overhead)
    note = (
        f"Upstream calls vs ideal: {THREADS} client threads, {duration} s of traffic, random session and "
        f"worker per request, stand-in latency {LATENCY * 1000:.0f} ms.\n"
        f"Cache-hit overhead: in-process test client, {rounds} interleaved rounds x {samples} requests "
        "per route, median of round medians."
    )
    return f"{first}\n\n{second}\n\n{note}"


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv[1:]))
