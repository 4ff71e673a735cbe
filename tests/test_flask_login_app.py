"""flask-plurality inside a real Flask-Login app (``tests/flask_login_app``: password logins
from Flask-WTF forms with CSRF, remember-me, Flask-Babel lazy strings), on the file store
and on Redis: no session fixation, one logout ends both logins, one identity per
session, remember-me, flashed messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import user_logged_out
from flask_login_app import PASSWORD, create_app
from helpers import SAME_ORIGIN, captured, csrf_token_in, stored_session

from flask_plurality import signals
from flask_plurality.testing import FakePlurality, config_for, store_config

REMEMBER = "remember_token"


@pytest.fixture(params=["files", pytest.param("redis", marks=pytest.mark.redis)])
def app(request: pytest.FixtureRequest, fake: FakePlurality, tmp_path: Path) -> Flask:
    if request.param == "redis":
        store: dict[str, Any] = {"SESSION_TYPE": "redis", "SESSION_REDIS": request.getfixturevalue("redis_client")}
    else:
        store = store_config(tmp_path / "sessions")
    return create_app({"TESTING": True, **config_for(fake), **store}, str(tmp_path / "instance"))


def sid(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie is not None else None


def password_login(client: FlaskClient, email: str, *, remember: bool = False) -> Any:
    form = {"csrf_token": csrf_token_in(client.get("/login")), "email": email, "password": PASSWORD}
    if remember:
        form["remember"] = "y"
    response = client.post("/login", data=form)
    assert response.status_code == 302 and response.headers["Location"] == "/account", response.text
    return response


def plurality_login(client: FlaskClient, fake: FakePlurality, email: str) -> Any:
    response = client.post("/plurality/login", json={"token": fake.issue_token(email=email)}, headers=SAME_ORIGIN)
    assert response.status_code == 200, response.text
    return response


def app_logout(client: FlaskClient) -> Any:
    """The app's own Log out button: a CSRF-protected form calling ``logout_user()``."""
    token = csrf_token_in(client.get("/account"))
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    return response


def whoami(client: FlaskClient) -> dict[str, Any]:
    return dict(client.get("/whoami").json)


def cookie_dropped(response: Any, name: str) -> bool:
    return any(
        h.startswith(f"{name}=;") and "Expires=Thu, 01 Jan 1970" in h for h in response.headers.getlist("Set-Cookie")
    )


# -- session fixation ----------------------------------------------------------------------


def test_a_planted_session_id_is_not_logged_in_by_the_victims_password_login(app: Flask) -> None:
    attacker = app.test_client()
    attacker.get("/login")  # the form's CSRF token makes a stored session
    planted = sid(attacker)
    assert planted is not None and stored_session(app, planted) is not None

    victim = app.test_client()
    victim.set_cookie("session", planted)
    password_login(victim, "alice@example.com")
    assert sid(victim) not in (None, planted)
    assert stored_session(app, planted) is None  # the old id's entry is gone
    assert stored_session(app, sid(victim) or "")["_user_id"]  # type: ignore[index]

    assert attacker.get("/account").status_code == 302  # the planted id is nobody's
    assert whoami(attacker) == {"user": None, "plurality": None}
    assert "Signed in as alice@example.com" in victim.get("/account").text


def test_a_planted_session_id_is_not_logged_in_by_the_remember_me_cookie(app: Flask) -> None:
    earlier = app.test_client()
    password_login(earlier, "alice@example.com", remember=True)
    remember = earlier.get_cookie(REMEMBER)
    assert remember is not None

    attacker = app.test_client()
    attacker.get("/login")
    planted = sid(attacker)
    assert planted is not None
    victim = app.test_client()  # the browser was closed: the remember-me cookie and a planted id
    victim.set_cookie(REMEMBER, remember.value)
    victim.set_cookie("session", planted)
    assert victim.get("/account").status_code == 200  # Flask-Login restored alice...
    assert sid(victim) not in (None, planted)  # ... under a new id
    assert attacker.get("/account").status_code == 302
    assert stored_session(app, planted) is None


# -- one logout ends both --------------------------------------------------------------------


