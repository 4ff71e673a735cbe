"""The sample app (examples/), as a person meets it: in a real browser, and from the command line.

The browser test drives Debian's headless chromium through Playwright against the sample
app served on loopback by a real WSGI server, in demo mode (the built-in stand-in plays
Plurality). It skips where chromium or Playwright is missing, unless
``PLURALITY_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed; it is imported from the checkout
    sys.path.insert(0, str(ROOT))

from helpers import CHROMIUM_ARGS, SAME_ORIGIN, chromium_or_skip, free_port  # noqa: E402

from examples.app import WIDGET_SCRIPTS, create_app  # noqa: E402
from flask_plurality import current_profile, plurality_required  # noqa: E402
from flask_plurality.testing import FakePlurality, live_server, shared_fake  # noqa: E402

ARTIFACTS = ROOT / "artifacts"
SECRET = "sample-app-secret-0123456789abcdef"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ADDRESS = re.compile(r"^0x[0-9a-f]{40}$")


pytestmark = pytest.mark.usefixtures("fresh_sample")


def demo_app(tmp_path: Path, **config: Any) -> Flask:
    return create_app(config, env_file=None, instance_path=str(tmp_path / "instance"))


def stand_in(tmp_path: Path) -> FakePlurality:
    """The stand-in of ``demo_app(tmp_path)``: one per instance folder."""
    return shared_fake(tmp_path / "instance")


def validate_calls(tmp_path: Path) -> int:
    return len(stand_in(tmp_path).calls)


# -- without a browser ------------------------------------------------------------------------


def test_demo_mode_serves_the_whole_flow(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    assert app.config["DEMO_MODE"] is True
    assert app.config["PLURALITY_FAKE"] == "force"
    client = app.test_client()

    home = client.get("/")
    assert home.status_code == 200
    page = home.get_data(as_text=True)
    assert "Sign in (demo)" in page and "Demo mode" in page
    assert 'src="https://' not in page and 'rel="stylesheet" href="https' not in page  # no CDN: works offline

    refused = client.get("/profile", headers={"Accept": "text/html"})
    assert refused.status_code == 302
    assert refused.headers["Location"] == "/?next=/profile"
    assert "Sign in to open <code>/profile</code>" in client.get("/?next=/profile").get_data(as_text=True)
    api = client.get("/api/me")
    assert api.status_code == 401 and api.json["error"] == "login_required"

    token = client.post("/plurality/fake/token", json={"email": "carol@example.com"}).json["pluralityToken"]
    before = validate_calls(tmp_path)
    assert client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN).json["authenticated"]
    assert validate_calls(tmp_path) == before + 1

    profile = client.get("/profile")
    assert profile.status_code == 200
    text = profile.get_data(as_text=True)
    assert "carol@example.com" in text and "UTC (in " in text
    assert token not in text
    me = client.get("/api/me").json["profile"]
    assert me["email"] == "carol@example.com" and UUID.match(me["id"]) and ADDRESS.match(me["auth_address"])
    assert validate_calls(tmp_path) == before + 1  # ordinary requests trust the session

    done = client.post("/api/transfer", json={})
    assert done.status_code == 200 and done.json["done"] is True
    assert validate_calls(tmp_path) == before + 2  # revalidate=True asked Plurality again
    assert client.post("/api/transfer", data={"x": "1"}).status_code == 415  # forms (cross-site) refused

    assert client.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert client.get("/profile", headers={"Accept": "text/html"}).status_code == 302
    assert client.get("/api/me").status_code == 401


def real_app(fake: FakePlurality, tmp_path: Path) -> Flask:
    fake.add_client("sample-app-id", SECRET)
    return create_app(
        {"PLURALITY_CLIENT_ID": "sample-app-id", "PLURALITY_CLIENT_SECRET": SECRET, "PLURALITY_API_URL": fake.url},
        env_file=None,
        instance_path=str(tmp_path / "instance"),
    )


def test_real_mode_embeds_the_widget_and_never_sends_the_secret(fake: FakePlurality, tmp_path: Path) -> None:
    app = real_app(fake, tmp_path)
    assert app.config["DEMO_MODE"] is False
    client = app.test_client()

    home = client.get("/").get_data(as_text=True)
    for src, integrity in WIDGET_SCRIPTS:
        assert f'<script src="{src}" integrity="{integrity}" crossorigin="anonymous"></script>' in home
    assert "@plurality-network/smart-profile-wallet@" in home
    assert 'data-client-id="sample-app-id"' in home  # public: the widget needs it
    assert "Sign in (demo)" not in home
    assert client.post("/plurality/fake/token").status_code == 404

    token = fake.issue_token(email="dave@example.com", client_id="sample-app-id")
    assert client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN).json["authenticated"]
    assert fake.calls[-1].client_id == "sample-app-id" and fake.calls[-1].auth_ok

    responses = [client.get(path) for path in ("/", "/?next=/profile", "/profile", "/api/me", "/plurality/session")]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200]
    assert "dave@example.com" in responses[2].get_data(as_text=True)
    seen = [r.get_data(as_text=True) + str(r.headers) for r in responses]
    static = ROOT / "examples" / "static"
    for path in sorted(static.iterdir()):
        with client.get(f"/static/{path.name}") as response:
            assert response.status_code == 200
            seen.append(response.get_data(as_text=True) + str(response.headers))
    basic = base64.b64encode(f"sample-app-id:{SECRET}".encode()).decode()
    for raw in seen:
        assert SECRET not in raw and basic not in raw


def test_env_file_switches_to_real_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# Plurality credentials\n"
        'export PLURALITY_CLIENT_ID="from-file"\n'
        "PLURALITY_CLIENT_SECRET='a secret # with a hash'\n"
        "PLURALITY_REVALIDATE=60  # seconds\n"
        "NOT_A_PLURALITY_KEY=ignored\n"
    )
    app = create_app(env_file=env_file, instance_path=str(tmp_path / "i1"))
    assert app.config["DEMO_MODE"] is False
    assert app.config["PLURALITY_CLIENT_ID"] == "from-file"
    assert app.config["PLURALITY_CLIENT_SECRET"] == "a secret # with a hash"
    assert app.config["PLURALITY_REVALIDATE"] == 60
    assert "NOT_A_PLURALITY_KEY" not in app.config

    monkeypatch.setenv("PLURALITY_CLIENT_ID", "from-environment")
    app = create_app(env_file=env_file, instance_path=str(tmp_path / "i2"))
    assert app.config["PLURALITY_CLIENT_ID"] == "from-environment"  # the environment wins

    only_id = tmp_path / "only-id.env"
    only_id.write_text("PLURALITY_CLIENT_ID=abc\n")
    monkeypatch.delenv("PLURALITY_CLIENT_ID")
    half = create_app(env_file=only_id, instance_path=str(tmp_path / "i3"))  # credentials are for logging in
    assert half.config["DEMO_MODE"] is False  # a client id asks for real mode: no fake logins next to it
    refused = half.test_client().post(
        "/plurality/login", json={"token": "a.b.c"}, headers={"Origin": "http://localhost"}
    )
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "not_configured"
    assert "PLURALITY_CLIENT_SECRET" in refused.get_json()["message"]


@pytest.mark.slow
def test_python_m_examples_app_starts_with_no_credentials(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_", "FLASK_"))}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "examples.app", "--port", str(port), "--instance-path", str(tmp_path / "i")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            home = None
            deadline = time.monotonic() + 60  # a bound for a slow machine, not a measurement
            while home is None and time.monotonic() < deadline and server.poll() is None:
                try:
                    home = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                except requests.ConnectionError:
                    time.sleep(0.2)
            assert home is not None, f"the sample app did not answer:\n{log_path.read_text()}"
            assert home.status_code == 200
            assert "Sign in (demo)" in home.text
        finally:
            server.terminate()
            server.wait(timeout=30)
    output = log_path.read_text()
    assert "DEMO MODE" in output
    assert f"http://127.0.0.1:{port}/" in output


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[str]:
    """The demo app behind werkzeug's threaded WSGI server on a loopback port."""
    app = demo_app(tmp_path)
    with live_server(app) as url:
        yield url


