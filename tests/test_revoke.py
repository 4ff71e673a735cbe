"""``plurality.revoke_user``: log a user out everywhere, in every instance sharing the store."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cachelib.file import FileSystemCache
from flask import Flask
from flask.testing import FlaskClient
from helpers import AppFactory, CountingRedis, captured, error_of, login, redis_url_or_skip

from flask_plurality import Plurality, signals
from flask_plurality.testing import FakePlurality


def revoke(app: Flask, user_id: str) -> None:
    """What the CLI command and an admin view do: in an app context, no request needed."""
    with app.app_context():
        plurality: Plurality = app.extensions["plurality"]
        plurality.revoke_user(user_id)


def signed_in(app: Flask, token: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, token).status_code == 200
    return client


def issued_after_now(fake: FakePlurality, user_id: str) -> str:
    """A token Plurality issues after a revocation made just now: ``iat`` counts in whole
    seconds, and a token of the revocation's own second is refused (it may be older)."""
    return fake.issue_token(user_id=user_id, iat=int(time.time()) + 1)


def assert_revoked_at_login(client: FlaskClient, token: str) -> None:
    """``/login`` refuses ``token`` as issued before its user's revocation, and starts nothing."""
    response = login(client, token)
    body = error_of(response, 401, "token_revoked", token)
    assert "Sign out of Plurality" in body["message"]
    assert "Set-Cookie" not in response.headers  # no session started
    assert client.get("/plurality/session").status_code == 401


def assert_out(client: FlaskClient) -> None:
    response = client.get("/protected")
    assert response.status_code == 401
    assert response.get_json()["error"] == "login_required"
    assert response.headers["WWW-Authenticate"] == "Plurality"


@pytest.fixture(params=["cachelib", "redis"])
def two_apps(request: pytest.FixtureRequest, make_app: AppFactory, tmp_path: Any) -> tuple[Flask, Flask]:
    """Two app instances (two workers, or two machines) on one session store."""
    if request.param == "redis":
        redis_client = request.getfixturevalue("redis_client")
        return make_app(session_redis=redis_client), make_app(session_redis=redis_client)
    directory = str(tmp_path / "shared-sessions")

    def one() -> Flask:
        return make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(directory, threshold=0))

    return one(), one()


def test_every_session_of_the_user_fails_in_every_instance(two_apps: tuple[Flask, Flask], fake: FakePlurality) -> None:
    first, second = two_apps
    alice = "alice-" + str(time.time_ns())
    alice_laptop = signed_in(first, fake.issue_token(user_id=alice))
    alice_phone = signed_in(first, fake.issue_token(user_id=alice))
    alice_elsewhere = signed_in(second, fake.issue_token(user_id=alice))
    bob_first = signed_in(first, fake.issue_token())
    bob_second = signed_in(second, fake.issue_token())
    stolen_cookie = alice_laptop.get_cookie("session")
    assert stolen_cookie is not None
    calls = len(fake.calls)

    revoke(second, alice)  # in the *other* instance than most of her sessions

    for client in (alice_laptop, alice_phone, alice_elsewhere):
        assert_out(client)
        assert client.get("/plurality/session").status_code == 401
        assert client.post("/sensitive").status_code == 401
    for client in (bob_first, bob_second):
        assert client.get("/protected").status_code == 200
    assert len(fake.calls) == calls  # the check is a store read, never an upstream call

    # Logging in again afterwards works, in either instance, and stays logged in.
    again = signed_in(first, issued_after_now(fake, alice))
    assert again.get("/protected").get_json()["id"] == alice
    assert again.get("/protected").status_code == 200
    assert signed_in(second, issued_after_now(fake, alice)).get("/protected").status_code == 200
    # The revoked sessions are gone for good, not revived by the new login.
    replay = first.test_client()
    replay.set_cookie("session", stolen_cookie.value)
    assert_out(replay)


