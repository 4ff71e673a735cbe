"""Single flight across workers: one upstream call per token, whichever worker asks.

Each "worker" is an app instance with its own extension object (its own in-process
single flight), served over real HTTP by ``live_server``; the workers share one
session store (a FileSystemCache directory, or one Redis), as gunicorn workers or
machines do. Only the ``asking:`` marker in that store can make them agree.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from cachelib.file import FileSystemCache
from flask import Flask
from helpers import AppFactory, age_session, all_at_once, captured, login

from flask_plurality import signals
from flask_plurality.answers import answer_name
from flask_plurality.stores import FileStore, RedisStore, get_store
from flask_plurality.testing import FakePlurality, live_server
from flask_plurality.tokens import token_hash

BACKENDS = pytest.mark.parametrize("backend", ["cachelib", pytest.param("redis", marks=pytest.mark.redis)])


def workers(
    make_app: AppFactory, backend: str, request: pytest.FixtureRequest, tmp_path: Path, **config: Any
) -> tuple[Flask, Flask]:
    if backend == "redis":
        client = request.getfixturevalue("redis_client")
        return make_app(session_redis=client, **config), make_app(session_redis=client, **config)
    shared = {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": FileSystemCache(str(tmp_path / "s"), threshold=0)}
    return make_app(**shared, **config), make_app(**shared, **config)


@pytest.fixture
def revalidating(
    make_app: AppFactory, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Flask, Flask]:
    """Two workers sharing ``backend`` that ask Plurality again about sessions older than 600 s."""
    return workers(make_app, backend, request, tmp_path, PLURALITY_REVALIDATE=600)


def stale_sessions(app: Flask, token: str, count: int) -> list[str]:
    """``count`` browsers logged in with ``token``, each due for revalidation: their cookies."""
    cookies = []
    for _ in range(count):
        browser = app.test_client()
        assert login(browser, token).status_code == 200
        age_session(browser, 601)
        cookie = browser.get_cookie("session")
        assert cookie is not None
        cookies.append(cookie.value)
    return cookies


@contextmanager
def served(*apps: Flask) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(live_server(app)) for app in apps]


def burst(urls: list[str], cookies: list[str], per_url: int, path: str = "/protected") -> list[requests.Response]:
    """``per_url`` simultaneous requests on every worker, cycling through the sessions."""
    jobs = [(url, cookies[i % len(cookies)]) for url in urls for i in range(per_url)]

    def send(n: int) -> requests.Response:
        url, cookie = jobs[n]
        return requests.get(f"{url}{path}", headers={"Cookie": f"session={cookie}"}, timeout=15)

    return all_at_once(len(jobs), send)


@BACKENDS
def test_a_burst_on_two_workers_makes_one_upstream_call(revalidating: tuple[Flask, Flask], fake: FakePlurality) -> None:
    worker_a, worker_b = revalidating
    token = fake.issue_token()
    cookies = stale_sessions(worker_a, token, 6)
    fake.reset_calls()
    fake.latency = 0.3  # every worker finds the sessions stale while the first call is out
    with (
        captured(signals.revalidated, worker_a) as seen_a,
        captured(signals.revalidated, worker_b) as seen_b,
        served(worker_a, worker_b) as urls,
    ):
        responses = burst(urls, cookies, per_url=8)
    assert [r.status_code for r in responses] == [200] * 16
    assert len(fake.calls) == 1
    assert len(seen_a) == len(seen_b) == 8
    # The worker that did not ask served every request from the other one's answer.
    assert {s["cached"] for s in seen_a} == {True} or {s["cached"] for s in seen_b} == {True}


@BACKENDS
@pytest.mark.parametrize("policy", ["deny", "allow"])
def test_when_the_asking_worker_times_out_the_others_follow_the_outage_policy(
    make_app: AppFactory,
    fake: FakePlurality,
    backend: str,
    policy: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    worker_a, worker_b = workers(
        make_app, backend, request, tmp_path, PLURALITY_REVALIDATE=600, PLURALITY_TIMEOUT=0.8,
        PLURALITY_ON_UPSTREAM_ERROR=policy, PLURALITY_GRACE_PERIOD=3600,
    )  # fmt: skip
    token = fake.issue_token()
    cookies = stale_sessions(worker_a, token, 4)
    fake.reset_calls()
    fake.hang_seconds = 2.0
    fake.fail_next("timeout")  # whoever asks first hangs past the timeout
    with served(worker_a, worker_b) as urls:
        responses = burst(urls, cookies, per_url=6)
        # The holder's call, then usually one by the other worker with what is left of its
        # budget; a request that reaches a worker late (a loaded machine) may add one.
        assert 1 <= len(fake.calls) <= 3  # not one per request (12)
        statuses = {r.status_code for r in responses}
        if policy == "allow":  # the last good answer is within the grace period
            assert statuses == {200}
        else:
            assert 503 in statuses and statuses <= {200, 503}
            for refused in (r for r in responses if r.status_code == 503):
                assert refused.json()["error"] == "upstream_unavailable"
                assert refused.headers["Retry-After"]
        # A session refused with 503 was kept: the next request revalidates and passes.
        after = burst(urls, cookies, per_url=2)
    assert [r.status_code for r in after] == [200] * 4
    assert len(fake.calls) <= 4


@BACKENDS
def test_the_marker_names_a_hash_of_the_token_and_is_released(
    revalidating: tuple[Flask, Flask], fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    worker_a, _ = revalidating
    token = fake.issue_token()
    (cookie,) = stale_sessions(worker_a, token, 1)
    with worker_a.app_context():
        store = get_store()
        marker = f"plurality:asking:{answer_name(token)}"
    assert marker.startswith(f"plurality:asking:{fake.client_id}:") and marker.endswith(f":{token_hash(token)}")
    fake.latency = 0.5
    held: list[Any] = []
    with served(worker_a) as urls:
        thread = threading.Thread(target=lambda: held.append(burst(urls, [cookie], per_url=1)))
        thread.start()
        for _ in range(200):  # until the call is out
            if store.get(marker) is not None:
                break
            time.sleep(0.01)
        assert store.get(marker) is not None
        if backend == "redis":
            keys = [k.decode() for k in request.getfixturevalue("redis_client").keys("*")]
            assert any(k == marker for k in keys)
            assert not any(token in k for k in keys)
        thread.join()
    assert [r.status_code for r in held[0]] == [200]
    assert store.get(marker) is None  # released once the answer is stored
    assert len(fake.calls) == 2  # the login and the revalidation


@BACKENDS
def test_always_revalidating_routes_never_wait_for_another_worker(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``revalidate=True`` wants an answer asked for after the request arrived: each
    worker asks for itself, even while the other is asking about the same token."""
    worker_a, worker_b = workers(make_app, backend, request, tmp_path)
    token = fake.issue_token()
    cookies = stale_sessions(worker_a, token, 2)
    fake.reset_calls()
    fake.latency = 0.3
    jobs = list(zip(cookies, [worker_a, worker_b], strict=True))
    results: list[int] = []
    start = threading.Barrier(2)
    with served(worker_a, worker_b) as urls:
        by_app = dict(zip([worker_a, worker_b], urls, strict=True))

        def send(cookie: str, app: Flask) -> None:
            start.wait()
            response = requests.post(f"{by_app[app]}/sensitive", headers={"Cookie": f"session={cookie}"}, timeout=15)
            results.append(response.status_code)

        threads = [threading.Thread(target=send, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200, 200]
    assert len(fake.calls) == 2


# -- Store.add ----------------------------------------------------------------------------


def _add_in_process(path: str, start: float, results: Any) -> None:
    store = FileStore(FileSystemCache(path, threshold=0))
    while time.time() < start:
        pass
    results.put(store.add("plurality:asking:x", 1, 5))


def test_filesystem_add_has_one_winner_across_processes() -> None:
    """cachelib's own FileSystemCache.add checks, then writes: several processes can
    all "win". Ours checks and writes under a lock every process takes: exactly one does."""
    context = multiprocessing.get_context("spawn")
    for _ in range(3):
        with tempfile.TemporaryDirectory() as path:
            results = context.Queue()
            start = time.time() + 1.5  # after every process has started
            processes = [context.Process(target=_add_in_process, args=(path, start, results)) for _ in range(4)]
            for process in processes:
                process.start()
            wins = [results.get(timeout=30) for _ in processes]
            for process in processes:
                process.join()
            results.close()
            results.join_thread()
            assert sorted(wins) == [False, False, False, True]


def test_filesystem_add_takes_over_an_expired_marker(tmp_path: Path) -> None:
    store = FileStore(FileSystemCache(str(tmp_path), threshold=0))
    assert store.add("k", "first", 1)
    assert not store.add("k", "second", 1)
    assert store.get("k") == "first"
    time.sleep(2.1)  # cachelib's expiry has a one-second grain
    assert store.add("k", "third", 1)
    assert store.get("k") == "third"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".__wz_cache") and "-lock-" not in p.name]
    assert leftovers == []  # no temporary files left (the lock files stay)


