"""What a login check costs per request, side by side with its peers, on one machine.

Rows (see ``benchmarks.app``) run in one app, over one session that holds all three
kinds of login, in the same store; rounds interleave the rows so that drift of the
machine hits every row alike, and each figure is the median over the rounds.

- in-process: the app called as a WSGI callable (no test-client overhead, so the
  ratios are the strictest view of the extension's own cost), median µs per request;
- gunicorn: ``gunicorn -w 2`` (sync workers) on loopback, a raw-socket load generator
  in this process, requests/s.

Row 4 is a real shared-answer-cache hit on every request: each request brings its own
session whose last answer is older than the interval, while the cache holds a fresh
answer for the token; the run checks that Plurality was not called while measuring.
"""

from __future__ import annotations

import copy
import gc
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_session.base import ServerSideSession
from werkzeug.test import EnvironBuilder

from flask_plurality.testing import FakePlurality

from . import loadgen
from .app import INTERVAL, ROWS, create_app
from .netdelay import DelayProxy
from .servers import gunicorn, private_redis

Answer = tuple[int, dict[str, str], bytes]
STALE = "/interval"  # the row whose sessions are stale: a shared-answer-cache hit each time


@dataclass(frozen=True)
class Plan:
    rounds: int  # in-process rounds
    batch: int  # requests per row per in-process round
    http_rounds: int
    http_requests: int  # requests per row per gunicorn round
    concurrency: int
    workers: int
    logins: int
    rtt: float  # seconds, simulated network between the app and Plurality
    upstream_latency: float  # seconds the stand-in takes to answer


FULL = Plan(
    rounds=60,
    batch=50,
    http_rounds=8,
    http_requests=300,
    concurrency=4,
    workers=2,
    logins=15,
    rtt=0.020,
    upstream_latency=0.010,
)
QUICK = Plan(
    rounds=2,
    batch=5,
    http_rounds=1,
    http_requests=20,
    concurrency=2,
    workers=2,
    logins=2,
    rtt=0.005,
    upstream_latency=0.002,
)


# -- in-process --------------------------------------------------------------------


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    _start_response.status = status  # type: ignore[attr-defined]
    _start_response.headers = headers  # type: ignore[attr-defined]


def _environ(method: str, path: str, cookie: str | None = None, body: Any = None) -> dict[str, Any]:
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Origin"] = "http://localhost"
    return EnvironBuilder(method=method, path=path, headers=headers, json=body).get_environ()


