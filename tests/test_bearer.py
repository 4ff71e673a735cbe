"""API clients send the widget's token as ``Authorization: Bearer`` instead of a session cookie.

Every row through the real stand-in over HTTP: the status, the ``WWW-Authenticate``
value and the body a client reads, how many calls reached Plurality, and that a bearer
request leaves no session and no cookie behind.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from flask import Flask, session
from helpers import AppFactory, all_at_once, error_of, login
from werkzeug.test import TestResponse

from flask_plurality import current_profile, plurality_required, signals
from flask_plurality.stores import get_store, key
from flask_plurality.testing import FakePlurality

INVALID = 'Bearer error="invalid_token"'
BOTH = "Plurality, Bearer"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_app(make_app: AppFactory, **config: Any) -> Flask:
    """An app with bearer routes beside conftest's cookie-only ``/protected``."""
    app = make_app(**config)

    @app.route("/api/me", methods=["GET", "OPTIONS"])
    @plurality_required(bearer=True)
    def me() -> dict[str, Any]:
        return {"id": current_profile.id, "email": current_profile.email, "exp": current_profile.expires_at}

    @app.post("/api/transfer")
    @plurality_required(bearer=True, revalidate=True)
    def transfer() -> dict[str, Any]:
        return {"done": True, "id": current_profile.id}

    @app.get("/api/cookie-only")
    @plurality_required(bearer=False)
    def cookie_only() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/api/writes-session")
    @plurality_required(bearer=True)
    def writes_session() -> dict[str, Any]:
        session["visits"] = session.get("visits", 0) + 1
        return {"id": current_profile.id}

    return app


def no_cookie(response: TestResponse) -> None:
    assert "Set-Cookie" not in response.headers, response.headers


def invalid_token(response: TestResponse, *secrets: str, code: str = "invalid_token") -> None:
    error_of(response, 401, code, *secrets)
    assert response.headers["WWW-Authenticate"] == INVALID
    no_cookie(response)


def revoked_token(response: TestResponse) -> None:
    """RFC 6750's answer, and in the body the code that tells the page to sign out of the widget."""
    invalid_token(response, code="token_revoked")


def stored_keys(app: Flask) -> set[str]:
    """Every key in the app's session store (the FileSystemCache directory or Redis db)."""
    inner: Any = app.session_interface.inner  # type: ignore[attr-defined]
    if hasattr(inner, "client"):
        return {k.decode() for k in inner.client.keys("*")}
    import os

    # The file store's own lock files are not entries.
    return {name for name in os.listdir(inner.cache._path) if not name.startswith("plurality-lock-")}


# -- the switch ---------------------------------------------------------------------------------


def test_bearer_is_off_by_default(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app)
    response = app.test_client().get("/protected", headers=bearer(fake.issue_token()))
    error_of(response, 401, "login_required")
    assert response.headers["WWW-Authenticate"] == "Plurality"
    assert fake.calls == []


