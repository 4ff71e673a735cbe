"""The app's own users (``user_loader``, ``current_user``) and who may
enter (``before_login``, ``allow=``), through real logins against the stand-in."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from flask import Flask, Response, redirect, render_template_string
from helpers import AppFactory, error_of, login

from flask_plurality import ConfigurationError, Profile, current_profile, current_user, plurality_required, signals
from flask_plurality.testing import FakePlurality


class User:
    def __init__(self, profile: Profile) -> None:
        self.id = profile.id
        self.email = profile.email
        self.orders: list[str] = []


class Users:
    """The app's own user table, counting lookups."""

    def __init__(self) -> None:
        self.rows: dict[str, User] = {}
        self.lookups = 0
        self.deleted: set[str] = set()

    def load(self, profile: Profile) -> User | None:
        self.lookups += 1
        if profile.id in self.deleted:
            return None
        return self.rows.setdefault(profile.id, User(profile))


def user_app(make_app: AppFactory, users: Users, **config: Any) -> Flask:
    app = make_app(**config)
    plurality = app.extensions["plurality"]
    plurality.user_loader(users.load)

    @app.get("/me")
    @plurality_required(bearer=True)
    def me() -> dict[str, Any]:
        # Three uses, one lookup.
        assert current_user.id == current_profile.id
        return {"id": current_user.id, "email": current_user.email, "orders": len(current_user.orders)}

    @app.get("/page")
    @plurality_required
    def page() -> str:
        return render_template_string("{{ current_user.email }} / {{ current_user.id }}", current_user=current_user)

    @app.get("/public")
    def public() -> dict[str, Any]:
        return {
            "user": current_user.id if current_user else None,
            "is_none": current_user._get_current_object() is None,
        }

    @app.get("/untouched")
    def untouched() -> dict[str, Any]:
        return {"ok": True}

    return app


def stored_entries(app: Flask) -> int:
    inner: Any = app.session_interface.inner  # type: ignore[attr-defined]
    if hasattr(inner, "client"):
        return len(inner.client.keys("*"))
    return len([name for name in os.listdir(inner.cache._path) if not name.startswith("plurality-lock-")])


# -- user_loader and current_user ----------------------------------------------------------


def test_current_user_is_the_apps_own_row_loaded_once_per_request(make_app: AppFactory, fake: FakePlurality) -> None:
    users = Users()
    client = user_app(make_app, users).test_client()
    assert client.get("/public").json == {"user": None, "is_none": True}
    assert users.lookups == 0  # nobody logged in: the loader is not called

    assert login(client, fake.issue_token(email="ann@example.com")).status_code == 200
    assert len(users.rows) == 0  # created on first use, not at login
    for expected in (1, 2, 3):
        assert client.get("/me").json["email"] == "ann@example.com"
        assert users.lookups == expected
    assert len(users.rows) == 1  # created on the first request, found afterwards
    assert client.get("/page").get_data(as_text=True).startswith("ann@example.com / ")
    assert users.lookups == 4
    assert client.get("/public").json["user"] == next(iter(users.rows))
    assert users.lookups == 5
    assert client.get("/untouched").status_code == 200
    assert users.lookups == 5  # a route that never looks costs no lookup


def test_a_bearer_request_loads_its_user_once(make_app: AppFactory, fake: FakePlurality) -> None:
    users = Users()
    client = user_app(make_app, users).test_client()
    token = fake.issue_token(email="api@example.com")
    response = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json["email"] == "api@example.com"
    assert users.lookups == 1


def test_a_loader_returning_none_logs_the_session_out(make_app: AppFactory, fake: FakePlurality) -> None:
    users = Users()
    app = user_app(make_app, users)
    client = app.test_client()
    profile = login(client, fake.issue_token()).json["profile"]
    assert client.get("/me").status_code == 200
    users.deleted.add(profile["id"])  # the account was deleted from the app's table
    response = client.get("/me")
    error_of(response, 401, "login_required")
    assert response.headers["WWW-Authenticate"] == "Plurality, Bearer"
    users.deleted.clear()
    # The session was cleared, not just refused once.
    assert client.get("/plurality/session").status_code == 401
    assert client.get("/me").status_code == 401

    token = fake.issue_token()
    users.deleted.add(fake_user_id(token))
    response = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    error_of(response, 401, "login_required")
    assert "Set-Cookie" not in response.headers


def fake_user_id(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["id"])


