"""The sample app's real-app parts: its own SQLite user table, a members-only page, and a
command-line API client that calls the JSON API with a bearer token."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed; it is imported from the checkout
    sys.path.insert(0, str(ROOT))

import examples.app  # noqa: E402
from examples.app import create_app  # noqa: E402
from flask_plurality import Plurality  # noqa: E402
from flask_plurality.testing import live_server  # noqa: E402

SAME = {"Origin": "http://localhost"}


@pytest.fixture(autouse=True)
def _no_credentials_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("PLURALITY_", "FLASK_PLURALITY_")):
            monkeypatch.delenv(key)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    # A fresh extension object: the module's own one keeps the breaker state (per
    # process, as in production) that other tests of the demo stand-in left behind.
    monkeypatch.setattr(examples.app, "plurality", Plurality())
    return create_app({}, env_file=None, instance_path=str(tmp_path / "instance"))


def sign_in(client: FlaskClient, email: str) -> dict[str, Any]:
    token = client.post("/plurality/fake/token", json={"email": email}).json["pluralityToken"]
    response = client.post("/plurality/login", json={"token": token}, headers=SAME)
    assert response.status_code == 200, response.get_data(as_text=True)
    return dict(response.json["profile"])


def rows(app: Flask) -> list[tuple[Any, ...]]:
    with sqlite3.connect(Path(app.instance_path) / "users.sqlite3") as db:
        return db.execute("SELECT id, email, created_at FROM users ORDER BY created_at").fetchall()


def test_the_first_login_creates_the_users_row_and_the_profile_shows_member_since(app: Flask) -> None:
    client = app.test_client()
    assert rows(app) == []
    before = int(time.time())
    profile = sign_in(client, "carol@example.com")
    page = client.get("/profile").get_data(as_text=True)
    [(user_id, email, created_at)] = rows(app)
    assert (user_id, email) == (profile["id"], "carol@example.com")
    assert before <= created_at <= time.time()
    assert "Member since" in page
    assert time.strftime("%Y-%m-%d", time.gmtime(created_at)) in page

    # Later requests and later logins of the same user find the row; nobody else's is touched.
    client.get("/profile")
    other = app.test_client()
    sign_in(other, "dan@example.com")
    other.get("/profile")
    assert [r[1] for r in rows(app)] == ["carol@example.com", "dan@example.com"]
    assert rows(app)[0][2] == created_at


def test_members_page_lets_members_in_and_shows_others_a_clear_403(app: Flask) -> None:
    member = app.test_client()
    sign_in(member, "ann@example.com")
    page = member.get("/members")
    assert page.status_code == 200
    assert "Members' page" in page.get_data(as_text=True)

    stranger = app.test_client()
    sign_in(stranger, "eve@elsewhere.org")
    refused = stranger.get("/members", headers={"Accept": "text/html"})
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    text = refused.get_data(as_text=True)
    assert "members only" in text and "eve@elsewhere.org" in text and "example.com" in text
    api = stranger.get("/members", headers={"Accept": "application/json"})
    assert api.status_code == 403 and api.json["error"] == "forbidden"
    assert stranger.get("/profile").status_code == 200  # a 403 is no logout

    anonymous = app.test_client().get("/members", headers={"Accept": "text/html"})
    assert anonymous.status_code == 302 and anonymous.headers["Location"] == "/?next=/members"


def test_the_api_takes_a_bearer_token_and_creates_the_user_too(app: Flask) -> None:
    client = app.test_client()
    token = client.post("/plurality/fake/token", json={"email": "bot@example.com"}).json["pluralityToken"]
    response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json["profile"]["email"] == "bot@example.com"
    assert "Set-Cookie" not in response.headers
    assert [r[1] for r in rows(app)] == ["bot@example.com"]


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PLURALITY_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "examples.api_client", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_client_gets_a_token_and_calls_the_api(app: Flask) -> None:
    with live_server(app) as base:
        done = run_client("--url", base, "--email", "cli@example.com")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("GET /api/me -> 200\n")
        assert '"email": "cli@example.com"' in done.stdout
        assert "pluralityToken" not in done.stdout and "eyJ" not in done.stdout  # the token is not printed

        refused = run_client("--url", base, "--token", "not-a-token")
        assert refused.returncode == 1
        assert refused.stdout.startswith("GET /api/me -> 401\n")
        assert 'WWW-Authenticate: Bearer error="invalid_token"' in refused.stdout
        assert '"error": "invalid_token"' in refused.stdout
    unreachable = run_client("--url", base)  # the server has stopped
    assert unreachable.returncode == 2 and "could not reach" in unreachable.stderr
