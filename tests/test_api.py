"""The Python API besides the decorator: errors, signals, reprs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from blinker import Signal
from flask import Flask
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory, login
from werkzeug.local import LocalProxy

import flask_plurality
from flask_plurality import (
    ConfigurationError,
    CredentialsRejected,
    InvalidToken,
    Plurality,
    PluralityError,
    Profile,
    UpstreamUnavailable,
    get_extension,
    signals,
)
from flask_plurality.testing import FakePlurality


@contextmanager
def recording(signal: Signal) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    received: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append((sender, kwargs))

    signal.connect(receiver)
    try:
        yield received
    finally:
        signal.disconnect(receiver)


# -- the public names ----------------------------------------------------------------


def test_public_api() -> None:
    """Each public name is exported, and is the kind of thing docs/api.rst says it is."""
    kinds: dict[str, Callable[[Any], bool]] = {
        "Plurality": lambda obj: isinstance(obj, type) and callable(obj.init_app),
        "plurality_required": inspect.isfunction,
        "current_profile": lambda obj: issubclass(type(obj), LocalProxy),
        "PluralityError": lambda obj: isinstance(obj, type) and issubclass(obj, Exception),
        "ConfigurationError": lambda obj: isinstance(obj, type) and issubclass(obj, PluralityError),
        "InvalidToken": lambda obj: isinstance(obj, type) and issubclass(obj, PluralityError),
        "UpstreamUnavailable": lambda obj: isinstance(obj, type) and issubclass(obj, PluralityError),
        "CredentialsRejected": lambda obj: isinstance(obj, type) and issubclass(obj, UpstreamUnavailable),
        "signals": inspect.ismodule,
    }
    for name, is_kind in kinds.items():
        assert name in flask_plurality.__all__
        assert is_kind(getattr(flask_plurality, name)), (name, getattr(flask_plurality, name))
    for name in ("logged_in", "logged_out", "login_failed", "revalidated", "revalidation_failed"):
        assert isinstance(getattr(signals, name), Signal), name


def test_the_helpers_for_an_apps_own_pages(make_app: AppFactory, tmp_path: Any) -> None:
    """What an app's own login pages and settings code may use instead of internals."""
    assert flask_plurality.safe_next("/profile?tab=wallet") == "/profile?tab=wallet"
    for outside in ("https://evil.example/", "//evil.example", "/\\evil.example", "/%2F%2Fevil.example", None, ""):
        assert flask_plurality.safe_next(outside) is None, outside
    assert [flask_plurality.fake_mode(v) for v in (True, "on", "FORCE", "off", 0)] == [
        True,
        True,
        "force",
        False,
        False,
    ]
    with pytest.raises(ConfigurationError, match="PLURALITY_FAKE"):
        flask_plurality.fake_mode("maybe")
    assert "PLURALITY_REVALIDATE" in flask_plurality.SETTINGS
    flask_plurality.SETTINGS["PLURALITY_TIMEOUT"] = 99  # a copy: the defaults do not change
    assert make_app().config["PLURALITY_TIMEOUT"] != 99
    flask_plurality.SETTINGS["PLURALITY_TIMEOUT"] = 5.0
    real = make_app()
    assert get_extension(real).demo_mode(real) is False
    demo = Flask("demo", instance_path=str(tmp_path))
    demo.config.update(TESTING=True, PLURALITY_FAKE=True)
    plurality = flask_plurality.Plurality(demo)
    assert plurality.demo_mode(demo) is True
    with demo.app_context():
        assert plurality.demo_mode() is True


def test_error_hierarchy() -> None:
    assert issubclass(ConfigurationError, PluralityError)
    assert issubclass(InvalidToken, PluralityError)
    assert issubclass(UpstreamUnavailable, PluralityError)
    assert issubclass(CredentialsRejected, UpstreamUnavailable)
    assert not issubclass(InvalidToken, UpstreamUnavailable)
    exc = UpstreamUnavailable("down", retry_after=9)
    assert exc.retry_after == 9
    assert UpstreamUnavailable("down").retry_after is None


def test_validate_in_a_request_does_not_log_anyone_in(make_app: AppFactory, fake: FakePlurality) -> None:
    """validate() only answers; starting a session is the login view's job."""
    app = make_app()
    plurality: Plurality = app.extensions["plurality"]

    @app.post("/check")
    def check() -> dict[str, Any]:
        from flask import request

        return {"id": plurality.validate(request.get_json()["token"]).id}

    client = app.test_client()
    assert client.post("/check", json={"token": fake.issue_token(user_id="v")}).get_json() == {"id": "v"}
    assert client.get("/plurality/session").status_code == 401
    assert client.get("/protected").status_code == 401


