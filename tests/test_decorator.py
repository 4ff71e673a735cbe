"""``@plurality_required``, ``current_profile`` and ``unauthorized_handler``."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.views import MethodView
from helpers import AppFactory, login

from flask_plurality import Plurality, current_profile, plurality_required
from flask_plurality.security import safe_next
from flask_plurality.testing import FakePlurality

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def assert_login_required(response: Any) -> None:
    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "login_required", "message": response.get_json()["message"]}
    assert response.get_json()["message"]
    assert response.headers["WWW-Authenticate"] == "Plurality"


# -- the forms of the decorator --------------------------------------------------------


@pytest.mark.parametrize("path", ["/protected", "/async", "/items"])
def test_not_logged_in_is_401(client: FlaskClient, fake: FakePlurality, path: str) -> None:
    assert_login_required(client.get(path))
    assert fake.calls == []


@pytest.mark.parametrize(("path", "body"), [("/protected", "id"), ("/async", "id"), ("/items", "owner")])
def test_logged_in_runs_the_view(client: FlaskClient, fake: FakePlurality, path: str, body: str) -> None:
    login(client, fake.issue_token(user_id="u-1"))
    fake.reset_calls()
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json()[body] == "u-1"
    assert fake.calls == []  # no revalidation by default


def test_bare_called_and_empty_parentheses(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    @app.get("/called")
    @plurality_required()
    def called() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/called-never")
    @plurality_required(revalidate=False)
    def called_never() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/user/<name>")
    @plurality_required
    def with_args(name: str) -> dict[str, Any]:
        return {"name": name, "id": current_profile.id}

    client = app.test_client()
    for path in ("/called", "/called-never", "/user/x"):
        assert_login_required(client.get(path))
    login(client, fake.issue_token(user_id="u-2"))
    assert client.get("/called").get_json() == {"id": "u-2"}
    assert client.get("/called-never").get_json() == {"id": "u-2"}
    assert client.get("/user/x").get_json() == {"name": "x", "id": "u-2"}
    assert called.__name__ == "called"  # functools.wraps: endpoint names stay the view's


def test_method_view_with_several_methods(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    class Notes(MethodView):
        decorators: ClassVar[list[Any]] = [plurality_required(revalidate=True)]

        def get(self) -> dict[str, Any]:
            return {"owner": current_profile.id}

        def post(self) -> dict[str, Any]:
            return {"created": True, "owner": current_profile.id}

    app.add_url_rule("/notes", view_func=Notes.as_view("notes"))
    client = app.test_client()
    assert_login_required(client.post("/notes"))
    login(client, fake.issue_token(user_id="u-3"))
    before = len(fake.calls)
    assert client.get("/notes").get_json() == {"owner": "u-3"}
    assert client.post("/notes").get_json() == {"created": True, "owner": "u-3"}
    assert len(fake.calls) == before + 2


def test_options_passes_without_login(client: FlaskClient, fake: FakePlurality) -> None:
    """A CORS preflight carries no cookie; refusing it would break every cross-origin call."""
    response = client.options("/protected")
    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers
    assert fake.calls == []


def test_automatic_options_passes_too(make_app: AppFactory) -> None:
    app = make_app()

    @app.post("/api/thing")
    @plurality_required
    def thing() -> dict[str, Any]:
        return {}

    response = app.test_client().options("/api/thing")
    assert response.status_code == 200
    assert "POST" in response.headers["Allow"]


# -- the answer when not logged in -----------------------------------------------------


def test_login_url_redirects_browsers_with_next(make_app: AppFactory) -> None:
    client = make_app(PLURALITY_LOGIN_URL="/login").test_client()
    response = client.get("/protected?a=1&b=two%20words", headers=BROWSER)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert not location.netloc
    (next_,) = parse_qs(location.query)["next"]
    assert next_ == "/protected?a=1&b=two%20words"  # the URL as requested, decoded once
    assert safe_next(next_) == next_  # the login page may send the user straight back there


def test_login_url_without_query(make_app: AppFactory) -> None:
    client = make_app(PLURALITY_LOGIN_URL="/login").test_client()
    response = client.get("/items", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/items"


def test_login_url_that_has_a_query_already(make_app: AppFactory) -> None:
    client = make_app(PLURALITY_LOGIN_URL="https://example.com/signin?lang=en").test_client()
    response = client.get("/protected", headers=BROWSER)
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "example.com", "/signin")
    assert parse_qs(location.query) == {"lang": ["en"], "next": ["/protected"]}


@pytest.mark.parametrize(
    "accept",
    [None, "application/json", "*/*", "application/json, text/html;q=0.5", "text/plain"],
)
def test_login_url_but_scripts_get_json(make_app: AppFactory, accept: str | None) -> None:
    client = make_app(PLURALITY_LOGIN_URL="/login").test_client()
    headers = {"Accept": accept} if accept else {}
    assert_login_required(client.get("/protected", headers=headers))


def test_no_login_url_means_json_for_browsers_too(client: FlaskClient) -> None:
    assert_login_required(client.get("/protected", headers=BROWSER))


def test_unauthorized_handler_replaces_the_answer(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_LOGIN_URL="/login")
    plurality: Plurality = app.extensions["plurality"]
    seen: list[bool] = []

    @plurality.unauthorized_handler
    def custom() -> Any:
        seen.append(bool(current_profile))
        return {"please": "sign in"}, 418

    assert custom.__name__ == "custom"  # registered and given back, like Flask-Login
    client = app.test_client()
    response = client.get("/protected", headers=BROWSER)
    assert response.status_code == 418
    assert response.get_json() == {"please": "sign in"}
    assert client.get("/async").status_code == 418
    assert seen == [False, False]
    # It is only the "not logged in" answer: the blueprint's own answers are unchanged.
    assert client.get("/plurality/session").status_code == 401


def test_async_unauthorized_handler(make_app: AppFactory) -> None:
    app = make_app()
    plurality: Plurality = app.extensions["plurality"]

    @plurality.unauthorized_handler
    async def custom() -> Any:
        return "go away", 401, {"WWW-Authenticate": "Custom"}

    response = app.test_client().get("/protected")
    assert response.status_code == 401
    assert response.get_data(as_text=True) == "go away"
    assert response.headers["WWW-Authenticate"] == "Custom"


def test_unauthorized_handler_is_used_when_the_session_expired(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    plurality: Plurality = app.extensions["plurality"]
    plurality.unauthorized_handler(lambda: ({"custom": True}, 401))
    client = app.test_client()
    token = fake.issue_token()
    login(client, token)
    fake.revoke(token)
    response = client.post("/sensitive")
    assert response.get_json() == {"custom": True}
    assert client.get("/plurality/session").status_code == 401


# -- current_profile -------------------------------------------------------------------


def test_current_profile_outside_any_request() -> None:
    assert bool(current_profile) is False
    assert current_profile.id is None
    assert current_profile.email is None
    assert current_profile.expires_at is None


def test_current_profile_in_an_app_context_only(app: Flask) -> None:
    with app.app_context():
        assert not current_profile
        assert current_profile.id is None


def test_current_profile_on_a_public_route(client: FlaskClient, fake: FakePlurality) -> None:
    assert client.get("/").get_json() == {"user": None}
    login(client, fake.issue_token(user_id="pub"))
    fake.reset_calls()
    assert client.get("/").get_json() == {"user": "pub"}
    assert fake.calls == []


def test_current_profile_has_every_attribute(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    @app.get("/me")
    @plurality_required
    def me() -> dict[str, Any]:
        p = current_profile
        return {
            "id": p.id,
            "email": p.email,
            "auth_address": p.auth_address,
            "proxy_address": p.proxy_address,
            "unique_session_id": p.unique_session_id,
            "expires_at": p.expires_at,
            "raw": p.raw,
            "truthy": bool(p),
        }

    client = app.test_client()
    token = fake.issue_token(user_id="u-4", email="e@x.y", auth_address="0x1", proxy_address="0x2")
    profile = login(client, token).get_json()["profile"]
    body = client.get("/me").get_json()
    assert body == {
        **profile,
        "raw": {"id": "u-4", "email": "e@x.y", "authAddress": "0x1", "proxyAddress": "0x2"},
        "truthy": True,
    }


def test_current_profile_is_falsy_in_an_app_without_the_extension() -> None:
    app = Flask("bare")
    with app.test_request_context("/"):
        assert not current_profile


# -- revalidation ----------------------------------------------------------------------


def test_revalidate_true_asks_every_request(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="u-5")
    login(client, token)
    assert len(fake.calls) == 1
    for n in range(3):
        response = client.post("/sensitive")
        assert response.get_json() == {"done": True, "id": "u-5"}
        assert len(fake.calls) == 2 + n
    assert [c.token for c in fake.calls] == [token] * 4
    client.get("/protected")
    assert len(fake.calls) == 4  # the plain decorator does not ask


def test_revalidate_picks_up_profile_changes(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()

    @app.get("/email")
    @plurality_required(revalidate=True)
    def email() -> dict[str, Any]:
        return {"email": current_profile.email}

    client = app.test_client()
    token = fake.issue_token(user_id="u-6", email="old@example.com")
    login(client, token)
    fake.issue_token(user_id="u-6", email="new@example.com")  # the user changed it upstream
    assert client.get("/email").get_json() == {"email": "new@example.com"}
    assert client.get("/plurality/session").get_json()["profile"]["email"] == "new@example.com"


def test_revalidate_clears_a_revoked_session(app: Flask, client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token()
    login(client, token)
    assert client.post("/sensitive").status_code == 200
    fake.revoke(token)

    assert_login_required(client.post("/sensitive"))
    calls = len(fake.calls)

    assert_login_required(client.get("/protected"))
    assert client.get("/plurality/session").status_code == 401
    assert len(fake.calls) == calls
    cookie = client.get_cookie("session")
    if cookie is not None:
        interface: Any = app.session_interface
        data = interface.cache.get(interface.key_prefix + cookie.value)
        assert not data or "_plurality" not in data


def test_revalidate_redirects_browsers_when_revoked(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_LOGIN_URL="/login")

    @app.get("/account")
    @plurality_required(revalidate=True)
    def account() -> dict[str, Any]:
        return {}

    client = app.test_client()
    token = fake.issue_token()
    login(client, token)
    fake.revoke(token)
    response = client.get("/account", headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/account"


def test_app_wide_revalidate_zero(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=0)

    @app.get("/relaxed")
    @plurality_required(revalidate=False)
    def relaxed() -> dict[str, Any]:
        return {}

    client = app.test_client()
    login(client, fake.issue_token())
    client.get("/protected")
    client.get("/protected")
    assert len(fake.calls) == 3
    client.get("/relaxed")
    assert len(fake.calls) == 3


def test_revalidate_interval_not_yet_due(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_REVALIDATE=3600)
    client = app.test_client()
    login(client, fake.issue_token())
    for _ in range(3):
        assert client.get("/protected").status_code == 200
    assert len(fake.calls) == 1


def test_revalidate_when_plurality_is_down_denies_by_default(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    fake.fail_next(503, retry_after=20)
    response = client.post("/sensitive")
    assert response.status_code == 503
    assert response.get_json()["error"] == "upstream_unavailable"
    assert 1 <= int(response.headers["Retry-After"]) <= 20
    # The session survives an outage: the user is not logged out for Plurality's trouble.
    assert client.get("/protected").status_code == 200