@pytest.mark.redis
def test_redis_add_is_set_if_absent_with_an_expiry(redis_client: Any) -> None:
    store = RedisStore(redis_client)
    assert store.add("k", 1, 5)
    assert not store.add("k", 2, 5)
    assert store.get("k") == 1
    assert 0 < redis_client.ttl("k") <= 5
    store.delete("k")
    assert store.add("k", 3, 5)


def _get(url: str, cookie: str) -> requests.Response:
    return requests.get(f"{url}/protected", headers={"Cookie": f"session={cookie}"}, timeout=15)


@BACKENDS
@pytest.mark.parametrize(("arrives_after", "calls"), [(0.3, 1), (1.3, 2)])
def test_a_waiter_judges_freshness_when_it_arrived_not_when_the_answer_lands(
    make_app: AppFactory,
    fake: FakePlurality,
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    arrives_after: float,
    calls: int,
) -> None:
    """Plurality answers in 1.5 s, the interval is 1 s. Worker B's request arrives while
    worker A's call is out. 0.3 s after A asked, A's answer is fresh enough for B (it
    was 0.3 s old when B's request arrived), however old it is when it lands: B takes
    it, one call in all. 1.3 s after, it was already too old for B: B asks again, within
    its own time, and still answers 200."""
    worker_a, worker_b = workers(make_app, backend, request, tmp_path, PLURALITY_REVALIDATE=1, PLURALITY_TIMEOUT=5)
    token = fake.issue_token()
    (cookie,) = stale_sessions(worker_a, token, 1)
    with worker_a.app_context():
        store = get_store()
        lock = f"plurality:asking:{answer_name(token)}"
    fake.reset_calls()
    fake.latency = 1.5
    first: list[requests.Response] = []
    with served(worker_a, worker_b) as (url_a, url_b):
        thread = threading.Thread(target=lambda: first.append(_get(url_a, cookie)))
        thread.start()
        for _ in range(500):  # until A's call is out
            if store.get(lock) is not None:
                break
            time.sleep(0.005)
        assert store.get(lock) is not None
        time.sleep(arrives_after)
        second = _get(url_b, cookie)
        thread.join()
    assert first[0].status_code == 200
    assert second.status_code == 200
    assert len(fake.calls) == calls