def test_accept_bearer_turns_it_on_app_wide(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app, PLURALITY_ACCEPT_BEARER=True)
    token = fake.issue_token(email="api@example.com")
    response = app.test_client().get("/protected", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["email"] == "api@example.com"
    no_cookie(response)
    assert len(fake.calls) == 1 and fake.calls[0].token == token


def test_accept_bearer_reads_environment_strings(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app, PLURALITY_ACCEPT_BEARER="false")
    assert app.test_client().get("/protected", headers=bearer(fake.issue_token())).status_code == 401
    with pytest.raises(Exception, match="PLURALITY_ACCEPT_BEARER"):
        make_app(PLURALITY_ACCEPT_BEARER="maybe")
    with pytest.raises(Exception, match="PLURALITY_BEARER_REVALIDATE"):
        make_app(PLURALITY_BEARER_REVALIDATE=-1)


def test_bearer_per_route_overrides_the_setting(make_app: AppFactory, fake: FakePlurality) -> None:
    token = fake.issue_token()
    off = api_app(make_app).test_client()
    assert off.get("/api/me", headers=bearer(token)).status_code == 200  # bearer=True, setting off
    on = api_app(make_app, PLURALITY_ACCEPT_BEARER=True).test_client()
    refused = on.get("/api/cookie-only", headers=bearer(token))  # bearer=False, setting on
    error_of(refused, 401, "login_required")
    assert refused.headers["WWW-Authenticate"] == "Plurality"


def test_a_valid_token_lets_the_view_see_its_profile(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app)
    token = fake.issue_token(email="cli@example.com", ttl=3600)
    response = app.test_client().get("/api/me", headers=bearer(token))
    assert response.status_code == 200
    body = response.json
    assert body["email"] == "cli@example.com"
    assert abs(body["exp"] - (time.time() + 3600)) < 60
    no_cookie(response)
    # The scheme is case-insensitive (RFC 7235), surrounding spaces are not part of the token.
    assert app.test_client().get("/api/me", headers={"Authorization": f"bearer   {token} "}).status_code == 200


# -- no session, no cookie ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cachelib", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_bearer_request_creates_no_session_and_sets_no_cookie(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    extra = {"session_redis": request.getfixturevalue("redis_client")} if backend == "redis" else {}
    app = api_app(make_app, **extra)
    client = app.test_client()
    token = fake.issue_token()
    before = stored_keys(app)
    for path in ("/api/me", "/api/writes-session", "/api/writes-session"):
        response = client.get(path, headers=bearer(token))
        assert response.status_code == 200
        no_cookie(response)
    assert client.get_cookie("session") is None
    # Only the extension's answer cache entry was written: no session entry.
    added = stored_keys(app) - before
    if backend == "redis":
        assert all(key.startswith("plurality:answer:") for key in added), added
    assert len(added) == 1
    # Every bearer request starts from an empty session: the view's write went nowhere.
    assert client.get("/api/writes-session", headers=bearer(token)).status_code == 200


def test_the_bearer_token_decides_over_a_cookie_session(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app)
    client = app.test_client()
    assert login(client, fake.issue_token(email="cookie@example.com")).status_code == 200
    assert client.get("/api/me").json["email"] == "cookie@example.com"

    response = client.get("/api/me", headers=bearer(fake.issue_token(email="bearer@example.com")))
    assert response.status_code == 200 and response.json["email"] == "bearer@example.com"
    no_cookie(response)  # nor is the cookie session refreshed
    invalid_token(client.get("/api/me", headers=bearer("junk")))  # a bad token is not rescued by the cookie
    # The cookie session itself is untouched.
    assert client.get("/api/me").json["email"] == "cookie@example.com"


# -- refusals -----------------------------------------------------------------------------------


def test_no_credentials_on_a_bearer_route_names_both_schemes(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app).test_client()
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = client.get("/api/me", headers=headers)
        error_of(response, 401, "login_required")
        assert response.headers["WWW-Authenticate"] == BOTH
        no_cookie(response)
    assert fake.calls == []


def test_a_junk_or_expired_token_is_refused_without_asking_plurality(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app).test_client()
    expired = fake.issue_token(ttl=-10)
    for token in ("junk", "a.b.c", expired, "x" * 5000, fake.issue_token() + " extra"):
        invalid_token(client.get("/api/me", headers=bearer(token)), token)
    assert fake.calls == []


def test_a_token_plurality_refuses_is_refused_and_remembered(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app).test_client()
    token = fake.issue_token()
    fake.revoke(token)
    invalid_token(client.get("/api/me", headers=bearer(token)), token)
    assert len(fake.calls) == 1
    invalid_token(client.get("/api/me", headers=bearer(token)), token)
    assert len(fake.calls) == 1  # the "no" is reused from the answer cache

    fake.add_client("other-app", "other-secret")
    foreign = fake.issue_token(client_id="other-app")
    invalid_token(client.get("/api/me", headers=bearer(foreign)), foreign)
    assert len(fake.calls) == 2


# -- the answer cache ---------------------------------------------------------------------------


def test_answers_are_reused_for_the_revalidation_window(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app, PLURALITY_BEARER_REVALIDATE=1).test_client()
    token = fake.issue_token()
    for _ in range(5):
        assert client.get("/api/me", headers=bearer(token)).status_code == 200
    assert len(fake.calls) == 1
    time.sleep(1.2)
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    assert len(fake.calls) == 2


def test_the_default_window_is_sixty_seconds(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app)
    assert app.config["PLURALITY_BEARER_REVALIDATE"] == 60
    assert app.config["PLURALITY_ACCEPT_BEARER"] is False


def test_zero_asks_every_time_and_so_does_a_revalidate_true_route(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app, PLURALITY_BEARER_REVALIDATE=0).test_client()
    token = fake.issue_token()
    for _ in range(3):
        assert client.get("/api/me", headers=bearer(token)).status_code == 200
    assert len(fake.calls) == 3

    fake.reset_calls()
    client = api_app(make_app).test_client()  # default window, but the route says revalidate=True
    for _ in range(3):
        assert client.post("/api/transfer", headers=bearer(token)).json["done"] is True
    assert len(fake.calls) == 3


def test_a_revalidation_refusal_is_seen_after_the_window(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app, PLURALITY_BEARER_REVALIDATE=1).test_client()
    token = fake.issue_token()
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    fake.revoke(token)
    assert client.get("/api/me", headers=bearer(token)).status_code == 200  # still within the window
    time.sleep(1.2)
    invalid_token(client.get("/api/me", headers=bearer(token)))


# -- outages ------------------------------------------------------------------------------------


def test_an_outage_answers_503_under_deny(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app).test_client()
    fake.fail_next(503, retry_after=7)
    response = client.get("/api/me", headers=bearer(fake.issue_token()))
    error_of(response, 503, "upstream_unavailable")
    assert response.headers["Retry-After"] == "7"
    no_cookie(response)


def test_allow_lets_a_recently_confirmed_token_in_during_an_outage(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(
        make_app, PLURALITY_BEARER_REVALIDATE=1, PLURALITY_ON_UPSTREAM_ERROR="allow", PLURALITY_GRACE_PERIOD=30
    )
    client = app.test_client()
    token = fake.issue_token()
    with signals.revalidation_failed.connected_to(seen := _Recorder(), app):
        assert client.get("/api/me", headers=bearer(token)).status_code == 200
        time.sleep(1.2)
        fake.fail_next(503, times=2)
        assert client.get("/api/me", headers=bearer(token)).status_code == 200  # confirmed 1.2 s ago: let in
        # A token never confirmed has no grace.
        error_of(client.get("/api/me", headers=bearer(fake.issue_token())), 503, "upstream_unavailable")
    assert [kw["allowed"] for kw in seen.calls] == [True, False]
    assert len(fake.calls) == 3


def test_allow_ends_with_the_grace_period(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(
        make_app, PLURALITY_BEARER_REVALIDATE=1, PLURALITY_ON_UPSTREAM_ERROR="allow", PLURALITY_GRACE_PERIOD=2
    ).test_client()
    token = fake.issue_token()
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    time.sleep(2.3)
    fake.fail_next(503)
    error_of(client.get("/api/me", headers=bearer(token)), 503, "upstream_unavailable")


def test_the_breaker_stops_calling_a_failing_plurality(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app, PLURALITY_BREAKER_THRESHOLD=2, PLURALITY_BREAKER_COOLDOWN=60).test_client()
    fake.fail_next(502, times=10)
    for _ in range(2):
        error_of(client.get("/api/me", headers=bearer(fake.issue_token())), 503, "upstream_unavailable")
    assert len(fake.calls) == 2
    for _ in range(3):
        response = client.get("/api/me", headers=bearer(fake.issue_token()))
        error_of(response, 503, "upstream_unavailable")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert len(fake.calls) == 2  # open: nobody waits for Plurality


def test_rejected_client_credentials_are_an_outage_not_the_users_fault(
    make_app: AppFactory, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    client = api_app(make_app, PLURALITY_CLIENT_SECRET="not-the-secret").test_client()
    token = fake.issue_token()
    response = client.get("/api/me", headers=bearer(token))
    error_of(response, 503, "upstream_unavailable", token, "not-the-secret")
    assert "Invalid Client Secret" in caplog.text
    assert token not in caplog.text and "not-the-secret" not in caplog.text


# -- throttling ---------------------------------------------------------------------------------


def test_failing_bearer_tokens_count_in_the_login_throttle(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app, PLURALITY_LOGIN_MAX_FAILURES=3)
    client = app.test_client()
    refused = fake.issue_token()
    fake.revoke(refused)
    ip = {"REMOTE_ADDR": "203.0.113.9"}
    invalid_token(client.get("/api/me", headers=bearer("junk"), environ_base=ip))
    invalid_token(client.get("/api/me", headers=bearer(fake.issue_token(ttl=-5)), environ_base=ip))
    invalid_token(client.get("/api/me", headers=bearer(refused), environ_base=ip))
    assert len(fake.calls) == 1
    for token in (fake.issue_token(), "junk"):
        response = client.get("/api/me", headers=bearer(token), environ_base=ip)
        error_of(response, 429, "too_many_attempts", token)
        assert 1 <= int(response.headers["Retry-After"]) <= 300
        no_cookie(response)
    assert len(fake.calls) == 1  # a throttled client costs Plurality nothing
    # Failed bearer requests and failed logins share one count.
    throttled = client.post("/plurality/login", json={"token": fake.issue_token()}, environ_base=ip)
    error_of(throttled, 429, "too_many_attempts")
    # Other clients are not affected.
    assert (
        client.get(
            "/api/me", headers=bearer(fake.issue_token()), environ_base={"REMOTE_ADDR": "198.51.100.1"}
        ).status_code
        == 200
    )


def test_successes_do_not_count(make_app: AppFactory, fake: FakePlurality) -> None:
    client = api_app(make_app, PLURALITY_LOGIN_MAX_FAILURES=2, PLURALITY_BEARER_REVALIDATE=0).test_client()
    token = fake.issue_token()
    for _ in range(5):
        assert client.get("/api/me", headers=bearer(token)).status_code == 200


def refused_token(fake: FakePlurality) -> str:
    """Well formed and unexpired, so it reaches Plurality, which says no."""
    token = fake.issue_token()
    fake.revoke(token)
    return token


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/me"), ("POST", "/api/transfer")],  # through the ask lock; asked on every request
)
def test_concurrent_failing_tokens_reach_plurality_at_most_the_limit(
    make_app: AppFactory, fake: FakePlurality, method: str, path: str
) -> None:
    """At most the limit's failures reach Plurality, for bearer tokens too: 64 different
    refused tokens at once from one client."""
    app = api_app(make_app, PLURALITY_LOGIN_MAX_FAILURES=10)
    tokens = [refused_token(fake) for _ in range(64)]
    fake.latency = 0.3  # every request arrives while the first calls are still out
    ip = {"REMOTE_ADDR": "203.0.113.20"}
    responses = all_at_once(
        len(tokens), lambda n: app.test_client().open(path, method=method, headers=bearer(tokens[n]), environ_base=ip)
    )
    assert len(fake.calls) == 10
    assert Counter(r.status_code for r in responses) == {401: 10, 429: 54}
    for response, token in zip(responses, tokens, strict=True):
        if response.status_code == 429:
            error_of(response, 429, "too_many_attempts", token)
            assert 1 <= int(response.headers["Retry-After"]) <= 300
        else:
            invalid_token(response, token)


def test_one_failing_token_sent_at_once_asks_plurality_once(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app, PLURALITY_LOGIN_MAX_FAILURES=10)
    token = refused_token(fake)
    fake.latency = 0.3
    responses = all_at_once(32, lambda _: app.test_client().get("/api/me", headers=bearer(token)))
    assert len(fake.calls) == 1
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {401, 429} and statuses[401] >= 1, statuses


@pytest.mark.parametrize("limit", [1, 2])
def test_a_burst_of_good_requests_with_one_token_is_not_throttled(
    make_app: AppFactory, fake: FakePlurality, limit: int
) -> None:
    """A page's twenty API calls at once share one upstream call, counted once at most."""
    app = api_app(make_app, PLURALITY_LOGIN_MAX_FAILURES=limit)
    token = fake.issue_token()
    fake.latency = 0.3
    responses = all_at_once(20, lambda _: app.test_client().get("/api/me", headers=bearer(token)))
    assert [r.status_code for r in responses] == [200] * 20, {r.get_data(as_text=True) for r in responses}
    assert len(fake.calls) == 1


# -- revoke_user --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cachelib", pytest.param("redis", marks=pytest.mark.redis)])
def test_revoke_user_refuses_bearer_tokens_issued_before_it(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    extra = {"session_redis": request.getfixturevalue("redis_client")} if backend == "redis" else {}
    app = api_app(make_app, **extra)
    client = app.test_client()
    alice = f"alice-{time.time_ns()}"
    earlier = fake.issue_token(user_id=alice)
    bob = fake.issue_token()
    assert client.get("/api/me", headers=bearer(earlier)).status_code == 200  # its "yes" is in the cache now
    assert client.get("/api/me", headers=bearer(bob)).status_code == 200
    calls = len(fake.calls)
    with app.app_context():
        app.extensions["plurality"].revoke_user(alice)
    revoked_token(client.get("/api/me", headers=bearer(earlier)))
    revoked_token(client.get("/api/me", headers=bearer(earlier)))
    assert client.get("/api/me", headers=bearer(bob)).status_code == 200  # somebody else
    assert len(fake.calls) == calls  # refused from the store, without asking Plurality
    # A token Plurality issues after the revocation works.
    later = fake.issue_token(user_id=alice, iat=int(time.time()) + 2)
    assert client.get("/api/me", headers=bearer(later)).status_code == 200
    # Another instance sharing the store refuses the earlier token too.
    other = api_app(make_app, **extra) if backend == "redis" else None
    if other is not None:
        revoked_token(other.test_client().get("/api/me", headers=bearer(earlier)))


@pytest.mark.parametrize("stamp", ["garbage", "\u00b2\u00b3-0123abcd", "-", ""])
def test_a_revocation_stamp_that_cannot_be_read_refuses_the_token(
    make_app: AppFactory, fake: FakePlurality, stamp: str
) -> None:
    """A stamp not written by revoke_user (another program, a damaged entry) cannot say
    when the user was revoked: the token is refused rather than let in, never a 500."""
    app = api_app(make_app)
    client = app.test_client()
    alice = f"alice-{time.time_ns()}"
    token = fake.issue_token(user_id=alice)
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    with app.app_context():
        app.extensions["plurality"].revoke_user(alice)
        get_store().set(key("revoked", alice), stamp, 60)
    revoked_token(client.get("/api/me", headers=bearer(token)))
    assert client.get("/api/me", headers=bearer(fake.issue_token())).status_code == 200  # somebody else


# -- the rest of the decorator's promises -------------------------------------------------------


def test_options_passes_and_the_unauthorized_handler_applies(make_app: AppFactory, fake: FakePlurality) -> None:
    app = api_app(make_app)
    client = app.test_client()
    assert client.open("/api/me", method="OPTIONS").status_code == 200
    assert fake.calls == []
    plurality = app.extensions["plurality"]
    plurality.unauthorized_handler(lambda: ({"custom": True}, 401))
    assert client.get("/api/me").json == {"custom": True}
    # A bad token is not "not logged in": RFC 6750's answer, not the handler's.
    invalid_token(client.get("/api/me", headers=bearer("junk")))


def test_signals_are_not_login_signals(make_app: AppFactory, fake: FakePlurality) -> None:
    """A bearer request is no login: it sends neither ``logged_in`` nor a session."""
    app = api_app(make_app)
    with signals.logged_in.connected_to(seen := _Recorder(), app):
        assert app.test_client().get("/api/me", headers=bearer(fake.issue_token())).status_code == 200
    assert seen.calls == []


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)
