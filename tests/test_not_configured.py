"""An app without its Plurality client id or secret: it starts (one WARNING), and every
use that needs them is refused, clearly, before anything is sent to Plurality: a 503
``not_configured`` over HTTP, :class:`NotConfigured` in Python, exit 9 from ``check``.
The real ``flask`` command line starts too (``flask --help``, ``flask plurality --help``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import AppFactory, captured, error_of, flask_command, login

from flask_plurality import ConfigurationError, NotConfigured, Plurality, plurality_required, signals
from flask_plurality.cli import ExitCode
from flask_plurality.testing import FakePlurality

ROOT = Path(__file__).resolve().parents[1]
SECRET = "a-secret-that-is-never-shown"


def unconfigured(make_app: AppFactory, *missing: str, **config: Any) -> Flask:
    """An app pointed at the stand-in (so any call would be counted) without ``missing``."""
    app = make_app(**{key: None for key in missing or ("PLURALITY_CLIENT_SECRET",)}, **config)

    @app.get("/api/me")
    @plurality_required(bearer=True)
    def me() -> dict[str, Any]:
        return {}

    return app


def assert_not_configured(response: Any, *keys: str) -> str:
    """The 503: JSON, the keys named, the two ways to set them and demo mode said, no Retry-After."""
    body = error_of(response, 503, "not_configured", SECRET)
    message = body["message"]
    for key in keys:
        assert key in message and f"FLASK_{key}" in message
    assert "from_prefixed_env" in message and "PLURALITY_FAKE" in message
    assert "Retry-After" not in response.headers  # waiting does not mend it
    return str(message)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_plurality" and r.levelno >= logging.ERROR]


# -- start-up ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing",
    [("PLURALITY_CLIENT_ID",), ("PLURALITY_CLIENT_SECRET",), ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET")],
)
@pytest.mark.parametrize("value", [None, ""])
def test_init_app_warns_once_naming_the_missing_keys(
    tmp_path: Path, missing: tuple[str, ...], value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"PLURALITY_CLIENT_ID": "6ea8bf02-0000-4000-8000-000000000000", "PLURALITY_CLIENT_SECRET": SECRET}
    for key in missing:
        config[key] = value
    app = Flask("bare", instance_path=str(tmp_path))
    app.config.update(config)
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    Plurality(app)
    assert "plurality" in app.extensions
    (warning,) = [r for r in caplog.records if r.name == "flask_plurality"]
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert text.startswith(" and ".join(missing) + (" is not set" if len(missing) == 1 else " are not set"))
    for key in ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET"):
        assert (key in text) is (key in missing)
    assert "from_prefixed_env" in text and "PLURALITY_FAKE" in text
    assert SECRET not in caplog.text


def test_demo_mode_needs_no_credentials_and_warns_of_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("demo", instance_path=str(tmp_path))
    app.config.update(TESTING=True, PLURALITY_FAKE=True)
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    Plurality(app)
    assert "is not set" not in caplog.text
    assert login(app.test_client(), app.extensions["plurality.state"].fake.issue_token()).status_code == 200


# -- over HTTP ---------------------------------------------------------------------------


def test_a_login_answers_503_without_calling_plurality(
    make_app: AppFactory, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    app = unconfigured(make_app, "PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET")
    token = fake.issue_token()
    caplog.set_level(logging.INFO, logger="flask_plurality")
    caplog.clear()
    with captured(signals.login_failed, app) as failures:
        response = login(app.test_client(), token)
    assert_not_configured(response, "PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET")
    assert response.headers["Cache-Control"] == "no-store"
    assert token not in response.get_data(as_text=True)
    assert fake.calls == []
    (line,) = errors(caplog)
    assert line.startswith("POST /plurality/login answered 503 not_configured: PLURALITY_CLIENT_ID and")
    assert token not in caplog.text and SECRET not in caplog.text
    assert [f["reason"] for f in failures] == ["not_configured"]


def test_a_refused_login_is_not_left_counted_by_the_throttle(make_app: AppFactory, fake: FakePlurality) -> None:
    """Three logins without a secret under a limit of one failure: once the secret is set,
    the same client logs in with the same token (no 429 from the attempts before)."""
    app = unconfigured(make_app, PLURALITY_LOGIN_MAX_FAILURES=1)
    client = app.test_client()
    token = fake.issue_token()
    for _ in range(3):
        assert login(client, token).get_json()["error"] == "not_configured"
    app.config["PLURALITY_CLIENT_SECRET"] = fake.client_secret
    assert login(client, token).status_code == 200
    assert len(fake.calls) == 1


def test_the_refusal_comes_before_anything_else_is_looked_at(make_app: AppFactory, fake: FakePlurality) -> None:
    """Even a cross-origin post or junk: nothing about it is worth judging yet."""
    client = unconfigured(make_app).test_client()
    assert_not_configured(login(client, fake.issue_token(), headers={"Origin": "https://evil.example"}))
    assert_not_configured(login(client, "junk"))
    assert fake.calls == []


def test_revalidating_an_existing_session_answers_503_and_keeps_it(
    make_app: AppFactory, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    """The session outlives the secret (a deploy that lost it): a route that asks Plurality
    each time answers 503, one that does not still works, and the session is kept."""
    app = make_app()
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    app.config["PLURALITY_CLIENT_SECRET"] = ""
    caplog.set_level(logging.ERROR, logger="flask_plurality")
    caplog.clear()
    assert_not_configured(client.post("/sensitive"), "PLURALITY_CLIENT_SECRET")  # revalidate=True
    assert len(errors(caplog)) == 1
    assert len(fake.calls) == 1  # the login's
    assert client.get("/protected").status_code == 200  # no revalidation due: no credentials needed
    app.config["PLURALITY_CLIENT_SECRET"] = fake.client_secret
    assert client.post("/sensitive").status_code == 200


def test_a_bearer_request_answers_503_and_counts_nothing(make_app: AppFactory, fake: FakePlurality) -> None:
    app = unconfigured(make_app, "PLURALITY_CLIENT_ID", PLURALITY_LOGIN_MAX_FAILURES=1)
    client = app.test_client()
    token = fake.issue_token()
    for _ in range(3):
        response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert_not_configured(response, "PLURALITY_CLIENT_ID")
    assert fake.calls == []
    app.config["PLURALITY_CLIENT_ID"] = fake.client_id
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_routes_that_need_no_credentials_work(make_app: AppFactory, fake: FakePlurality) -> None:
    client = unconfigured(make_app).test_client()
    assert client.get("/").status_code == 200
    assert error_of(client.get("/protected"), 401, "login_required")  # nobody is logged in: not a 503
    assert client.get("/plurality/session").status_code == 401
    assert client.post("/plurality/logout", json={}, headers={"Origin": "http://localhost"}).status_code == 200
    assert client.get("/plurality/login").status_code == 405


# -- in Python and on the command line -------------------------------------------------


def test_validate_raises_naming_the_key(make_app: AppFactory, fake: FakePlurality) -> None:
    app = unconfigured(make_app)
    with app.app_context(), pytest.raises(NotConfigured) as refused:
        app.extensions["plurality"].validate(fake.issue_token())
    assert isinstance(refused.value, ConfigurationError)
    assert refused.value.missing == ("PLURALITY_CLIENT_SECRET",)
    assert refused.value.reason == "not_configured"
    assert "PLURALITY_CLIENT_SECRET is not set" in str(refused.value)
    assert fake.calls == []


@pytest.mark.parametrize("token", [None, "good"])
def test_check_exits_9_naming_the_key(make_app: AppFactory, fake: FakePlurality, token: str | None) -> None:
    app = unconfigured(make_app)
    args = ["plurality", "check"] + (["--token", fake.issue_token()] if token else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == ExitCode.NOT_CONFIGURED == 9, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("not configured: PLURALITY_CLIENT_SECRET is not set")
    assert "FLASK_PLURALITY_CLIENT_SECRET" in last and "PLURALITY_FAKE" in last
    assert fake.calls == []


def test_validate_command_is_one_error_line(make_app: AppFactory, fake: FakePlurality) -> None:
    result = unconfigured(make_app).test_cli_runner().invoke(args=["plurality", "validate", fake.issue_token()])
    assert result.exit_code == 1
    assert result.output.startswith("Error: PLURALITY_CLIENT_SECRET is not set") and result.output.count("\n") == 1


APP = """
from flask import Flask
from flask_plurality import Plurality

app = Flask(__name__)
app.config.from_prefixed_env()
Plurality(app)
"""


@pytest.mark.parametrize(
    ("args", "loads_the_app"), [(["--help"], True), (["plurality", "--help"], False), (["routes"], True)]
)
def test_the_flask_command_line_starts_without_credentials(
    tmp_path: Path, args: list[str], loads_the_app: bool
) -> None:
    (tmp_path / "app.py").write_text(APP)
    result = flask_command(tmp_path, *args, FLASK_APP="app")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "plurality" in result.stdout  # the group is listed, or is what --help describes, or its routes
    if loads_the_app:
        assert "PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET are not set" in result.stderr  # the one warning
    else:  # the group's help is found without the app
        assert result.stderr == ""


def test_the_real_check_command_names_the_key_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    result = flask_command(
        tmp_path,
        "plurality",
        "check",
        FLASK_APP="app",
        FLASK_PLURALITY_CLIENT_ID="6ea8bf02-0000-4000-8000-000000000000",
    )
    assert result.returncode == 9, result.stdout + result.stderr
    assert "not configured: PLURALITY_CLIENT_SECRET is not set" in result.stdout
    assert "FLASK_PLURALITY_CLIENT_SECRET" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