def test_the_apps_logout_ends_the_plurality_login(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    profile = plurality_login(client, fake, "carol@example.com").json["profile"]
    assert "Signed in as carol@example.com" in client.get("/account").text  # Flask-Login follows it
    old = sid(client)
    with captured(signals.logged_out, app) as logouts:
        page = client.get(app_logout(client).headers["Location"])
    assert [e["profile"].id for e in logouts] == [profile["id"]]
    assert "You have been logged out." in page.text
    assert whoami(client) == {"user": None, "plurality": None}
    assert client.get("/plurality/session").status_code == 401
    assert client.get("/account").status_code == 302
    stored = stored_session(app, old or "")
    assert stored is None or "_plurality" not in stored


def test_one_logout_ends_a_linked_password_and_plurality_login(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    plurality_login(client, fake, "alice@example.com")
    password_login(client, "alice@example.com", remember=True)  # the same account: both stay
    assert whoami(client) == {"user": "alice@example.com", "plurality": "alice@example.com"}
    assert client.get_cookie(REMEMBER) is not None

    with captured(signals.logged_out, app) as logouts:
        response = app_logout(client)
    assert len(logouts) == 1 and logouts[0]["profile"].email == "alice@example.com"
    assert cookie_dropped(response, REMEMBER) and client.get_cookie(REMEMBER) is None
    assert whoami(client) == {"user": None, "plurality": None}


@pytest.mark.parametrize("body", [{"json": {}}, {"data": {}}])
def test_the_plurality_logout_ends_the_flask_login_login(app: Flask, body: dict[str, Any]) -> None:
    client = app.test_client()
    password_login(client, "bob@example.com", remember=True)
    old = sid(client)
    with captured(user_logged_out, app) as flask_login_logouts:
        response = client.post("/plurality/logout", headers=SAME_ORIGIN, **body)
    assert response.status_code == 200 and response.json == {"authenticated": False}
    assert flask_login_logouts == []  # no logout_user() call: its keys went with the session
    assert cookie_dropped(response, REMEMBER) and client.get_cookie(REMEMBER) is None
    assert stored_session(app, old or "") is None
    assert client.get("/account").status_code == 302
    assert whoami(client) == {"user": None, "plurality": None}


# -- one identity per session -----------------------------------------------------------------


def test_a_plurality_login_over_a_password_session_starts_a_fresh_session(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    password_login(client, "bob@example.com", remember=True)
    old = sid(client)
    with client.session_transaction() as sess:
        sess["cart"] = ["bob's book"]
    response = plurality_login(client, fake, "carol@example.com")
    assert cookie_dropped(response, REMEMBER)  # bob's remember-me cookie would bring him back
    assert sid(client) != old and stored_session(app, old or "") is None
    stored = stored_session(app, sid(client) or "")
    assert stored is not None and "_plurality" in stored
    assert not {"_user_id", "_fresh", "_id", "_remember", "cart"} & set(stored)
    assert whoami(client) == {"user": "carol@example.com", "plurality": "carol@example.com"}


def test_a_password_login_over_another_users_plurality_session_ends_it(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    alice = plurality_login(client, fake, "alice@example.com").json["profile"]
    with client.session_transaction() as sess:
        sess["cart"] = ["alice's book"]
    old = sid(client)
    with captured(signals.logged_out, app) as logouts:
        password_login(client, "bob@example.com")
    assert [e["profile"].id for e in logouts] == [alice["id"]]
    assert sid(client) != old and stored_session(app, old or "") is None
    stored = stored_session(app, sid(client) or "")
    assert stored is not None and "_plurality" not in stored and "cart" not in stored
    assert stored["_user_id"]
    assert whoami(client) == {"user": "bob@example.com", "plurality": None}
    assert client.get("/plurality/session").status_code == 401


def test_a_password_login_linked_to_the_plurality_login_keeps_both(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    plurality_login(client, fake, "alice@example.com")
    old = sid(client)
    with captured(signals.logged_out, app) as logouts:
        password_login(client, "alice@example.com")
    assert logouts == []
    assert sid(client) != old and stored_session(app, old or "") is None  # still a new id
    assert whoami(client) == {"user": "alice@example.com", "plurality": "alice@example.com"}
    assert client.get("/plurality/session").status_code == 200


# -- remember-me ----------------------------------------------------------------------------------


def test_without_remember_me_the_login_ends_with_the_browser(app: Flask) -> None:
    client = app.test_client()
    response = password_login(client, "bob@example.com")
    [cookie] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert "Expires=" not in cookie and "Max-Age" not in cookie  # a browser-session cookie
    assert client.get_cookie(REMEMBER) is None
    client.delete_cookie("session")  # the browser was closed
    assert client.get("/account").status_code == 302


def test_the_remember_me_cookie_restores_the_password_user(app: Flask) -> None:
    client = app.test_client()
    password_login(client, "bob@example.com", remember=True)
    remember = client.get_cookie(REMEMBER)
    assert remember is not None and remember.expires is not None
    client.delete_cookie("session")
    assert "Signed in as bob@example.com" in client.get("/account").text
    assert whoami(client) == {"user": "bob@example.com", "plurality": None}


def test_the_remember_me_cookie_never_brings_a_plurality_login_back(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    response = plurality_login(client, fake, "carol@example.com")
    assert REMEMBER not in response.headers.get("Set-Cookie", "")
    client.post("/plurality/logout", json={}, headers=SAME_ORIGIN)
    assert whoami(client) == {"user": None, "plurality": None}

    # Linked, with remember-me: the logout drops the cookie; a copy kept by the browser
    # restores only the password user, never the Plurality login.
    plurality_login(client, fake, "alice@example.com")
    password_login(client, "alice@example.com", remember=True)
    kept = client.get_cookie(REMEMBER)
    assert kept is not None
    app_logout(client)
    assert client.get_cookie(REMEMBER) is None
    client.set_cookie(REMEMBER, kept.value)
    assert whoami(client) == {"user": "alice@example.com", "plurality": None}


# -- flashed messages ---------------------------------------------------------------------------------


def test_flashed_messages_show_after_the_redirect(app: Flask) -> None:
    client = app.test_client()
    refused = client.get("/account")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login?next=")
    page = client.get(refused.headers["Location"]).text
    assert '<li class="flash message">Please log in to see this page.</li>' in page  # the lazy login_message

    wrong = client.post(
        "/login",
        data={"csrf_token": csrf_token_in(client.get("/login")), "email": "bob@example.com", "password": "nope"},
    )
    assert wrong.status_code == 200 and "Wrong email or password." in wrong.text

    welcome = client.get(password_login(client, "bob@example.com").headers["Location"]).text
    assert "Welcome, bob@example.com." in welcome and "Signed in as bob@example.com" in welcome
    assert "Welcome" not in client.get("/account").text  # shown once

    bye = client.get(app_logout(client).headers["Location"]).text
    assert "You have been logged out." in bye


def test_the_forms_refuse_a_post_without_the_csrf_token(app: Flask) -> None:
    client = app.test_client()
    password_login(client, "bob@example.com")
    assert client.post("/logout").status_code == 400  # CSRFProtect
    other = app.test_client()
    assert other.post("/login", data={"email": "bob@example.com", "password": PASSWORD}).status_code == 400
    assert whoami(other)["user"] is None and whoami(client)["user"] == "bob@example.com"


def test_a_lazy_flashed_message_is_the_apps_own_500_on_every_store(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Why the app sets ``localize_callback``: Flask-Session stores Redis sessions as
    msgpack, which has no lazy strings. That is the app's bug, answered 500 with the key
    and the type in the log, never a store outage; and the test store encodes sessions
    as Redis does, so the app's tests on files catch it too."""
    app.login_manager.localize_callback = None  # type: ignore[attr-defined]
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as in production, not raise into the test
    with caplog.at_level(logging.ERROR, "flask_plurality"):
        response = app.test_client().get("/account")
    assert response.status_code == 500
    assert "session_store_unavailable" not in response.get_data(as_text=True)
    assert "Retry-After" not in response.headers
    assert "'_flashes'" in caplog.text and "LazyString" in caplog.text