def _call(app: Flask, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    answer = app(dict(environ), _start_response)
    try:
        body = b"".join(answer)
    finally:
        answer.close()  # type: ignore[attr-defined]
    status = int(_start_response.status.split()[0])  # type: ignore[attr-defined]
    return status, {k.lower(): v for k, v in _start_response.headers}, body  # type: ignore[attr-defined]


def _sign_in(call: Callable[..., tuple[int, dict[str, str], bytes]], token: str) -> str:
    """A real login, then the bench's setup route: the session every row reads."""
    status, headers, body = call("POST", "/plurality/login", body={"token": token})
    if status != 200:
        raise RuntimeError(f"login failed: {status} {body[:200]!r}")
    cookie = loadgen.session_cookie(headers)
    status, _, body = call("POST", "/bench/setup", cookie=cookie)
    if status != 200:
        raise RuntimeError(f"setup failed: {status} {body[:200]!r}")
    return cookie


def _copies(app: Flask, cookie: str, count: int, *, stale: bool) -> list[str]:
    """``count`` copies of the session, each under its own id (``stale``: its last answer
    older than the interval). Every request of every row reads and writes a session of its
    own, as with many users, so no row gains or loses by sharing one stored entry."""
    inner = app.session_interface.inner  # type: ignore[attr-defined]
    data = copy.deepcopy(inner._retrieve_session_data(inner._get_store_id(cookie.split("=", 1)[1])))
    if stale:
        data["_plurality"]["v"] -= 2 * INTERVAL
    cookies = []
    for _ in range(count):
        sid = inner._generate_sid(inner.sid_length)
        inner._upsert_session(timedelta(hours=2), ServerSideSession(data, sid=sid), inner._get_store_id(sid))
        cookies.append(f"session={sid}")
    return cookies


def _sessions(app: Flask, cookie: str, per_row: int) -> dict[str, list[str]]:
    """Single-use session cookies for each row, plus one stale one to fill the answer cache."""
    return {path: _copies(app, cookie, per_row + (path == STALE), stale=path == STALE) for path, _ in ROWS}


def _paired(samples: dict[str, list[float]], row: str, base: str) -> float:
    """Median over rounds of row/base measured in the same round: drift of a shared
    machine moves both, and cancels out of the ratio."""
    return statistics.median(r / b for r, b in zip(samples[row], samples[base], strict=True))


def in_process(app: Flask, fake: FakePlurality, plan: Plan) -> dict[str, list[float]]:
    """Seconds per request of each row, one sample per round."""

    def call(method: str, path: str, cookie: str | None = None, body: Any = None) -> Answer:
        return _call(app, _environ(method, path, cookie, body))

    cookies = _sessions(app, _sign_in(call, fake.issue_token()), (plan.rounds + 1) * plan.batch)
    assert call("GET", STALE, cookies[STALE].pop())[0] == 200  # fills the shared answer cache (one upstream call)
    environs = {path: [_environ("GET", path, c) for c in cookies[path]] for path, _ in ROWS}
    for path, _ in ROWS:  # warm up every row
        for _ in range(plan.batch):
            status, _, body = _call(app, environs[path].pop())
            if status != 200:
                raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
    calls = len(fake.calls)
    samples: dict[str, list[float]] = {path: [] for path, _ in ROWS}
    order = [path for path, _ in ROWS]
    for _ in range(plan.rounds):
        order = order[1:] + order[:1]
        gc.collect()
        for path in order:
            batch = [environs[path].pop() for _ in range(plan.batch)]
            started = time.perf_counter()
            for environ in batch:
                answer = app(environ, _start_response)
                b"".join(answer)
                answer.close()  # type: ignore[attr-defined]
            samples[path].append((time.perf_counter() - started) / plan.batch)
    if len(fake.calls) != calls:
        raise RuntimeError("Plurality was called while measuring: row 4 was not a cache hit")
    return samples


# -- gunicorn ----------------------------------------------------------------------


def through_gunicorn(
    store: str, env: dict[str, str], writer: Flask, fake: FakePlurality, plan: Plan
) -> dict[str, list[float]]:
    """Requests/s of each row through ``gunicorn -w N`` on loopback, one sample per round."""
    with gunicorn("benchmarks.app:create_app()", env, workers=plan.workers) as port:

        def call(method: str, path: str, cookie: str | None = None, body: Any = None) -> Answer:
            return loadgen.request(port, method, path, cookie=cookie, body=body)

        warmup = 20
        cookies = _sessions(writer, _sign_in(call, fake.issue_token()), plan.http_rounds * plan.http_requests + warmup)
        assert call("GET", STALE, cookies[STALE].pop())[0] == 200  # fills the shared answer cache
        prepared = {path: [loadgen.prepared_get(port, path, c) for c in cookies[path]] for path, _ in ROWS}
        for path, _ in ROWS:
            loadgen.blast(port, [prepared[path].pop() for _ in range(warmup)], concurrency=plan.concurrency)
        calls = len(fake.calls)
        samples: dict[str, list[float]] = {path: [] for path, _ in ROWS}
        order = [path for path, _ in ROWS]
        for _ in range(plan.http_rounds):
            order = order[1:] + order[:1]
            for path in order:
                batch = [prepared[path].pop() for _ in range(plan.http_requests)]
                samples[path].append(loadgen.blast(port, batch, concurrency=plan.concurrency))
        if len(fake.calls) != calls:
            raise RuntimeError(f"{store}: Plurality was called while measuring: row 4 was not a cache hit")
    return samples


# -- login latency and bytes -------------------------------------------------------


def login_latency(fake: FakePlurality, plan: Plan, instance: str) -> tuple[float, float]:
    """Median ms of our /login (pooled connection) and of a hand-written one
    (``requests.get``, a new connection each time), Plurality behind a simulated RTT."""
    fake.latency = plan.upstream_latency
    try:
        with DelayProxy(int(fake.url.split(":")[2].split("/")[0]), plan.rtt) as proxy:
            app = create_app(
                "cachelib",
                instance_path=instance,
                api_url=f"http://127.0.0.1:{proxy.port}/api",
                client_id=fake.client_id,
                client_secret=fake.client_secret,
            )
            times: dict[str, list[float]] = {"/plurality/login": [], "/naive/login": []}
            for round_ in range(plan.logins + 1):
                for path in times:
                    environ = _environ("POST", path, body={"token": fake.issue_token()})
                    started = time.perf_counter()
                    status, _, body = _call(app, environ)
                    elapsed = time.perf_counter() - started
                    if status != 200:
                        raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
                    if round_:  # the first round opens our pooled connection
                        times[path].append(elapsed)
            app.extensions["plurality"].client.close()
    finally:
        fake.latency = 0.0
    return statistics.median(times["/plurality/login"]) * 1e3, statistics.median(times["/naive/login"]) * 1e3


def bytes_stored(fake: FakePlurality, redis_url: str | None, instance: str) -> list[tuple[str, int]]:
    """Bytes of one logged-in session (after /plurality/login only) as each backend stores it."""
    sizes = []
    for label, store, extra in [
        ("cachelib FileSystemCache (pickle, file size)", "cachelib", {}),
        ("Redis, SESSION_SERIALIZATION_FORMAT msgpack", "redis", {"SESSION_SERIALIZATION_FORMAT": "msgpack"}),
        ("Redis, SESSION_SERIALIZATION_FORMAT json", "redis", {"SESSION_SERIALIZATION_FORMAT": "json"}),
    ]:
        if store == "redis" and redis_url is None:
            continue
        app = _app(store, fake, redis_url, tempfile.mkdtemp(dir=instance), **extra)
        status, headers, _ = _call(app, _environ("POST", "/plurality/login", body={"token": fake.issue_token()}))
        assert status == 200
        inner = app.session_interface.inner  # type: ignore[attr-defined]
        store_id = inner._get_store_id(loadgen.session_cookie(headers).split("=", 1)[1])
        if store == "redis":
            sizes.append((label, int(inner.client.strlen(store_id))))
            inner.client.close()
        else:
            sizes.append((label, os.path.getsize(inner.cache._get_filename(store_id))))
    return sizes


# -- the run -----------------------------------------------------------------------


def _app(store: str, fake: FakePlurality, redis_url: str | None, instance: str, **config: Any) -> Flask:
    app = create_app(
        store,
        instance_path=instance,
        redis_url=redis_url,
        api_url=fake.url,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
    )
    if config:  # the serializer is chosen when Flask-Session starts: build again
        from flask_session import Session

        from flask_plurality.sessions import GuardedSessionInterface

        app.config.update(config)
        Session(app)
        app.session_interface = GuardedSessionInterface(app.session_interface)  # type: ignore[arg-type]
    return app


def run(quick: bool = False) -> str:
    plan = QUICK if quick else FULL
    lines: list[str] = []
    with ExitStack() as stack:
        fake = stack.enter_context(FakePlurality())
        redis_url = stack.enter_context(private_redis())
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="plurality-bench-"))
        results: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]] = {}
        for store in ["cachelib"] + (["redis"] if redis_url else []):
            instance = tempfile.mkdtemp(dir=workdir)
            app = _app(store, fake, redis_url, instance)
            micro = in_process(app, fake, plan)
            env = {
                "BENCH_STORE": store,
                "BENCH_INSTANCE": instance,
                "BENCH_API_URL": fake.url,
                "BENCH_CLIENT_ID": fake.client_id,
                "BENCH_CLIENT_SECRET": fake.client_secret,
                "BENCH_REDIS_URL": redis_url or "",
            }
            results[store] = micro, through_gunicorn(store, env, app, fake, plan)
            if store == "redis":
                app.session_interface.inner.client.close()  # type: ignore[attr-defined]
        ours, naive = login_latency(fake, plan, tempfile.mkdtemp(dir=workdir))
        sizes = bytes_stored(fake, redis_url, workdir)
    lines += _table(results, plan, redis_url is not None)
    lines += [
        "",
        f"Login latency (median of {plan.logins}; Plurality stand-in answers in {plan.upstream_latency * 1e3:g} ms "
        f"behind a simulated {plan.rtt * 1e3:g} ms RTT, plain HTTP):",
        f"  POST /plurality/login (pooled connection)             {ours:7.1f} ms",
        f"  hand-written requests.get per login (new connection)  {naive:7.1f} ms   ({naive - ours:+.1f} ms)",
        "",
        "Bytes stored per logged-in session:",
    ]
    lines += [f"  {label:46} {size:6d} B" for label, size in sizes]
    return "\n".join(lines)


