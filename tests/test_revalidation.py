"""Revalidation: the policies, single flight, and the shared answer cache.

Apps are built as users build them; "another worker" is a second app instance sharing
the session store (one FileSystemCache directory, or one Redis), with its own extension
object, as a second gunicorn worker would have. Time passing is simulated by moving the
session's last good answer back (``age_session``), never by patching clocks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cachelib.file import FileSystemCache
from flask import Flask
from flask.testing import FlaskClient
from helpers import AppFactory, age_session, captured, login, session_is_live, stored_login

from flask_plurality import signals
from flask_plurality.answers import answer_name
from flask_plurality.logins import Login
from flask_plurality.testing import FakePlurality
from flask_plurality.testing import live_server as serve
from flask_plurality.tokens import token_hash

# -- helpers ------------------------------------------------------------------------------


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def same_session(client: FlaskClient, other_app: Flask) -> FlaskClient:
    """A client of ``other_app`` carrying ``client``'s session cookie (the next request
    of the same browser, routed to another worker)."""
    other = other_app.test_client()
    other.set_cookie("session", cookie_of(client))
    return other


@pytest.fixture
def shared_cachelib(tmp_path: Path) -> dict[str, Any]:
    """Config for apps sharing one on-disk session store, as workers of one machine do."""
    return {
        "SESSION_TYPE": "cachelib",
        "SESSION_CACHELIB": FileSystemCache(str(tmp_path / "sessions"), threshold=0),
    }


def two_workers(
    make_app: AppFactory, backend: str, request: pytest.FixtureRequest, **config: Any
) -> tuple[Flask, Flask]:
    if backend == "redis":
        redis_client = request.getfixturevalue("redis_client")
        return make_app(session_redis=redis_client, **config), make_app(session_redis=redis_client, **config)
    shared = request.getfixturevalue("shared_cachelib")
    return make_app(**shared, **config), make_app(**shared, **config)


BACKENDS = pytest.mark.parametrize("backend", ["cachelib", pytest.param("redis", marks=pytest.mark.redis)])


# -- policies -----------------------------------------------------------------------------


def test_never_revalidate_by_default(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    token = fake.issue_token()
    assert login(client, token).status_code == 200
    age_session(client, 86_000)
    fake.revoke(token)
    for _ in range(3):
        assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 1  # the login only


def test_always_asks_on_every_request(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=0)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    for n in range(3):
        assert client.get("/protected").status_code == 200
        assert client.post("/sensitive").status_code == 200
        assert len(fake.calls) == 1 + 2 * (n + 1)


def test_route_override_beats_app_default(app: Flask, fake: FakePlurality) -> None:
    """``/sensitive`` is ``revalidate=True`` while the app never revalidates."""
    client = app.test_client()
    token = fake.issue_token()
    assert login(client, token).status_code == 200
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 1
    assert client.post("/sensitive").status_code == 200
    assert len(fake.calls) == 2
    fake.revoke(token)
    assert client.get("/protected").status_code == 200  # not asked: never
    response = client.post("/sensitive")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Plurality"
    assert not session_is_live(client)
    assert client.get("/protected").status_code == 401  # the session is gone everywhere


def test_interval_asks_only_when_the_last_good_answer_is_older(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=600)
    client = app.test_client()
    assert login(client, fake.issue_token(email="old@example.com")).status_code == 200
    age_session(client, 599)
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 1

    age_session(client, 2)
    fake.issue_token(user_id=_user_id(fake), email="new@example.com")  # the user changed their email
    with captured(signals.revalidated, app) as confirmed:
        response = client.get("/protected")
    assert response.status_code == 200
    assert response.get_json()["email"] == "new@example.com"  # the profile follows Plurality
    assert len(fake.calls) == 2
    assert [c["cached"] for c in confirmed] == [False]
    assert confirmed[0]["profile"].email == "new@example.com"
    # The answer restarted the interval.
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 2
    data = stored_login(app, client)
    assert data is not None and time.time() - data["v"] < 60


def _user_id(fake: FakePlurality) -> str:
    import jwt

    token = fake.calls[0].token
    assert token is not None
    return str(jwt.decode(token, options={"verify_signature": False})["id"])


def test_async_and_methodview_routes_revalidate(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=0)
    client = app.test_client()
    token = fake.issue_token()
    assert login(client, token).status_code == 200
    assert client.get("/items").status_code == 200
    assert len(fake.calls) == 2
    fake.revoke(token)
    assert client.get("/async").status_code == 401
    assert len(fake.calls) == 3


# -- single flight ------------------------------------------------------------------------


def _burst(url: str, cookie: str, n: int) -> list[int]:
    """``n`` threads released together, each one GET with the same session cookie."""
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with requests.Session() as http:
            barrier.wait()
            response = http.get(url, cookies={"session": cookie}, timeout=10)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return statuses


def test_sixteen_concurrent_requests_make_one_upstream_call(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=3600)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    age_session(client, 3601)
    fake.latency = 0.3  # every request arrives while the first one is still asking
    with captured(signals.revalidated, app) as confirmed, serve(app) as base:
        statuses = _burst(f"{base}/protected", cookie_of(client), 16)
    assert statuses == [200] * 16
    assert len(fake.calls) == 2  # the login, then exactly one revalidation
    assert len(confirmed) == 16


def test_concurrent_requests_share_one_failure(make_app: AppFactory, fake: FakePlurality) -> None:
    """When the one call times out, every waiter gets the outage answer at once; nobody
    queues up for a timeout of its own."""
    app = make_app(PLURALITY_REVALIDATE=3600, PLURALITY_TIMEOUT=1.0)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    age_session(client, 3601)
    fake.fail_next("timeout")
    with serve(app) as base:
        statuses = _burst(f"{base}/protected", cookie_of(client), 16)
    assert statuses == [503] * 16
    assert len(fake.calls) == 2
    assert session_is_live(client)


# -- the shared answer cache across workers ------------------------------------------------


@BACKENDS
def test_second_worker_reuses_the_first_workers_answer(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two requests of one stale session land on two workers at once: the first asks,
    the second (which loaded the session before the first saved it) uses that answer."""
    worker_a, worker_b = two_workers(make_app, backend, request, PLURALITY_REVALIDATE=600)
    browser_a = worker_a.test_client()
    assert login(browser_a, fake.issue_token()).status_code == 200
    age_session(browser_a, 601)
    assert browser_a.get("/protected").status_code == 200
    assert len(fake.calls) == 2

    browser_b = same_session(browser_a, worker_b)
    age_session(browser_b, 601)  # what worker B loaded: still stale
    with captured(signals.revalidated, worker_b) as confirmed:
        response = browser_b.get("/protected")
    assert response.status_code == 200
    assert len(fake.calls) == 2  # zero extra calls
    assert [c["cached"] for c in confirmed] == [True]