def test_session_endpoint_and_current_profile_see_the_revocation(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token()
    assert login(client, token).status_code == 200
    user_id = client.get("/plurality/session").get_json()["profile"]["id"]
    assert client.get("/").get_json() == {"user": user_id}

    revoke(client.application, user_id)

    assert client.get("/").get_json() == {"user": None}  # an unprotected view
    assert client.get("/plurality/session").status_code == 401


def test_revoking_an_unknown_user_changes_nothing(client: FlaskClient, fake: FakePlurality) -> None:
    assert login(client, fake.issue_token()).status_code == 200
    revoke(client.application, "nobody-by-that-id")
    assert client.get("/protected").status_code == 200


def test_revoke_user_wants_a_user_id(app: Flask) -> None:
    with app.app_context():
        for bad in ("", None, 42):
            with pytest.raises(ValueError, match="user id"):
                app.extensions["plurality"].revoke_user(bad)


def test_revocation_does_not_trust_clocks(client: FlaskClient, fake: FakePlurality) -> None:
    """A login recorded by a machine whose clock runs an hour ahead is revoked all the same."""
    user = "skewed-" + str(time.time_ns())
    assert login(client, fake.issue_token(user_id=user)).status_code == 200
    with client.session_transaction() as sess:
        sess["_plurality"] = {**sess["_plurality"], "l": int(time.time()) + 3600}  # login_at
    revoke(client.application, user)
    assert_out(client)


def test_revocation_can_be_switched_off(make_app: AppFactory, fake: FakePlurality) -> None:
    """PLURALITY_REVOCATION_CHECK = False saves the store read; revoke_user has no effect then."""
    app = make_app(PLURALITY_REVOCATION_CHECK=False)
    user = "kept-" + str(time.time_ns())
    client = signed_in(app, fake.issue_token(user_id=user))
    revoke(app, user)
    assert client.get("/protected").status_code == 200
    assert client.get("/plurality/session").status_code == 200


@pytest.mark.redis
def test_the_check_costs_at_most_one_store_read_per_protected_request(
    make_app: AppFactory, fake: FakePlurality, redis_client: Any
) -> None:
    counts = {}
    for check in (True, False):
        counting = CountingRedis.from_url(redis_url_or_skip())
        counting.sent = []
        app = make_app(session_redis=counting, PLURALITY_REVOCATION_CHECK=check)
        client = signed_in(app, fake.issue_token())
        counting.sent.clear()
        assert client.get("/protected").status_code == 200
        counts[check] = list(counting.sent)
        counting.close()
    assert len(counts[True]) <= len(counts[False]) + 1, counts


# -- the token a revoked session began with ------------------------------------------------


def test_login_refuses_a_token_issued_before_the_revocation(two_apps: tuple[Flask, Flask], fake: FakePlurality) -> None:
    """Revoking a user must not be undone by posting the same token to /login again: the
    thief of a token keeps no access after "log out everywhere"."""
    first, second = two_apps
    alice = "alice-" + str(time.time_ns())
    stolen = fake.issue_token(user_id=alice)
    unused = fake.issue_token(user_id=alice)  # issued before too, never used yet
    bob = fake.issue_token()
    victim = signed_in(first, stolen)
    thief = signed_in(second, stolen)

    revoke(first, alice)

    assert_out(victim)
    assert_out(thief)
    for app in (first, second):  # in the instance that revoked, and in the other one
        for token in (stolen, unused):
            with captured(signals.login_failed, app) as failures:
                assert_revoked_at_login(app.test_client(), token)
            assert [f["reason"] for f in failures] == ["revoked"]
        assert signed_in(app, bob).get("/protected").status_code == 200  # somebody else
    # After signing in afresh (a token issued after the revocation), the user is back.
    again = signed_in(second, issued_after_now(fake, alice))
    assert again.get("/protected").get_json()["id"] == alice
    error_of(login(again, stolen), 401, "token_revoked", stolen)  # still refused...
    assert again.get("/protected").get_json()["id"] == alice  # ...and the new login is left as it was


def test_a_refused_old_token_counts_as_a_failed_login(make_app: AppFactory, fake: FakePlurality) -> None:
    """Whoever retries a revoked token is throttled like any refused login."""
    app = make_app(PLURALITY_LOGIN_MAX_FAILURES=3)
    alice = "alice-" + str(time.time_ns())
    token = fake.issue_token(user_id=alice)
    signed_in(app, token)
    revoke(app, alice)
    client = app.test_client()
    answers = [login(client, token) for _ in range(5)]
    assert [r.status_code for r in answers] == [401, 401, 401, 429, 429]
    assert answers[3].get_json()["error"] == "too_many_attempts"


def test_the_login_check_of_revocations_can_be_switched_off(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVOCATION_CHECK=False)
    user = "kept-" + str(time.time_ns())
    token = fake.issue_token(user_id=user)
    signed_in(app, token)
    revoke(app, user)
    assert signed_in(app, token).get("/protected").status_code == 200
