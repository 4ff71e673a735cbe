"""The server-side session: a new id at login, a dead cookie after logout, no leaks
between users, plain JSON in the store, and no session that outlives its token."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any

import jwt
import msgspec
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory, login, store_writes
from werkzeug.http import parse_date

from flask_plurality.testing import FakePlurality


def set_cookie(response: Any, name: str = "session") -> SimpleCookie:
    for header in response.headers.getlist("Set-Cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if name in cookie:
            return cookie
    raise AssertionError(f"no {name} cookie set: {response.headers.getlist('Set-Cookie')}")


def sid_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def stored(app: Flask, sid: str) -> Any:
    interface: Any = app.session_interface
    return interface.cache.get(interface.key_prefix + sid)


def exp_of(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


# -- fixation ------------------------------------------------------------------------
# A new id at login, planted ids, another user's data, replay after logout, the cookie's
# attributes and lifetime, Redis's TTL: test_security.py, the catalogue README points to.


def test_session_id_changes_at_every_login(client: FlaskClient, fake: FakePlurality) -> None:
    first = set_cookie(login(client, fake.issue_token(user_id="u")))["session"].value
    second = set_cookie(login(client, fake.issue_token(user_id="u")))["session"].value
    assert first != second
    assert client.get("/protected").get_json()["id"] == "u"


@pytest.mark.parametrize(
    "value",
    ["", "x" * 4000, "../../../../etc/passwd", "%00%ff", "a b;c", "\u00e9t\u00e9", "session:abc", "{}"],
)
def test_garbage_session_cookies_are_just_not_logged_in(client: FlaskClient, fake: FakePlurality, value: str) -> None:
    client.set_cookie("session", value)
    assert client.get("/protected").status_code == 401
    assert client.get("/plurality/session").status_code == 401
    assert client.get("/").get_json() == {"user": None}
    assert login(client, fake.issue_token()).status_code == 200


@pytest.mark.parametrize("length", [8, 32, 96])
def test_every_id_flask_session_generates_is_looked_up(make_app: AppFactory, fake: FakePlurality, length: int) -> None:
    """Junk cookies are told apart by shape (sessions.holdable_ids): what Flask-Session
    issues for any ``SESSION_ID_LENGTH`` (96: 128 characters) is never taken for junk."""
    client = make_app(SESSION_ID_LENGTH=length).test_client()
    assert login(client, fake.issue_token(user_id="u")).status_code == 200
    assert len(sid_of(client)) >= length
    assert client.get("/protected").get_json()["id"] == "u"


def test_the_cookie_holds_no_token(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token()
    response = login(client, token)
    for header in response.headers.getlist("Set-Cookie"):
        assert token not in header
        assert token.split(".")[1] not in header


# -- logout and replay ---------------------------------------------------------------


def test_logout_deletes_the_server_side_entry(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    client = app.test_client()
    login(client, fake.issue_token())
    sid = sid_of(client)
    interface: Any = app.session_interface
    path = interface.cache._get_filename(interface.key_prefix + sid)
    assert stored(app, sid) is not None
    assert os.path.exists(path)

    response = client.post("/plurality/logout", headers=SAME_ORIGIN)

    assert stored(app, sid) is None
    assert not os.path.exists(path)
    cookie = set_cookie(response)["session"]
    assert cookie.value == ""
    assert parse_date(cookie["expires"]) == datetime(1970, 1, 1, tzinfo=UTC)  # the browser drops it


def test_plurality_logout_in_a_view(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    plurality = app.extensions["plurality"]

    @app.post("/bye")
    def bye() -> dict[str, bool]:
        plurality.logout()
        return {"bye": True}

    client = app.test_client()
    login(client, fake.issue_token())
    sid = sid_of(client)
    assert client.post("/bye").get_json() == {"bye": True}
    assert stored(app, sid) is None
    assert client.get("/protected").status_code == 401


# -- two users -----------------------------------------------------------------------


def test_two_users_never_see_each_others_profile(app: Flask, fake: FakePlurality) -> None:
    alice, bob = app.test_client(), app.test_client()
    login(alice, fake.issue_token(user_id="alice", email="alice@example.com"))
    login(bob, fake.issue_token(user_id="bob", email="bob@example.com"))
    assert sid_of(alice) != sid_of(bob)
    for _ in range(3):
        assert alice.get("/protected").get_json() == {"id": "alice", "email": "alice@example.com"}
        assert bob.get("/protected").get_json() == {"id": "bob", "email": "bob@example.com"}
        assert alice.get("/plurality/session").get_json()["profile"]["id"] == "alice"
        assert bob.get("/plurality/session").get_json()["profile"]["id"] == "bob"
        assert alice.get("/").get_json() == {"user": "alice"}
        assert bob.get("/").get_json() == {"user": "bob"}
    bob.post("/plurality/logout", headers=SAME_ORIGIN)
    assert bob.get("/protected").status_code == 401
    assert alice.get("/protected").get_json()["id"] == "alice"


# -- what is stored ------------------------------------------------------------------


def test_stored_session_holds_only_plain_json(app: Flask, client: FlaskClient, fake: FakePlurality) -> None:
    """cachelib pickles anything; Redis (msgpack/JSON) does not. Store only what survives both."""
    token = fake.issue_token(user_id="u-json")
    login(client, token)
    data = stored(app, sid_of(client))
    assert isinstance(data, dict)

    assert msgspec.json.decode(msgspec.json.encode(data)) == data
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(data)) == data

    def only_json(value: Any) -> None:
        assert type(value) in (str, int, float, bool, type(None), list, dict), type(value)
        if isinstance(value, dict):
            for key, item in value.items():
                assert type(key) is str
                only_json(item)
        elif isinstance(value, list):
            for item in value:
                only_json(item)

    only_json(data)


# -- the token's exp ends the session ------------------------------------------------


def test_session_ends_when_the_token_expires(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    client = app.test_client()
    token = fake.issue_token(ttl=3)
    assert login(client, token).status_code == 200
    sid = sid_of(client)
    assert client.get("/protected").status_code == 200
    calls = len(fake.calls)

    while time.time() <= exp_of(token) + 0.05:
        time.sleep(0.1)

    response = client.get("/protected")
    assert response.status_code == 401
    assert response.get_json()["error"] == "login_required"
    assert response.headers["WWW-Authenticate"] == "Plurality"
    assert stored(app, sid) is None
    assert client.get("/plurality/session").status_code == 401
    assert client.get("/").get_json() == {"user": None}
    assert len(fake.calls) == calls  # an expired token is not worth asking about


def test_expired_session_files_are_swept_off_the_request_path(make_app: AppFactory, fake: FakePlurality) -> None:
    import os
    import time

    app = make_app()
    cache = app.session_interface.inner.cache  # type: ignore[attr-defined]

    def entries() -> list[str]:  # the store's lock files (at most 64) are no entries
        return [name for name in os.listdir(cache._path) if "plurality-lock-" not in name]

    client = app.test_client()
    assert login(client, fake.issue_token(ttl=2)).status_code == 200
    assert entries()  # the session's file, which no request touches again
    exp = client.get("/plurality/session").json["profile"]["expires_at"]
    while time.time() <= exp + 1:
        time.sleep(0.1)  # until the stored entry has expired
    assert entries()  # expired, but nothing deleted it yet
    deadline = time.time() + 10
    app.session_interface._next_sweep = 0  # type: ignore[attr-defined]  # make a sweep due now
    app.test_client().get("/")  # any request; the sweep runs in a thread
    while entries() and time.time() < deadline:
        time.sleep(0.05)
    assert entries() == []


# -- what a protected request writes ------------------------------------------------------


def test_a_login_whose_lifetime_is_shorter_than_its_token_still_slides(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    """With PERMANENT_SESSION_LIFETIME shorter than the token, the session slides: every
    request writes it and refreshes the cookie, as Flask-Session does. (With the default
    31 days, the token's exp pins both, and a steady request writes nothing: the
    conformance suite counts that on every backend.)"""
    app = make_app(PERMANENT_SESSION_LIFETIME=600)
    client = app.test_client()
    with store_writes(app) as writes:
        assert login(client, fake.issue_token(ttl=86400)).status_code == 200
        writes.clear()
        response = client.get("/protected")
        assert response.status_code == 200
        assert writes == ["save_session"]
    expires = set_cookie(response)["session"]["expires"]
    left = parse_date(expires).timestamp() - time.time()  # type: ignore[union-attr]
    assert 590 < left <= 601


def test_a_change_inside_a_value_of_the_app_is_never_lost(make_app: AppFactory, fake: FakePlurality) -> None:
    """Flask sees only top-level changes (``session.modified``). A logged-in session that
    holds a list or dict of the app's is saved on every request, as Flask-Session saves
    it, so ``session["cart"].append(x)`` without ``session.modified = True`` is kept; once
    it holds only flat values, a steady request writes nothing again."""
    from flask import session

    app = make_app()

    @app.post("/cart/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", []).append(item)  # in place: not seen as modified after the first
        return ",".join(session["cart"])

    @app.post("/cart/clear")
    def clear() -> str:
        session["cart"] = "none"
        return ""

    client = app.test_client()
    with store_writes(app) as writes:
        assert login(client, fake.issue_token(ttl=3600)).status_code == 200
        for item in ("a", "b", "c"):
            assert client.post(f"/cart/{item}").status_code == 200
        assert client.post("/cart/d").get_data(as_text=True) == "a,b,c,d"  # every append was kept
        writes.clear()
        assert client.get("/protected").status_code == 200
        assert writes == ["save_session"]  # a list of the app's: saved as Flask-Session would
        assert client.post("/cart/clear").status_code == 200
        writes.clear()
        assert client.get("/protected").status_code == 200
        assert writes == []  # only flat values again: the steady request writes nothing


def test_a_steady_login_sends_no_cookie_and_keeps_its_expiry(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(ttl=3600)
    cookie = set_cookie(login(client, token))["session"]
    assert abs(parse_date(cookie["expires"]).timestamp() - exp_of(token)) <= 1  # type: ignore[union-attr]
    sid = sid_of(client)
    for _ in range(3):
        response = client.get("/protected")
        assert response.status_code == 200
        assert response.headers.getlist("Set-Cookie") == []
    assert sid_of(client) == sid and client.get("/plurality/session").status_code == 200
