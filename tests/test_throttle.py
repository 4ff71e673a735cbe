"""Failed-login throttling: per client and per token, shared through the session store,
answered 429 with Retry-After and without spending an upstream call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from cachelib.file import FileSystemCache
from flask import Flask, request
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from flask_plurality import throttle
from flask_plurality.exceptions import InvalidToken, UpstreamUnavailable
from flask_plurality.state import get_extension
from flask_plurality.testing import FakePlurality
from flask_plurality.tokens import read_claims

LIMIT = 3


def post(client: FlaskClient, token: str, ip: str = "203.0.113.7", **headers: str) -> TestResponse:
    return client.post(
        "/plurality/login", json={"token": token}, headers={**SAME_ORIGIN, **headers}, environ_base={"REMOTE_ADDR": ip}
    )


def refused_token(fake: FakePlurality) -> str:
    """Well formed and unexpired, so it reaches Plurality, which says no."""
    token = fake.issue_token()
    fake.revoke(token)
    return token


def assert_throttled(response: TestResponse, window: int, *secrets: str) -> None:
    """429 in the extension's JSON error shape, a Retry-After within the window, and no token echoed."""
    assert response.status_code == 429
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"} and body["message"]
    assert body["error"] == "too_many_attempts"
    assert 1 <= int(response.headers["Retry-After"]) <= window
    for secret in secrets:
        assert secret not in response.get_data(as_text=True)
        assert all(secret not in value for value in response.headers.values())


def assert_refused_token(response: TestResponse) -> None:
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


@pytest.fixture
def throttled_app(make_app: AppFactory) -> Flask:
    return make_app(PLURALITY_LOGIN_MAX_FAILURES=LIMIT)


def test_a_client_that_keeps_failing_is_throttled_without_upstream_calls(
    throttled_app: Flask, fake: FakePlurality
) -> None:
    client = throttled_app.test_client()
    for _ in range(LIMIT):
        assert_refused_token(post(client, refused_token(fake)))
    assert len(fake.calls) == LIMIT

    # Even a good token: this client has used up its attempts.
    good = fake.issue_token()
    assert_throttled(post(client, good), 300, good)
    assert_throttled(post(client, refused_token(fake)), 300)
    assert_throttled(post(client, "junk"), 300)
    assert len(fake.calls) == LIMIT
    # Another client is not affected, in this browser or another.
    assert post(client, fake.issue_token(), ip="198.51.100.1").status_code == 200
    assert post(throttled_app.test_client(), good, ip="198.51.100.3").status_code == 200


def test_junk_tokens_count_as_failures_too(throttled_app: Flask, fake: FakePlurality) -> None:
    client = throttled_app.test_client()
    for token in ("junk", "a.b.c", fake.issue_token(ttl=-10)):
        assert post(client, token).status_code == 401
    assert_throttled(post(client, fake.issue_token()), 300)
    assert fake.calls == []


def test_one_token_failing_from_many_clients_is_throttled(throttled_app: Flask, fake: FakePlurality) -> None:
    client = throttled_app.test_client()
    token = refused_token(fake)
    for i in range(LIMIT):
        assert_refused_token(post(throttled_app.test_client(), token, ip=f"192.0.2.{i}"))
    assert_throttled(post(throttled_app.test_client(), token, ip="192.0.2.200"), 300, token)
    assert len(fake.calls) == 1  # the refusal itself is remembered, then the token throttled
    assert post(client, fake.issue_token(), ip="192.0.2.201").status_code == 200


def test_upstream_outages_and_successes_do_not_count(throttled_app: Flask, fake: FakePlurality) -> None:
    """Plurality being down is nobody's brute force: neither the client nor the token is held back."""
    client = throttled_app.test_client()
    token = fake.issue_token()
    fake.fail_next(503, times=LIMIT + 1)
    for _ in range(LIMIT + 1):
        assert post(client, token).status_code == 503  # not the user's fault
    assert post(client, token).status_code == 200
    for _ in range(LIMIT + 1):
        assert post(client, fake.issue_token()).status_code == 200