# -- signals -------------------------------------------------------------------------


def test_logged_in_and_logged_out(app: Flask, client: FlaskClient, fake: FakePlurality) -> None:
    with recording(signals.logged_in) as logins, recording(signals.logged_out) as logouts:
        login(client, fake.issue_token(user_id="sig"))
        client.post("/plurality/logout", headers=SAME_ORIGIN)
        client.post("/plurality/logout", headers=SAME_ORIGIN)  # nobody logged in any more
    assert len(logins) == 1
    sender, kwargs = logins[0]
    assert sender is app
    assert isinstance(kwargs["profile"], Profile) and kwargs["profile"].id == "sig"
    assert [(s is app, k["profile"].id if k["profile"] else None) for s, k in logouts] == [
        (True, "sig"),
        (True, None),
    ]


def test_signals_are_per_app(make_app: AppFactory, fake: FakePlurality) -> None:
    first, second = make_app(), make_app()
    received: list[Any] = []

    def only_first(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs["profile"].id)

    with signals.logged_in.connected_to(only_first, first):
        login(first.test_client(), fake.issue_token(user_id="one"))
        login(second.test_client(), fake.issue_token(user_id="two"))
    assert received == ["one"]


@pytest.mark.parametrize(
    ("setup", "reason", "status"),
    [
        (lambda fake: "junk.junk.junk", "malformed", 401),
        (lambda fake: fake.issue_token(ttl=-1), "expired", 401),
        (lambda fake: _revoked(fake), "rejected", 401),
        (lambda fake: _other_client(fake), "wrong_client", 401),
        (lambda fake: _failing(fake, 503), "http_503", 503),
        (lambda fake: _failing(fake, 429), "rate_limited", 503),
        (lambda fake: _failing(fake, "garbage"), "bad_response", 503),
    ],
    ids=["malformed", "expired", "revoked", "wrong-client", "503", "429", "garbage"],
)
def test_login_failed_says_why(
    app: Flask, client: FlaskClient, fake: FakePlurality, setup: Any, reason: str, status: int
) -> None:
    token = setup(fake)
    with recording(signals.login_failed) as failures, recording(signals.logged_in) as logins:
        assert login(client, token).status_code == status
    assert logins == []
    assert len(failures) == 1
    sender, kwargs = failures[0]
    assert sender is app
    assert kwargs["reason"] == reason
    assert kwargs["profile"] is None
    assert token not in repr(kwargs)


def _revoked(fake: FakePlurality) -> str:
    token = fake.issue_token()
    fake.revoke(token)
    return token


def _other_client(fake: FakePlurality) -> str:
    fake.add_client("elsewhere", "elsewhere-secret")
    return fake.issue_token(client_id="elsewhere")


def _failing(fake: FakePlurality, kind: Any) -> str:
    fake.fail_next(kind)
    return fake.issue_token()


def test_login_failed_for_credentials_and_throttling(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_CLIENT_SECRET="wrong", PLURALITY_LOGIN_MAX_FAILURES=1)
    client = app.test_client()
    with recording(signals.login_failed) as failures:
        login(client, fake.issue_token())  # our credentials: 503
        login(client, "junk.junk.junk")  # the user's failure: counted
        login(client, fake.issue_token())  # now throttled: 429
    assert [k["reason"] for _, k in failures] == ["credentials_rejected", "malformed", "too_many_attempts"]
    assert all(s is app for s, _ in failures)


def test_revalidated_and_revalidation_failed(app: Flask, client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="rv")
    login(client, token)
    with recording(signals.revalidated) as ok, recording(signals.revalidation_failed) as failed:
        assert client.post("/sensitive").status_code == 200
        fake.fail_next(502)
        assert client.post("/sensitive").status_code == 503
        fake.revoke(token)
        assert client.post("/sensitive").status_code == 401
    assert [(s is app, k["profile"].id) for s, k in ok] == [(True, "rv")]
    assert [(s is app, k["profile"].id, k["reason"]) for s, k in failed] == [
        (True, "rv", "http_502"),
        (True, "rv", "rejected"),
    ]


def test_no_revalidation_signal_without_revalidation(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    with recording(signals.revalidated) as ok, recording(signals.revalidation_failed) as failed:
        assert client.get("/protected").status_code == 200
    assert ok == [] and failed == []


# -- nothing secret in a repr ---------------------------------------------------------


def test_profile_repr_leaves_out_raw() -> None:
    profile = Profile.from_upstream({"id": "u", "email": "e@x.y", "secretish": "z"}, {"exp": 5})
    assert "secretish" not in repr(profile)
    assert "u" in repr(profile)
