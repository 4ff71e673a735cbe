"""A frontend served from another origin calls the API, in headless Chromium: with a bearer
token, and with the session cookie (CORS credentials, ``PLURALITY_TRUSTED_ORIGINS``,
``SESSION_COOKIE_SAMESITE``), as the docs' cross-site recipe says.

Two loopback servers: the API (conftest's app plus Flask-CORS) on ``127.0.0.1``, and a
static frontend on another port, either ``127.0.0.1`` too (another origin, the same
site) or ``localhost`` (another site: its requests to the API are third-party). The test
plays the widget: it mints the token with the stand-in and hands it to the page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_cors import CORS
from helpers import CHROMIUM_ARGS, AppFactory, chromium_or_skip

from flask_plurality import current_profile, plurality_required
from flask_plurality.testing import FakePlurality, live_server

pytestmark = pytest.mark.browser

#: The frontend: two functions the test calls, as a single-page app's code would.
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>frontend</title></head><body>
<script>
async function answer(r) {
  let body = null;
  try { body = await r.json(); } catch (e) {}
  return {status: r.status, body, challenge: r.headers.get("WWW-Authenticate")};
}
// An API client holding the widget's token: it sends it with every call.
window.withBearer = async (api, token) =>
  answer(await fetch(api + "/api/me", {headers: {Authorization: "Bearer " + token}}));
// A page that logs in once and then relies on the session cookie.
window.withCookie = async (api, token) => {
  const login = await fetch(api + "/plurality/login", {method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({token})});
  const me = await fetch(api + "/api/me", {credentials: "include"});
  return {login: await answer(login), me: await answer(me)};
};
</script></body></html>"""


def frontend_app() -> Flask:
    front = Flask("frontend")
    front.get("/")(lambda: PAGE)
    return front


def api_app(make_app: AppFactory, frontend: str, **config: Any) -> Flask:
    """The docs' recipe: the API names the frontend's origin for CORS and for login posts."""
    app = make_app(PLURALITY_TRUSTED_ORIGINS=[frontend], **config)

    @app.get("/api/me")
    @plurality_required(bearer=True)
    def me() -> dict[str, Any]:
        return {"email": current_profile.email}

    CORS(app, origins=[frontend], supports_credentials=True, expose_headers=["WWW-Authenticate", "Retry-After"])
    return app


@contextmanager
def frontend_on(host: str) -> Iterator[str]:
    """The frontend's server, and its origin as the browser names it."""
    with live_server(frontend_app()) as url:
        yield url.replace("127.0.0.1", host)


@contextmanager
def chromium(tmp_path: Path, *, third_party_cookies: bool) -> Iterator[Any]:
    """A browser context on a profile of its own. This Chromium blocks third-party cookies
    by default (as Safari, Brave, Firefox's strict mode and Chrome's incognito windows do);
    ``third_party_cookies=True`` is a profile that allows them, as Chrome's default did."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    profile = tmp_path / ("profile-3p" if third_party_cookies else "profile")
    if third_party_cookies:
        (profile / "Default").mkdir(parents=True)
        preferences = {"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": False}}
        (profile / "Default" / "Preferences").write_text(json.dumps(preferences))
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield context
        finally:
            context.close()


def run(context: Any, front: str, function: str, api: str, token: str) -> dict[str, Any]:
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(front + "/")
    result: dict[str, Any] = page.evaluate(f"([api, token]) => {function}(api, token)", [api, token])
    return result


def api_cookies(context: Any) -> list[dict[str, Any]]:
    return [c for c in context.cookies() if c["domain"] == "127.0.0.1"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["same-site", "cross-site"])
def test_a_frontend_on_another_origin_calls_the_api_with_a_bearer_token(
    make_app: AppFactory, fake: FakePlurality, tmp_path: Path, host: str
) -> None:
    with (
        frontend_on(host) as front,
        live_server(api_app(make_app, front)) as api,
        chromium(tmp_path, third_party_cookies=False) as context,
    ):
        token = fake.issue_token(email="spa@example.com")
        ok = run(context, front, "withBearer", api, token)
        assert ok == {"status": 200, "body": {"email": "spa@example.com"}, "challenge": None}
        refused = run(context, front, "withBearer", api, "not-a-token")
        assert refused["status"] == 401 and refused["body"]["error"] == "invalid_token"
        assert refused["challenge"] == 'Bearer error="invalid_token"'  # exposed through CORS
        assert api_cookies(context) == []  # nothing to block: no cookie at all
    assert len(fake.calls) == 1


def test_same_site_cookie_flow_needs_cors_credentials_and_a_trusted_origin(
    make_app: AppFactory, fake: FakePlurality, tmp_path: Path
) -> None:
    """127.0.0.1:A and 127.0.0.1:B are two origins of one site: the default SameSite=Lax cookie works."""
    with frontend_on("127.0.0.1") as front, chromium(tmp_path, third_party_cookies=False) as context:
        with live_server(api_app(make_app, front)) as api:
            result = run(context, front, "withCookie", api, fake.issue_token(email="lax@example.com"))
            assert result["login"]["status"] == 200
            assert result["me"] == {"status": 200, "body": {"email": "lax@example.com"}, "challenge": None}
            [cookie] = api_cookies(context)
            assert cookie["sameSite"] == "Lax" and cookie["httpOnly"] is True

        untrusted = make_app()  # the same API without PLURALITY_TRUSTED_ORIGINS
        CORS(untrusted, origins=[front], supports_credentials=True)
        with live_server(untrusted) as api:
            result = run(context, front, "withCookie", api, fake.issue_token())
            assert result["login"]["status"] == 403 and result["login"]["body"]["error"] == "forbidden_origin"


def test_cross_site_cookie_needs_samesite_none_and_secure_and_third_party_cookies(
    make_app: AppFactory, fake: FakePlurality, tmp_path: Path
) -> None:
    with frontend_on("localhost") as front:
        lax = api_app(make_app, front)
        none = api_app(make_app, front, SESSION_COOKIE_SAMESITE="None", SESSION_COOKIE_SECURE=True)
        with live_server(lax) as lax_api, live_server(none) as none_api:
            # A browser that allows third-party cookies sends a SameSite=None; Secure cookie
            # (Chromium treats http://127.0.0.1 as secure), never a Lax one.
            with chromium(tmp_path, third_party_cookies=True) as context:
                result = run(context, front, "withCookie", lax_api, fake.issue_token())
                assert result["login"]["status"] == 200
                assert result["me"]["status"] == 401 and result["me"]["challenge"] == "Plurality, Bearer"
                result = run(context, front, "withCookie", none_api, fake.issue_token(email="none@example.com"))
                assert result["login"]["status"] == 200
                assert result["me"] == {"status": 200, "body": {"email": "none@example.com"}, "challenge": None}
                [cookie] = api_cookies(context)
                assert cookie["sameSite"] == "None" and cookie["secure"] is True
            # A browser that blocks third-party cookies (this Chromium's default) drops even that
            # one: the login answers 200, and the next call is not logged in. Bearer still works.
            with chromium(tmp_path, third_party_cookies=False) as context:
                token = fake.issue_token(email="blocked@example.com")
                result = run(context, front, "withCookie", none_api, token)
                assert result["login"]["status"] == 200
                assert result["me"]["status"] == 401
                assert api_cookies(context) == []
                assert run(context, front, "withBearer", none_api, token)["status"] == 200