def test_the_window_ends(make_app: AppFactory, fake: FakePlurality) -> None:
    client = make_app(PLURALITY_LOGIN_MAX_FAILURES=1, PLURALITY_LOGIN_FAILURE_WINDOW=1).test_client()
    assert post(client, "junk").status_code == 401
    assert_throttled(post(client, fake.issue_token()), 1)
    time.sleep(2.1)  # cachelib stores whole seconds
    assert post(client, fake.issue_token()).status_code == 200


def test_behind_a_proxy_proxyfix_tells_clients_apart(throttled_app: Flask, fake: FakePlurality) -> None:
    client = throttled_app.test_client()
    throttled_app.wsgi_app = ProxyFix(throttled_app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    proxy = "10.0.0.1"
    for _ in range(LIMIT):
        assert post(client, "junk", ip=proxy, **{"X-Forwarded-For": "203.0.113.50"}).status_code == 401
    assert_throttled(post(client, fake.issue_token(), ip=proxy, **{"X-Forwarded-For": "203.0.113.50"}), 300)
    assert post(client, fake.issue_token(), ip=proxy, **{"X-Forwarded-For": "203.0.113.51"}).status_code == 200


def test_without_proxyfix_everyone_behind_a_proxy_is_one_client(throttled_app: Flask, fake: FakePlurality) -> None:
    """Why README tells you to set up ProxyFix: one bad client would lock out everyone."""
    client = throttled_app.test_client()
    proxy = "10.0.0.1"
    for _ in range(LIMIT):
        assert post(client, "junk", ip=proxy, **{"X-Forwarded-For": "203.0.113.50"}).status_code == 401
    assert_throttled(post(client, fake.issue_token(), ip=proxy, **{"X-Forwarded-For": "203.0.113.51"}), 300)


def test_ipv6_clients_are_counted_per_64(throttled_app: Flask, fake: FakePlurality) -> None:
    client = throttled_app.test_client()
    for i in range(LIMIT):
        assert post(client, "junk", ip=f"2001:db8:1:2::{i + 1}").status_code == 401
    assert_throttled(post(client, fake.issue_token(), ip="2001:db8:1:2:ffff::9"), 300)
    assert post(client, fake.issue_token(), ip="2001:db8:1:3::1").status_code == 200
    # An IPv4 client seen through an IPv6 socket is still that IPv4 client.
    for i in range(LIMIT):
        assert post(client, f"other-junk-{i}", ip="::ffff:192.0.2.9").status_code == 401
    assert_throttled(post(client, fake.issue_token(), ip="192.0.2.9"), 300)


# -- across app instances (workers, machines) sharing a store -------------------------

TwoApps = Callable[[], tuple[Flask, Flask]]


@pytest.fixture(params=["cachelib", "redis"])
def two_apps(request: pytest.FixtureRequest, make_app: AppFactory, tmp_path: Any) -> tuple[Flask, Flask]:
    """Two app instances, as two workers or machines would run them, on one store."""
    if request.param == "redis":
        redis_client = request.getfixturevalue("redis_client")
        return (
            make_app(session_redis=redis_client, PLURALITY_LOGIN_MAX_FAILURES=LIMIT),
            make_app(session_redis=redis_client, PLURALITY_LOGIN_MAX_FAILURES=LIMIT),
        )
    directory = str(tmp_path / "shared-sessions")

    def one() -> Flask:
        cache = FileSystemCache(directory, threshold=0, mode=0o600)  # each worker opens its own
        return make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache, PLURALITY_LOGIN_MAX_FAILURES=LIMIT)

    return one(), one()