@BACKENDS
def test_two_sessions_of_one_token_share_the_answer(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    worker_a, worker_b = two_workers(make_app, backend, request, PLURALITY_REVALIDATE=600)
    token = fake.issue_token()
    tab_a, tab_b = worker_a.test_client(), worker_b.test_client()
    assert login(tab_a, token).status_code == 200
    assert login(tab_b, token).status_code == 200
    age_session(tab_a, 601)
    age_session(tab_b, 601)
    assert tab_a.get("/protected").status_code == 200
    assert tab_b.get("/protected").status_code == 200
    assert len(fake.calls) == 3  # two logins, one revalidation


@BACKENDS
def test_a_no_is_remembered_across_sessions_and_workers(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    worker_a, worker_b = two_workers(make_app, backend, request)
    token = fake.issue_token()
    tab_a, tab_b = worker_a.test_client(), worker_b.test_client()
    assert login(tab_a, token).status_code == 200
    assert login(tab_b, token).status_code == 200
    fake.revoke(token)

    with captured(signals.revalidation_failed, worker_b) as failures:
        assert tab_a.post("/sensitive").status_code == 401
        assert len(fake.calls) == 3
        assert tab_b.post("/sensitive").status_code == 401  # told by the cache
    assert len(fake.calls) == 3
    assert [(f["reason"], f["allowed"]) for f in failures] == [("rejected", False)]
    assert not session_is_live(tab_a) and not session_is_live(tab_b)

    response = login(worker_b.test_client(), token)  # a login with it is refused too
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    assert len(fake.calls) == 3


def test_an_expired_cache_entry_is_asked_again(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=1)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    age_session(client, 5)
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 2
    age_session(client, 5)  # stale again, but the answer is still fresh
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 2
    time.sleep(1.1)  # the answer is now older than the interval
    age_session(client, 5)
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 3


def test_an_answer_is_not_reused_beyond_the_readers_interval(
    make_app: AppFactory, fake: FakePlurality, shared_cachelib: dict[str, Any]
) -> None:
    """A worker configured with a long interval wrote the answer; one with a short
    interval does not trust it once it is older than its own interval."""
    patient = make_app(PLURALITY_REVALIDATE=3600, **shared_cachelib)
    strict = make_app(PLURALITY_REVALIDATE=1, **shared_cachelib)
    client = patient.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    age_session(client, 4000)
    assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 2
    time.sleep(1.1)
    other = same_session(client, strict)
    age_session(other, 5)
    assert other.get("/protected").status_code == 200
    assert len(fake.calls) == 3


def test_logins_always_ask_and_a_yes_is_cached_only_with_an_interval(
    make_app: AppFactory, fake: FakePlurality, redis_client: Any
) -> None:
    app = make_app(session_redis=redis_client, PLURALITY_REVALIDATE=600)
    token = fake.issue_token()
    for _ in range(2):
        assert login(app.test_client(), token).status_code == 200
    assert len(fake.calls) == 2  # a login is always a fresh check
    with app.app_context():
        answer_key = f"plurality:answer:{answer_name(token)}"
    assert redis_client.get(answer_key) is None  # not from logins
    client = app.test_client()
    assert login(client, token).status_code == 200
    age_session(client, 601)
    assert client.get("/protected").status_code == 200  # an interval revalidation writes it
    assert redis_client.get(answer_key) is not None  # so the name above is the one used


@BACKENDS
def test_store_keys_by_hash_never_by_token(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    """The answer cache holds a hash of the token; the token itself is only inside the
    session that needs it. Read the whole store to prove it."""
    worker_a, _ = two_workers(make_app, backend, request, PLURALITY_REVALIDATE=600)
    token, refused = fake.issue_token(), fake.issue_token()
    client = worker_a.test_client()
    assert login(client, token).status_code == 200
    age_session(client, 601)
    assert client.get("/protected").status_code == 200  # writes a "yes"
    fake.revoke(refused)
    assert login(worker_a.test_client(), refused).status_code == 401  # writes a "no"
    with worker_a.app_context():
        answer_of = {t: f"plurality:answer:{answer_name(t)}" for t in (token, refused)}
    assert all(name.endswith(token_hash(t)) for t, name in answer_of.items())
    sid = cookie_of(client)
    # What tells one token from another (every Plurality token has the same header,
    # which a session stores without).
    own, refused_own = (t.split(".", 1)[1].encode() for t in (token, refused))

    if backend == "redis":
        redis_client = request.getfixturevalue("redis_client")
        keys = [k.decode() for k in redis_client.keys("*")]
        assert not [k for k in keys if token in k or refused in k]
        assert set(answer_of.values()) <= set(keys)
        holding = [k for k in keys if own in (redis_client.get(k) or b"")]
        assert holding == [f"session:{sid}"]
        assert not [k for k in keys if refused_own in (redis_client.get(k) or b"")]
    else:
        cache = request.getfixturevalue("shared_cachelib")["SESSION_CACHELIB"]
        files = [p for p in Path(cache._path).iterdir() if p.is_file()]
        names = " ".join(p.name for p in files)
        assert token not in names and refused not in names
        holding = [p for p in files if own in p.read_bytes()]
        assert len(holding) == 1  # the session file
        assert not [p for p in files if refused_own in p.read_bytes()]
        held = Login.load(cache.get(f"session:{sid}")["_plurality"])
        assert held is not None and held.token == token
        yes, no = cache.get(answer_of[token]), cache.get(answer_of[refused])
        assert yes["ok"] is True and no == {"ok": False, "reason": "rejected"}
