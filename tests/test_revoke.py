"""``plurality.revoke_user``: log a user out everywhere, in every instance sharing the store."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cachelib.file import FileSystemCache
from flask import Flask
from flask.testing import FlaskClient
from helpers import AppFactory, CountingRedis, login, redis_url_or_skip

from flask_plurality import Plurality
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
    again = signed_in(first, fake.issue_token(user_id=alice))
    assert again.get("/protected").get_json()["id"] == alice
    assert again.get("/protected").status_code == 200
    assert signed_in(second, fake.issue_token(user_id=alice)).get("/protected").status_code == 200
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