def test_failures_in_one_instance_throttle_the_other(two_apps: tuple[Flask, Flask], fake: FakePlurality) -> None:
    first, second = (app.test_client() for app in two_apps)
    assert post(first, refused_token(fake)).status_code == 401
    assert post(second, refused_token(fake)).status_code == 401
    assert post(first, "junk").status_code == 401
    calls = len(fake.calls)
    assert_throttled(post(second, fake.issue_token()), 300)
    assert_throttled(post(first, fake.issue_token()), 300)
    assert len(fake.calls) == calls
    assert post(second, fake.issue_token(), ip="198.51.100.2").status_code == 200


def test_a_token_refused_in_one_instance_is_throttled_in_the_other(
    two_apps: tuple[Flask, Flask], fake: FakePlurality
) -> None:
    first, second = (app.test_client() for app in two_apps)
    token = refused_token(fake)
    for i in range(LIMIT):
        client = first if i % 2 else second
        assert post(client, token, ip=f"192.0.2.{i}").status_code == 401
    assert_throttled(post(first, token, ip="192.0.2.100"), 300)
    assert_throttled(post(second, token, ip="192.0.2.101"), 300)
    assert len(fake.calls) == 1


# -- throttle.attempt in an app's own view -----------------------------------------------------


def attempt_app(make_app: AppFactory, **config: Any) -> Flask:
    """An app whose own view checks a token through ``throttle.attempt``, as ``/login`` does."""
    app = make_app(PLURALITY_LOGIN_MAX_FAILURES=2, **config)

    @app.post("/check")
    def check() -> Any:
        token = request.get_data(as_text=True)
        try:
            with throttle.attempt(token):
                claims = read_claims(token, max_length=4096)
                get_extension().answers.lookup(token, claims["exp"])
        except throttle.TooManyAttempts as exc:
            return {"error": exc.reason}, 429, {"Retry-After": str(exc.retry_after)}
        except InvalidToken:
            return {"error": "no"}, 401
        except UpstreamUnavailable:
            return {"error": "outage"}, 503
        return {"ok": True}

    return app


def check(client: FlaskClient, token: str) -> TestResponse:
    return client.post("/check", data=token, environ_base={"REMOTE_ADDR": "203.0.113.77"})


def test_an_attempt_keeps_a_no_counted_and_refuses_past_the_limit(make_app: AppFactory, fake: FakePlurality) -> None:
    app = attempt_app(make_app)
    client = app.test_client()
    assert check(client, refused_token(fake)).status_code == 401
    assert check(client, "junk").status_code == 401  # refused locally, inside the attempt: counted too
    assert len(fake.calls) == 1
    good = fake.issue_token()
    refused = check(client, good)
    assert refused.status_code == 429 and refused.json == {"error": "too_many_attempts"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 300
    assert len(fake.calls) == 1  # refused before Plurality was asked
    # The same counters as /login's: this client is throttled there too.
    assert_throttled(post(client, good, ip="203.0.113.77"), 300, good)


def test_an_attempt_takes_back_an_outage_and_a_yes(make_app: AppFactory, fake: FakePlurality) -> None:
    client = attempt_app(make_app).test_client()
    fake.fail_next(503, times=4)
    for _ in range(4):
        assert check(client, fake.issue_token()).status_code == 503
    for _ in range(4):
        assert check(client, fake.issue_token()).status_code == 200
    assert len(fake.calls) == 8  # nothing was refused: none of them counted
    assert check(client, refused_token(fake)).status_code == 401
    assert check(client, refused_token(fake)).status_code == 401
    assert check(client, fake.issue_token()).status_code == 429


def test_an_attempt_answers_with_what_is_left_of_the_window(make_app: AppFactory, fake: FakePlurality) -> None:
    client = attempt_app(make_app, PLURALITY_LOGIN_FAILURE_WINDOW=6).test_client()
    assert check(client, "junk").status_code == 401
    assert check(client, "more-junk").status_code == 401
    first = int(check(client, "junk").headers["Retry-After"])
    assert 4 <= first <= 6
    time.sleep(2.1)
    later = int(check(client, fake.issue_token()).headers["Retry-After"])
    assert 1 <= later <= first - 1
    assert fake.calls == []