def _table(
    results: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]], plan: Plan, redis: bool
) -> list[str]:
    lines = [
        f"Per-request cost: Python {platform.python_version()}, {os.cpu_count()} CPUs; in-process = WSGI call, "
        f"{plan.rounds} rounds x {plan.batch} requests per row; gunicorn = -w {plan.workers} sync workers, "
        f"{plan.concurrency} connections, {plan.http_rounds} rounds x {plan.http_requests} requests per row.",
        "Figures are medians over rounds; ratios are medians of the ratio within each round.",
        "",
        f"{'store':9} {'row':44} {'µs/req':>8} {'x (1)':>6} {'req/s':>7} {'x (1)':>6}",
    ]
    for store, (micro, http) in results.items():
        for path, label in ROWS:
            lines.append(
                f"{store:9} {label:44} {statistics.median(micro[path]) * 1e6:8.1f} "
                f"{_paired(micro, path, '/bare'):6.3f} "
                f"{statistics.median(http[path]):7.0f} {_paired(http, path, '/bare'):6.3f}"
            )
    if not redis:
        lines.append("redis     (skipped: no redis-server on PATH and no PLURALITY_BENCH_REDIS_URL)")
    lines += [
        "",
        "Targets: (3) within 5% of (2), (4) within 10% of (2). Extra cost over (2): time in-process, 1/throughput:",
    ]
    targets = (("/plurality", "(3)", 0.05), ("/interval", "(4)", 0.10), ("/interval-fresh", "(4a)", 0.10))
    for store, (micro, http) in results.items():
        for path, row, limit in targets:
            slower = _paired(micro, path, "/hand") - 1
            fewer = 1 / _paired(http, path, "/hand") - 1
            verdict = "met" if max(slower, fewer) <= limit else "MISSED"
            lines.append(
                f"  {store:9} {row:5} in-process {slower:+6.1%}, gunicorn {fewer:+6.1%}"
                f"  (target {limit:.0%}: {verdict})"
            )
    return lines
