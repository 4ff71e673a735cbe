"""What a request finds out about its visitor belongs to that request.

Flask reuses an app context that is already pushed: an app that pushes one at import
(common with Flask-SQLAlchemy), or a test that holds one across requests (``setUp``
style), shares one ``g`` between every request. Nothing the extension caches for a
request may live there, or the next visitor would be the last one's user.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from flask import Flask
from helpers import AppFactory, gunicorn, login

from flask_plurality import current_profile, current_user, logins
from flask_plurality.testing import FakePlurality, PluralityTestClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def held(make_app: AppFactory) -> Iterator[Flask]:
    """An app whose app context is pushed before any request and held through them all."""
    app = make_app()
    app.extensions["plurality"].user_loader(lambda profile: {"id": profile.id})

    @app.get("/who")
    def who() -> dict[str, Any]:
        return {
            "logged_in": bool(current_profile),
            "id": current_profile.id,
            "user": current_user._get_current_object(),
        }

    with app.app_context():  # held across the test's requests, as a setUp() holds it
        yield app


def test_a_held_app_context_shares_no_visitor_between_clients(held: Flask, fake: FakePlurality) -> None:
    first, anonymous, third = held.test_client(), held.test_client(), held.test_client()
    assert login(first, fake.issue_token(email="first@example.com")).status_code == 200
    me = first.get("/who").get_json()
    assert me["logged_in"] and me["user"] == {"id": me["id"]}
    assert first.get("/protected").get_json()["email"] == "first@example.com"

    nobody = anonymous.get("/who").get_json()
    assert nobody == {"logged_in": False, "id": None, "user": None}
    assert anonymous.get("/protected").status_code == 401

    assert login(third, fake.issue_token(email="third@example.com")).status_code == 200
    them = third.get("/who").get_json()
    assert them["logged_in"] and them["id"] != me["id"] and them["user"] == {"id": them["id"]}
    assert third.get("/protected").get_json()["email"] == "third@example.com"
    assert first.get("/who").get_json()["id"] == me["id"]  # each still sees itself
    assert anonymous.get("/who").get_json()["logged_in"] is False


def test_outside_a_request_there_is_nobody(held: Flask, fake: FakePlurality) -> None:
    client = held.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert client.get("/who").get_json()["logged_in"]
    assert current_user._get_current_object() is None  # the held app context is no request
    assert not current_profile
    assert getattr(current_profile, "id") is None  # noqa: B009 - typed as a Profile, whose id is a str


def test_four_reads_for_an_anonymous_visitor_look_once(
    app: Flask, fake: FakePlurality, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[Any] = []
    original = logins.Login.load.__func__  # type: ignore[attr-defined]

    def counting(cls: type[logins.Login], data: Any) -> logins.Login | None:
        parsed.append(data)
        return original(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(logins.Login, "load", classmethod(counting))

    @app.get("/four")
    def four() -> dict[str, Any]:
        return {"reads": [bool(current_profile), current_profile.id, current_profile.email, bool(current_profile)]}

    client = app.test_client()
    assert client.get("/four").get_json() == {"reads": [False, None, None, False]}
    assert len(parsed) == 1, parsed
    assert client.get("/four").status_code == 200
    assert len(parsed) == 2, parsed  # once per request, not once per read


def _stored_sid(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


@pytest.mark.parametrize("path", ["/", "/plurality/session", "/protected"])
def test_a_revoked_session_leaves_no_parsed_login_behind(app: Flask, fake: FakePlurality, path: str) -> None:
    """``/`` reads ``current_profile`` without the decorator: the same check, the same end."""
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    user = client.get("/protected").get_json()["id"]
    sid = _stored_sid(client)
    assert sid in logins._parsed  # the parse cache holds the login, token included
    with app.app_context():
        app.extensions["plurality"].revoke_user(user)
    response = client.get(path)
    assert response.status_code == (200 if path == "/" else 401)
    if path == "/":
        assert response.get_json() == {"user": None}
    assert sid not in logins._parsed
    assert all(entry[1].profile.id != user for entry in logins._parsed.values())
    assert client.get("/protected").status_code == 401  # and the session is gone


# -- the app's own tests, in their style ----------------------------------------------------------


@pytest.fixture
def recipe(fake: FakePlurality, tmp_path: Path) -> Iterator[Flask]:
    """The Flask-Login recipe (examples/), tested the way such apps are: one app context
    pushed in ``setUp`` and held across the test's requests."""
    import sys

    from cachelib.file import FileSystemCache

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from examples.flask_login_app import create_app
    from flask_plurality.testing import config_for

    sessions = FileSystemCache(str(tmp_path / "sessions"), threshold=0)
    app = create_app(
        {"TESTING": True, "PLURALITY_FAKE": False, "SESSION_TYPE": "cachelib", "SESSION_CACHELIB": sessions}
        | config_for(fake)
    )
    app.test_client_class = PluralityTestClient
    with app.app_context():  # held across the test's requests, as a setUp() holds it
        yield app


def test_plurality_test_clients_never_share_the_apps_g(recipe: Flask, fake: FakePlurality) -> None:
    """Flask-Login caches its user in ``g._login_user``: under one held app context, a
    plain test client's next request would inherit it. PluralityTestClient gives every
    request its own context."""
    first, anonymous, third = (cast(PluralityTestClient, recipe.test_client(fake=fake)) for _ in range(3))
    one = first.login_as("one@example.com")
    assert first.get("/account").get_json() == {"id": one.id, "email": "one@example.com"}
    assert anonymous.get("/account").status_code == 401  # Flask-Login's own refusal
    other = third.login_as("other@example.com")
    assert third.get("/account").get_json() == {"id": other.id, "email": "other@example.com"}
    assert first.get("/account").get_json()["id"] == one.id
    assert anonymous.get("/account").status_code == 401


def test_with_client_still_keeps_the_last_request(recipe: Flask, fake: FakePlurality) -> None:
    from flask import request

    client = cast(PluralityTestClient, recipe.test_client(fake=fake))
    client.login_as("kept@example.com")
    with client:
        assert client.get("/account?x=1").status_code == 200
        assert request.args["x"] == "1"  # the request's context, pushed again for the test
        assert current_profile.email == "kept@example.com"


# -- under gunicorn: one sync worker, one thread, the context held since import -----------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gunicorn_sync_worker_with_a_held_context_shows_nobody_to_anonymous_visitors(
    fake: FakePlurality, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HELD_INSTANCE_PATH": str(tmp_path / "instance"),
        "HELD_API_URL": fake.url,
        "HELD_CLIENT_ID": fake.client_id,
        "HELD_CLIENT_SECRET": fake.client_secret,
    }
    bad = []
    with gunicorn("held_context_app:app", env, 1, tmp_path / "gunicorn.log", "--threads", "1") as base:
        for round_ in range(20):
            signed_in = requests.post(f"{base}/plurality/login", json={"token": fake.issue_token()}, timeout=10)
            assert signed_in.status_code == 200, signed_in.text
            mine = requests.get(f"{base}/who", cookies=signed_in.cookies, timeout=10).json()
            assert mine["logged_in"] and mine["id"] == signed_in.json()["profile"]["id"]
            anonymous = requests.get(f"{base}/who", timeout=10).json()
            if anonymous != {"logged_in": False, "id": None, "user": None}:
                bad.append((round_, anonymous))
    assert bad == []