def session_cookie(context: Any) -> dict[str, Any] | None:
    return next((c for c in context.cookies() if c["name"] == "session"), None)


@pytest.mark.browser
def test_sign_in_and_out_in_chromium(
    live_app: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    executable = chromium_or_skip()
    from playwright.sync_api import ConsoleMessage, Route, expect, sync_playwright

    base = live_app
    console: list[ConsoleMessage] = []
    page_errors: list[str] = []
    outside: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:  # demo mode must not need the network
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 900})
            context.route("**/*", loopback_only)
            context.on("console", lambda message: console.append(message))
            context.on("weberror", lambda error: page_errors.append(str(error.error)))
            page = context.new_page()

            # Home page, public.
            response = page.goto(base + "/")
            assert response is not None and response.status == 200
            expect(page.get_by_text("Demo mode: fake logins")).to_be_visible()

            # The protected page sends a signed-out browser back home, and the API says 401.
            response = page.goto(base + "/profile")
            assert response is not None and response.request.redirected_from is not None
            assert response.request.redirected_from.url == base + "/profile"
            assert urlsplit(page.url).path == "/" and parse_qs(urlsplit(page.url).query)["next"] == ["/profile"]
            expect(page.locator("#login-needed")).to_have_text("Sign in to open /profile.")
            assert context.request.get(base + "/api/me").status == 401
            cookie_before = session_cookie(context)

            # "Sign in (demo)": a token from the stand-in, posted to /plurality/login as the widget's would be.
            page.fill("#demo-email", "alice@example.com")
            calls_before = validate_calls(tmp_path)
            with (
                page.expect_response("**/plurality/fake/token") as minted,
                page.expect_response("**/plurality/login") as login,
            ):
                page.get_by_role("button", name="Sign in (demo)").click()
            page.wait_for_url(base + "/profile")
            assert minted.value.status == 200 and login.value.status == 200
            posted = login.value.request.post_data_json
            assert login.value.request.headers["content-type"] == "application/json"
            assert isinstance(posted, dict) and list(posted) == ["token"] and posted["token"].count(".") == 2
            token = posted["token"]
            assert validate_calls(tmp_path) == calls_before + 1
            assert stand_in(tmp_path).calls[-1].token == token  # the page's token is what "Plurality" was asked about

            # The profile.
            expect(page.get_by_role("heading", name="Your Plurality profile")).to_be_visible()
            expect(page.locator("[data-field=email]")).to_have_text("alice@example.com")
            user_id = page.locator("[data-field=id]").inner_text().strip()
            assert UUID.match(user_id)
            assert ADDRESS.match(page.locator("[data-field=auth_address]").inner_text().strip())
            assert ADDRESS.match(page.locator("[data-field=proxy_address]").inner_text().strip())
            expect(page.locator("[data-field=expires_at]")).to_have_text(
                re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC \(in \d+ h \d\d min\)$")
            )

            # The cookie: HttpOnly, SameSite=Lax, a new id, and not the token.
            cookie = session_cookie(context)
            assert cookie is not None
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
            assert cookie_before is None or cookie_before["value"] != cookie["value"]
            assert all(token not in c["value"] for c in context.cookies())
            assert "session=" not in page.evaluate("document.cookie")
            assert token not in page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
            assert token not in page.content()

            # Reload: still signed in.
            page.reload()
            expect(page.locator("[data-field=email]")).to_have_text("alice@example.com")
            assert urlsplit(page.url).path == "/profile"

            # The protected API, called from the page.
            page.get_by_role("button", name="Call the protected API").click()
            expect(page.locator("#result")).to_contain_text("GET /api/me -> 200")
            expect(page.locator("#result")).to_contain_text(user_id)
            expect(page.locator("#message")).to_be_hidden()

            # The sensitive action asks Plurality again...
            calls_before = validate_calls(tmp_path)
            page.get_by_role("button", name="Sensitive action (asks Plurality again)").click()
            expect(page.locator("#result")).to_contain_text("POST /api/transfer -> 200")
            assert validate_calls(tmp_path) == calls_before + 1
            # ...and when Plurality cannot answer, the person reads why, on the page.
            stand_in(tmp_path).fail_next(503, retry_after=7)
            page.get_by_role("button", name="Sensitive action (asks Plurality again)").click()
            expect(page.locator("#message")).to_be_visible()
            expect(page.locator("#message")).to_contain_text("503: Plurality cannot confirm the sign-in right now")
            expect(page.locator("#message")).to_contain_text("try again in 7 s")

            page.get_by_role("button", name="Call the protected API").click()
            expect(page.locator("#result")).to_contain_text("GET /api/me -> 200")
            expect(page.locator("#message")).to_be_hidden()
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "e2e-logged-in.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            # A second tab on the profile, then log out in the first.
            stale = context.new_page()
            stale.goto(base + "/profile")
            expect(stale.locator("[data-field=email]")).to_have_text("alice@example.com")
            page.locator(".card").get_by_role("button", name="Log out").click()
            page.wait_for_url(base + "/")
            expect(page.get_by_role("button", name="Sign in (demo)")).to_be_visible()

            # Refused again: the page redirects, the API says 401, and the stale tab says so on the page.
            page.goto(base + "/profile")
            assert urlsplit(page.url).path == "/"
            expect(page.locator("#login-needed")).to_be_visible()
            assert context.request.get(base + "/api/me").status == 401
            stale.get_by_role("button", name="Call the protected API").click()
            expect(stale.locator("#message")).to_contain_text("401: Sign in with Plurality to continue.")
            expect(stale.locator("#result")).to_contain_text("GET /api/me -> 401")
            context.close()
        finally:
            browser.close()

    # The two answers the test provoked (503, then 401) are logged by Chrome as failed loads;
    # anything else in the console, or any script error, is a bug.
    expected = {(base + "/api/transfer", "503"), (base + "/api/me", "401")}
    unexpected = [
        f"{m.type}: {m.text} ({m.location.get('url')})"
        for m in console
        if not any(m.location.get("url") == url and f"status of {status}" in m.text for url, status in expected)
    ]
    assert unexpected == []
    assert page_errors == []
    assert outside == []

    record_property("screenshot", str(screenshot))
    request.node.add_report_section("call", "artifacts", f"screenshot of the logged-in page: {screenshot}")
    with capsys.disabled():
        print(f"\n[e2e] screenshot of the logged-in page: {screenshot}")