def test_an_async_loader_works(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    calls: list[str] = []

    @app.extensions["plurality"].user_loader
    async def load(profile: Profile) -> dict[str, str]:
        calls.append(profile.id)
        return {"name": f"user {profile.id}"}

    @app.get("/name")
    @plurality_required
    def name() -> dict[str, Any]:
        return {"name": current_user["name"]}

    client = app.test_client()
    user_id = login(client, fake.issue_token()).json["profile"]["id"]
    assert client.get("/name").json == {"name": f"user {user_id}"}
    assert calls == [user_id]


def test_current_user_without_a_loader_says_what_to_do(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    @app.get("/oops")
    @plurality_required
    def oops() -> dict[str, Any]:
        return {"id": current_user.id}

    client = app.test_client()
    login(client, fake.issue_token())
    with app.test_request_context(), pytest.raises(ConfigurationError, match="user_loader"):
        bool(current_user)
    with pytest.raises(ConfigurationError, match="user_loader"):
        client.get("/oops")


def test_current_user_outside_a_request_is_none(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        assert not current_user
        assert current_user._get_current_object() is None


# -- before_login ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cachelib", pytest.param("redis", marks=pytest.mark.redis)])
def test_before_login_refusal_stores_nothing(
    make_app: AppFactory, fake: FakePlurality, backend: str, request: pytest.FixtureRequest
) -> None:
    extra = {"session_redis": request.getfixturevalue("redis_client")} if backend == "redis" else {}
    app = make_app(**extra)
    seen: list[Profile] = []

    @app.extensions["plurality"].before_login
    def gate(profile: Profile) -> str | None:
        seen.append(profile)
        if profile.email and profile.email.endswith("@members.example"):
            return None
        return "Only members may sign in."

    client = app.test_client()
    before = stored_entries(app)
    with (
        signals.login_failed.connected_to(failed := Recorder(), app),
        signals.logged_in.connected_to(ok := Recorder(), app),
    ):
        response = login(client, fake.issue_token(email="stranger@example.com"))
        body = error_of(response, 403, "login_refused")
        assert body["message"] == "Only members may sign in."
        assert "Set-Cookie" not in response.headers
        assert stored_entries(app) == before  # no session, no cached answer, no counter
        assert client.get("/protected").status_code == 401
        assert failed.calls == [{"profile": None, "reason": "refused"}]
        assert ok.calls == []
        assert seen[0].email == "stranger@example.com"  # called with what Plurality said

        assert login(client, fake.issue_token(email="ann@members.example")).status_code == 200
        assert client.get("/protected").json["email"] == "ann@members.example"
        assert len(ok.calls) == 1


def test_before_login_may_answer_itself(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    @app.extensions["plurality"].before_login
    def gate(profile: Profile) -> Response:
        return redirect("/waitlist", 303)

    client = app.test_client()
    response = login(client, fake.issue_token())
    assert response.status_code == 303 and response.headers["Location"] == "/waitlist"
    assert "Set-Cookie" not in response.headers
    assert client.get("/protected").status_code == 401


def test_before_login_is_not_asked_about_tokens_plurality_refused(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    seen: list[Profile] = []
    app.extensions["plurality"].before_login(lambda profile: seen.append(profile))
    token = fake.issue_token()
    fake.revoke(token)
    error_of(login(app.test_client(), token), 401, "invalid_token")
    assert seen == []


def test_before_login_gates_bearer_requests_too(make_app: AppFactory, fake: FakePlurality) -> None:
    """A bearer request is a login of its own: the gate cannot be walked around with the API."""
    app = make_app(PLURALITY_ACCEPT_BEARER=True)
    app.extensions["plurality"].before_login(lambda profile: None if profile.email == "in@example.com" else "No.")
    client = app.test_client()
    refused = client.get("/protected", headers={"Authorization": f"Bearer {fake.issue_token(email='out@example.com')}"})
    assert error_of(refused, 403, "login_refused")["message"] == "No."
    assert "Set-Cookie" not in refused.headers
    allowed = client.get("/protected", headers={"Authorization": f"Bearer {fake.issue_token(email='in@example.com')}"})
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [(True, 200, None), (False, 403, "login_refused"), (None, 200, None)],
    ids=["True", "False", "None"],
)
def test_before_login_true_lets_in_and_false_refuses(
    make_app: AppFactory, fake: FakePlurality, answer: bool | None, status: int, code: str | None
) -> None:
    app = make_app(PLURALITY_ACCEPT_BEARER=True)
    app.extensions["plurality"].before_login(lambda profile: answer)
    token = fake.issue_token()
    for response in (
        login(app.test_client(), token),
        app.test_client().get("/protected", headers={"Authorization": f"Bearer {token}"}),
    ):
        assert response.status_code == status, response.get_data(as_text=True)
        if code is not None:
            assert error_of(response, status, code)["message"] == "This account may not sign in here."
            assert "Set-Cookie" not in response.headers


class Row:
    """An object of the app's own (a user row), returned by mistake."""

    def __repr__(self) -> str:
        return "Row()"


#: Answers neither gate may give: each is the app's bug, not a decision.
JUNK_ANSWERS = [0, 1, 403, 0.0, {"ok": True}, ["no"], b"no", Row()]


def answered_callback_error(response: Any) -> None:
    body = error_of(response, 500, "callback_error")
    assert "Traceback" not in response.get_data(as_text=True)
    assert "sign-in check failed" in body["message"]


def wrong_kind_logged(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info and name in str(r.exc_info[1])]


@pytest.mark.parametrize("junk", JUNK_ANSWERS, ids=repr)
def test_a_before_login_answer_of_the_wrong_kind_is_a_type_error_logged_once(
    make_app: AppFactory, fake: FakePlurality, junk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """At /login and on bearer requests alike: a JSON 500, never a login, and the
    TypeError naming the callback in the log once, not a traceback per request."""
    app = make_app(PLURALITY_ACCEPT_BEARER=True)
    plurality = app.extensions["plurality"]

    def gate(profile: Profile) -> Any:
        return junk

    gate.__qualname__ = f"gate_returning_{type(junk).__name__}_{junk!r}"  # once per process: one per case
    plurality.before_login(gate)
    token = fake.issue_token()
    with (
        signals.login_failed.connected_to(failed := Recorder(), app),
        caplog.at_level(logging.INFO, "flask_plurality"),
    ):
        for _ in range(3):
            client = app.test_client()
            refused = login(client, token)
            answered_callback_error(refused)
            assert "Set-Cookie" not in refused.headers
            assert client.get("/protected").status_code == 401  # nothing was stored
            answered_callback_error(app.test_client().get("/protected", headers={"Authorization": f"Bearer {token}"}))
    logged = wrong_kind_logged(caplog, gate.__qualname__)
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    error = logged[0].exc_info[1]  # type: ignore[index]
    assert isinstance(error, TypeError)
    assert str(error).startswith(
        f"before_login callback {__name__}.{gate.__qualname__} returned {type(junk).__name__};"
    )
    assert "False or a string" in str(error)
    assert token not in caplog.text
    assert [c["reason"] for c in failed.calls] == ["callback_error"] * 6


# -- allow= ----------------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [None, *JUNK_ANSWERS], ids=repr)
def test_an_allow_answer_that_is_not_a_bool_is_a_type_error_logged_once(
    make_app: AppFactory, fake: FakePlurality, junk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    def predicate(profile: Profile) -> Any:
        return junk

    predicate.__qualname__ = f"predicate_returning_{type(junk).__name__}_{junk!r}"

    @app.get("/gated")
    @plurality_required(allow=predicate, bearer=True)
    def gated() -> str:
        return "in"

    token = fake.issue_token()
    client = app.test_client()
    assert login(client, token).status_code == 200
    with caplog.at_level(logging.INFO, "flask_plurality"):
        for _ in range(3):
            answered_callback_error(client.get("/gated"))
            answered_callback_error(app.test_client().get("/gated", headers={"Authorization": f"Bearer {token}"}))
    assert client.get("/protected").status_code == 200  # the login stays: the app's bug ends nobody's session
    logged = wrong_kind_logged(caplog, predicate.__qualname__)
    assert len(logged) == 1
    assert str(logged[0].exc_info[1]).startswith(  # type: ignore[index]
        f"allow= predicate {__name__}.{predicate.__qualname__} returned {type(junk).__name__}; it must return True"
    )


def test_allow_refuses_with_403_after_the_login_check(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    asked: list[str | None] = []

    def members_only(profile: Profile) -> bool:
        asked.append(profile.email)
        return bool(profile.email and profile.email.endswith("@members.example"))

    @app.route("/members", methods=["GET", "OPTIONS"])
    @plurality_required(allow=members_only, bearer=True)
    def members() -> dict[str, Any]:
        return {"welcome": current_profile.email}

    @app.post("/members/vote")
    @plurality_required(allow=members_only, revalidate=True)
    def vote() -> dict[str, Any]:
        return {"voted": True}

    client = app.test_client()
    error_of(client.get("/members"), 401, "login_required")  # the login check comes first
    assert asked == []
    assert client.open("/members", method="OPTIONS").status_code == 200
    assert asked == []

    login(client, fake.issue_token(email="stranger@example.com"))
    response = client.get("/members")
    error_of(response, 403, "forbidden")
    assert client.get("/plurality/session").status_code == 200  # still logged in: a 403 is no logout
    member = app.test_client()
    login(member, fake.issue_token(email="ann@members.example"))
    assert member.get("/members").json == {"welcome": "ann@members.example"}
    # Checked after revalidation, on the profile Plurality just gave.
    calls = len(fake.calls)
    assert member.post("/members/vote").json == {"voted": True}
    assert len(fake.calls) == calls + 1
    # And for bearer requests.
    token = fake.issue_token(email="bot@example.com")
    error_of(client.get("/members", headers={"Authorization": f"Bearer {token}"}), 403, "forbidden")


def test_a_forbidden_handler_replaces_the_403(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    @app.get("/staff")
    @plurality_required(allow=lambda profile: False)
    def staff() -> str:
        return "staff"

    @app.extensions["plurality"].forbidden_handler
    def forbidden() -> tuple[str, int]:
        return f"<h1>Sorry, {current_profile.email}</h1>", 403

    client = app.test_client()
    login(client, fake.issue_token(email="x@example.com"))
    response = client.get("/staff")
    assert response.status_code == 403 and response.get_data(as_text=True) == "<h1>Sorry, x@example.com</h1>"


def test_allow_must_be_callable() -> None:
    with pytest.raises(TypeError, match="allow"):
        plurality_required(allow="admins")  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)
