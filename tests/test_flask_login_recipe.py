"""The documented Flask-Login recipe (``examples/flask_login_app.py``, shown in the docs):
``flask_login.current_user`` and ``@login_required`` honour Plurality logins, logouts,
revocations and bearer tokens, beside the app's own password logins."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import flask_login
import pytest
from cachelib.file import FileSystemCache
from flask import Flask
from flask.testing import FlaskClient
from flask_login import user_loaded_from_request
from helpers import csrf_token_in, stored_session

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.flask_login_app import create_app  # noqa: E402
from flask_plurality.testing import FakePlurality, config_for  # noqa: E402

SAME = {"Origin": "http://localhost"}


@pytest.fixture
def app(fake: FakePlurality, tmp_path: Path) -> Flask:
    sessions = FileSystemCache(str(tmp_path / "sessions"), threshold=0)  # the test's own store
    config = {"TESTING": True, "PLURALITY_FAKE": False, "SESSION_TYPE": "cachelib", "SESSION_CACHELIB": sessions}
    return create_app({**config, **config_for(fake)})


def test_login_required_follows_plurality_logins(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    assert client.get("/account").status_code == 401  # Flask-Login's own refusal

    user_id = client.post(
        "/plurality/login", json={"token": fake.issue_token(email="fl@example.com")}, headers=SAME
    ).json["profile"]["id"]
    loaded: list[Any] = []
    with user_loaded_from_request.connected_to(lambda sender, user: loaded.append(user), app):
        response = client.get("/account")
    assert response.status_code == 200
    assert response.json == {"id": user_id, "email": "fl@example.com"}
    assert [u.id for u in loaded] == [user_id]

    with app.test_request_context():
        assert not flask_login.current_user.is_authenticated  # a request without the cookie

    assert client.post("/plurality/logout", json={}, headers=SAME).status_code == 200
    assert client.get("/account").status_code == 401


def test_revoke_user_ends_the_flask_login_user_too(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    user_id = client.post("/plurality/login", json={"token": fake.issue_token()}, headers=SAME).json["profile"]["id"]
    assert client.get("/account").status_code == 200
    with app.app_context():
        app.extensions["plurality"].revoke_user(user_id)
    assert client.get("/account").status_code == 401


def test_bearer_tokens_reach_flask_login_views(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    token = fake.issue_token()
    response = client.get("/api/account", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json["id"]
    assert "Set-Cookie" not in response.headers
    assert client.get("/api/account").status_code == 401
    assert client.get("/api/account").headers["WWW-Authenticate"] == "Plurality, Bearer"


def test_flask_login_session_protection_strong_still_works(app: Flask, fake: FakePlurality) -> None:
    """Plurality's session is permanent, so even "strong" protection keeps the login."""
    app.config["SESSION_PROTECTION"] = "strong"
    client = app.test_client()
    client.post("/plurality/login", json={"token": fake.issue_token()}, headers=SAME)
    assert client.get("/account").status_code == 200
    assert client.get("/account", headers={"User-Agent": "another browser"}).status_code == 200


def password_login(client: FlaskClient) -> None:
    token = csrf_token_in(client.get("/login"))
    form = {"csrf_token": token, "email": "ann@example.com", "password": "correct horse battery staple"}
    assert client.post("/login", data=form).headers["Location"] == "/account"


def test_a_password_login_gets_a_new_session_id(app: Flask) -> None:
    client = app.test_client()
    client.get("/login")  # the form's CSRF token is kept in a stored session
    before = client.get_cookie("session")
    assert before is not None and stored_session(app, before.value) is not None
    password_login(client)
    after = client.get_cookie("session")
    assert after is not None and after.value != before.value
    assert stored_session(app, before.value) is None
    assert client.get("/account").json == {"id": "1", "email": "ann@example.com"}


def test_one_logout_ends_either_login(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    client.post("/plurality/login", json={"token": fake.issue_token()}, headers=SAME)
    assert client.get("/account").status_code == 200
    token = csrf_token_in(client.get("/login"))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302  # the app's logout_user()
    assert client.get("/plurality/session").status_code == 401
    assert client.get("/account").status_code == 401

    password_login(client)
    assert client.post("/plurality/logout", json={}, headers=SAME).status_code == 200
    assert client.get("/account").status_code == 401


def test_a_plurality_login_replaces_the_password_login(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    password_login(client)
    login = client.post("/plurality/login", json={"token": fake.issue_token(email="pl@example.com")}, headers=SAME)
    assert client.get("/account").json == {"id": login.json["profile"]["id"], "email": "pl@example.com"}