# -- revoked tokens, with Plurality's widget (a stand-in of it) ------------------------------

#: The stand-ins of React, ReactDOM and Plurality's widget (tests/stand_in_widget/), each
#: served at the CDN address of the build it stands for.
STAND_IN_WIDGET = Path(__file__).resolve().parent / "stand_in_widget"
STAND_INS = {
    src: (STAND_IN_WIDGET / name).read_bytes()
    for (src, _), name in zip(WIDGET_SCRIPTS, ("react.js", "react-dom.js", "widget.js"), strict=True)
}
#: Where the stand-in widget's "Sign in with Plurality" gets a new token (widget.js).
WIDGET_TOKEN_URL = "https://stand-in-widget.test/token"
REVOKED = "Your sign-in was revoked. Sign in with Plurality again."


def integrity(body: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


def readme_page(client_id: str) -> str:
    """README's plain-page snippet, as a user pastes it into a page of theirs."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme[readme.index("A plain page") : readme.index("In a React app")]
    block = section[section.index(".. code-block:: html") :].split("\n", 2)[2]
    snippet = textwrap.dedent(block)
    return "<!doctype html><html><head><meta charset='utf-8'><title>README</title></head><body>" + (
        snippet.replace("YOUR-CLIENT-ID", client_id) + "</body></html>"
    )


@pytest.fixture
def widget_site(fake: FakePlurality, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Flask]]:
    """The sample app in real mode against the stand-in, with README's snippet at
    ``/readme`` (and the ``/dashboard`` it opens), served on loopback."""
    import examples.app as sample

    monkeypatch.setattr(sample, "WIDGET_SCRIPTS", tuple((src, integrity(body)) for src, body in STAND_INS.items()))
    app = real_app(fake, tmp_path)
    app.add_url_rule("/readme", "readme", lambda: readme_page(app.config["PLURALITY_CLIENT_ID"]))

    @app.get("/dashboard")
    @plurality_required
    def dashboard() -> str:
        return f"<h1>Dashboard of {current_profile.email}</h1>"

    with live_server(app) as url:
        yield url, app


def revoke_user(app: Flask, user_id: str) -> int:
    """``revoke_user`` as an admin runs it; the second it was done in."""
    with app.app_context():
        app.extensions["plurality"].revoke_user(user_id)
    return int(time.time())


def after_second(second: int) -> None:
    """Wait for the clock to leave ``second``: the person's next sign-in happens later
    than the revocation, and Plurality's token says so (``iat``)."""
    while int(time.time()) <= second:
        time.sleep(0.05)


@contextmanager
def widget_browser(fake: FakePlurality, minted: list[str], user_id: str, email: str) -> Iterator[Any]:
    """Chromium, with the CDN scripts answered by their stand-ins, the widget's sign-in
    answered with a new token of the stand-in for ``user_id``, and nothing else off loopback."""
    executable = chromium_or_skip()
    from playwright.sync_api import Route, sync_playwright

    def route(route: Route) -> None:
        url = route.request.url
        cors = {"Access-Control-Allow-Origin": "*"}
        if url in STAND_INS:
            route.fulfill(body=STAND_INS[url], content_type="application/javascript", headers=cors)
        elif url == WIDGET_TOKEN_URL:
            minted.append(fake.issue_token(user_id=user_id, email=email, client_id="sample-app-id"))
            route.fulfill(json={"status": True, "pluralityToken": minted[-1]}, headers=cors)
        elif urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context()
            context.route("**/*", route)
            yield context
            context.close()
        finally:
            browser.close()


def login_posts(page: Any) -> list[Any]:
    posts: list[Any] = []
    page.on("request", lambda r: posts.append(r) if urlsplit(r.url).path == "/plurality/login" else None)
    return posts


def unexpected_console(page: Any, expected: set[tuple[str, str]]) -> list[str]:
    """Console lines and script errors but the failed loads the test provoked: (path, status)."""
    seen: list[str] = []
    page.on("pageerror", lambda error: seen.append(f"pageerror: {error}"))

    def line(message: Any) -> None:
        url = urlsplit(message.location.get("url") or "").path
        if not any(url == path and f"status of {status}" in message.text for path, status in expected):
            seen.append(f"{message.type}: {message.text} ({url})")

    page.on("console", line)
    return seen


@pytest.mark.browser
def test_the_sample_page_signs_out_of_the_widget_when_its_token_was_revoked(
    widget_site: tuple[str, Flask], fake: FakePlurality
) -> None:
    """A user signed out everywhere (revoke_user) comes back: the widget still holds the
    old token and hands it to the page, /login refuses it with token_revoked, and the page
    signs out of the widget, so that signing in again gets a new token that works."""
    from playwright.sync_api import expect

    base, app = widget_site
    user, email, minted = f"widget-user-{time.time_ns()}", "wanda@example.com", []
    with widget_browser(fake, minted, user, email) as context:
        page = context.new_page()
        console = unexpected_console(page, {("/plurality/login", "401")})
        posts = login_posts(page)
        page.goto(base + "/")
        page.get_by_role("button", name="Sign in with Plurality").click()
        page.wait_for_url(base + "/profile")
        expect(page.locator("[data-field=email]")).to_have_text(email)
        assert [p.post_data_json for p in posts] == [{"token": minted[0]}]

        revoked_at = revoke_user(app, user)

        # The next page: the session is gone, the widget restores its login with the old token.
        with page.expect_response("**/plurality/login") as refused:
            page.goto(base + "/profile")
        assert refused.value.status == 401 and refused.value.json()["error"] == "token_revoked"
        assert refused.value.request.post_data_json == {"token": minted[0]}
        assert urlsplit(page.url).path == "/"
        expect(page.locator("#message")).to_have_text(REVOKED)
        expect(page.get_by_role("button", name="Sign in with Plurality")).to_be_visible()
        assert page.evaluate("localStorage.getItem('lit')") is None  # signed out of the widget
        assert page.evaluate("localStorage.getItem('standInDisconnects')") == "1"
        assert context.request.get(base + "/plurality/session").status == 401  # no session started

        # The widget has forgotten the old token: another page load posts nothing.
        posts.clear()
        page.reload()
        page.wait_for_load_state("networkidle")
        assert posts == []

        # Signing in again: Plurality issues a new token, which logs in.
        after_second(revoked_at)
        page.get_by_role("button", name="Sign in with Plurality").click()
        page.wait_for_url(base + "/profile")
        expect(page.locator("[data-field=email]")).to_have_text(email)
        assert len(minted) == 2 and [p.post_data_json for p in posts] == [{"token": minted[1]}]
        assert console == []


@pytest.mark.browser
def test_readmes_snippet_signs_out_of_the_widget_when_its_token_was_revoked(
    widget_site: tuple[str, Flask], fake: FakePlurality
) -> None:
    """README's plain-page snippet, pasted into a page as it stands, does the same."""
    from playwright.sync_api import expect

    base, app = widget_site
    user, email, minted = f"readme-user-{time.time_ns()}", "rita@example.com", []
    with widget_browser(fake, minted, user, email) as context:
        page = context.new_page()
        console = unexpected_console(page, {("/plurality/login", "401")})
        page.goto(base + "/readme")
        page.get_by_role("button", name="Sign in with Plurality").click()
        page.wait_for_url(base + "/dashboard")
        expect(page.get_by_role("heading")).to_have_text(f"Dashboard of {email}")

        revoked_at = revoke_user(app, user)
        with page.expect_response("**/plurality/login") as refused:
            page.goto(base + "/readme")
        assert refused.value.status == 401 and refused.value.json()["error"] == "token_revoked"
        expect(page.locator("#login-message")).to_have_text(refused.value.json()["message"])
        expect(page.get_by_role("button", name="Sign in with Plurality")).to_be_visible()
        assert page.evaluate("localStorage.getItem('lit')") is None
        assert context.request.get(base + "/plurality/session").status == 401

        after_second(revoked_at)
        page.get_by_role("button", name="Sign in with Plurality").click()
        page.wait_for_url(base + "/dashboard")
        expect(page.get_by_role("heading")).to_have_text(f"Dashboard of {email}")
        assert console == []


@pytest.mark.browser
def test_your_devices_page_in_two_browsers(live_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Two browsers (Playwright contexts: separate cookies) signed in as the same user: the
    "Your devices" page lists both, marks this one, signs the other out, and signs out
    everywhere else; the other browser is refused on its next request."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    base = live_app
    agents = {
        "laptop": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "phone": "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
    }
    page_errors: list[str] = []
    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            contexts = {
                name: browser.new_context(viewport={"width": 1000, "height": 700}, user_agent=agent)
                for name, agent in agents.items()
            }
            pages = {}
            for name, context in contexts.items():
                context.on("weberror", lambda error: page_errors.append(str(error.error)))
                page = pages[name] = context.new_page()
                page.goto(base + "/")
                page.fill("#demo-email", "alice@example.com")  # one user, two devices
                page.get_by_role("button", name="Sign in (demo)").click()
                page.wait_for_url(base + "/profile")
            laptop, phone = pages["laptop"], pages["phone"]

            laptop.get_by_role("link", name="Your devices").click()
            laptop.wait_for_url(base + "/devices")
            rows = laptop.locator("#devices tbody tr")
            expect(rows).to_have_count(2)
            expect(laptop.locator("tr.current")).to_have_count(1)
            expect(laptop.locator("tr.current")).to_contain_text("Chrome on Linux")
            expect(laptop.locator("tr.current")).to_contain_text("This device")
            expect(laptop.locator("tbody tr:not(.current)")).to_contain_text("Firefox on Android")
            expect(laptop.locator("tr.current")).to_contain_text("127.0.0.0/24")  # a prefix, not the address
            ARTIFACTS.mkdir(exist_ok=True)
            shots.append(ARTIFACTS / "devices-two-browsers.png")
            laptop.screenshot(path=str(shots[-1]), full_page=True)

            # "Sign out" on the phone's row: the phone is refused on its next request.
            laptop.locator("tbody tr:not(.current)").get_by_role("button", name="Sign out").click()
            expect(rows).to_have_count(1)
            expect(laptop.locator("tr.current")).to_have_count(1)
            assert contexts["phone"].request.get(base + "/api/me").status == 401
            phone.goto(base + "/profile")
            assert urlsplit(phone.url).path == "/"  # sent to sign in again
            shots.append(ARTIFACTS / "devices-phone-signed-out.png")
            laptop.screenshot(path=str(shots[-1]), full_page=True)

            # The phone signs in again; "Sign out everywhere else" ends it, and keeps the laptop.
            phone.fill("#demo-email", "alice@example.com")
            phone.get_by_role("button", name="Sign in (demo)").click()
            phone.wait_for_url(base + "/profile")
            laptop.reload()
            expect(rows).to_have_count(2)
            laptop.get_by_role("button", name="Sign out everywhere else").click()
            expect(rows).to_have_count(1)
            expect(laptop.get_by_role("button", name="Sign out everywhere else")).to_be_disabled()
            assert contexts["phone"].request.get(base + "/api/me").status == 401
            assert contexts["laptop"].request.get(base + "/api/me").status == 200

            # Signing out this very device from its row is a logout.
            laptop.locator("tr.current").get_by_role("button", name="Sign out").click()
            laptop.wait_for_url(base + "/")
            assert contexts["laptop"].request.get(base + "/api/me").status == 401
            for context in contexts.values():
                context.close()
        finally:
            browser.close()
    assert page_errors == []
    with capsys.disabled():
        print(f"\n[e2e] screenshots of the devices page: {', '.join(map(str, shots))}")
