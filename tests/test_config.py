"""Wiring (credentials, settings and fake mode): config keys, Flask-Session, several apps."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cachelib import SimpleCache
from flask import Flask
from flask_session import Session
from helpers import SAME_ORIGIN, AppFactory, build_app, free_port, login, stand_in_of

from flask_plurality import ConfigurationError, Plurality, get_extension
from flask_plurality.config import DEFAULTS
from flask_plurality.logins import Login
from flask_plurality.testing import FakePlurality

ROOT = Path(__file__).resolve().parents[1]


def new_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("cfgapp", instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app


def credentials(fake: FakePlurality) -> dict[str, Any]:
    return {
        "PLURALITY_CLIENT_ID": fake.client_id,
        "PLURALITY_CLIENT_SECRET": fake.client_secret,
        "PLURALITY_API_URL": fake.url,
    }


# -- misspelled keys -------------------------------------------------------------------


def plurality_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_plurality" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (
            "PLURALITY_REVALIDTE",
            "PLURALITY_REVALIDTE is not a flask-plurality setting; did you mean PLURALITY_REVALIDATE?",
        ),
        ("PLURALITY_TRUSTED_ORIGIN", "did you mean PLURALITY_TRUSTED_ORIGINS?"),
        ("plurality_timeout", "plurality_timeout is not a flask-plurality setting; did you mean PLURALITY_TIMEOUT?"),
        ("PLURALITY_WIDGET_THEME", "PLURALITY_WIDGET_THEME is not a flask-plurality setting; see the configuration"),
    ],
)
def test_an_unknown_key_is_a_warning_naming_the_closest_setting(
    tmp_path: Path, fake: FakePlurality, caplog: pytest.LogCaptureFixture, key: str, says: str
) -> None:
    app = new_app(tmp_path, TESTING=True, **credentials(fake), **{key: 60})
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    Plurality(app)
    (warning,) = plurality_warnings(caplog)
    assert says in warning


def test_a_misspelled_secret_is_named_but_its_value_never_logged(
    tmp_path: Path, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    config = {**credentials(fake), "PLURALITY_CLIENT_SECRET": None, "PLURALITY_CLIENT_SECRTE": "my-very-secret-secret"}
    app = new_app(tmp_path, TESTING=True, **config)
    caplog.set_level(logging.DEBUG, logger="flask_plurality")
    Plurality(app)
    unknown, missing = plurality_warnings(caplog)
    assert unknown == "PLURALITY_CLIENT_SECRTE is not a flask-plurality setting; did you mean PLURALITY_CLIENT_SECRET?"
    assert missing.startswith("PLURALITY_CLIENT_SECRET is not set")
    assert "my-very-secret-secret" not in caplog.text


def test_known_keys_and_other_prefixes_are_no_warning(
    tmp_path: Path, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app(tmp_path, TESTING=True, **{**DEFAULTS, **credentials(fake)}, MY_PLURALITY_NOTE=1)
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    Plurality(app)
    assert plurality_warnings(caplog) == []


def test_a_misspelled_environment_variable_is_caught(
    tmp_path: Path, fake: FakePlurality, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLASK_PLURALITY_ON_UPSTREAM_EROR", "allow")
    app = new_app(tmp_path, TESTING=True, **credentials(fake))
    app.config.from_prefixed_env()
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    Plurality(app)
    assert plurality_warnings(caplog) == [
        "PLURALITY_ON_UPSTREAM_EROR is not a flask-plurality setting; did you mean PLURALITY_ON_UPSTREAM_ERROR?"
    ]


def test_get_extension_before_init_app_is_a_clear_error(tmp_path: Path) -> None:
    app = new_app(tmp_path)
    with app.app_context(), pytest.raises(ConfigurationError, match="init_app"):
        get_extension()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PLURALITY_VALIDATE_METHOD", "PUT"),
        ("PLURALITY_VALIDATE_METHOD", ""),
        ("PLURALITY_ON_UPSTREAM_ERROR", "maybe"),
        ("PLURALITY_ON_UPSTREAM_ERROR", None),
        ("PLURALITY_TIMEOUT", 0),
        ("PLURALITY_TIMEOUT", -1),
        ("PLURALITY_TIMEOUT", "soon"),
        ("PLURALITY_REVALIDATE", -5),
        ("PLURALITY_REVALIDATE", "often"),
        ("PLURALITY_TRUSTED_ORIGINS", ["shop.example"]),
        ("PLURALITY_TRUSTED_ORIGINS", 42),
        ("PLURALITY_REPLICA_ACKS", -1),
        ("PLURALITY_REPLICA_ACKS", "one"),
        ("PLURALITY_REPLICA_ACKS", True),
        ("PLURALITY_REPLICA_ACKS", 1.5),
        ("PLURALITY_REPLICA_TIMEOUT", 0),
        ("PLURALITY_REPLICA_TIMEOUT", "briefly"),
    ],
)
def test_impossible_values_fail_at_init_app(tmp_path: Path, fake: FakePlurality, key: str, value: Any) -> None:
    app = new_app(tmp_path, TESTING=True, **credentials(fake), **{key: value})
    with pytest.raises(ConfigurationError) as info:
        Plurality(app)
    assert key in str(info.value)


@pytest.mark.parametrize(("method", "expected"), [("post", "POST"), ("Get", "GET"), ("AUTO", "POST")])
def test_method_setting_is_case_insensitive(
    make_app: AppFactory, fake: FakePlurality, method: str, expected: str
) -> None:
    client = make_app(PLURALITY_VALIDATE_METHOD=method).test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert [c.method for c in fake.calls] == [expected]


def test_defaults_are_set_and_user_values_kept(tmp_path: Path, fake: FakePlurality) -> None:
    app = new_app(tmp_path, TESTING=True, PLURALITY_TIMEOUT=1.25, **credentials(fake))
    Plurality(app)
    for key, default in DEFAULTS.items():
        assert key in app.config
        if key not in ("PLURALITY_TIMEOUT", "PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET", "PLURALITY_API_URL"):
            assert app.config[key] == default, key
    assert app.config["PLURALITY_TIMEOUT"] == 1.25
    # Mutable defaults are copies: changing one app's list leaves the defaults alone.
    app.config["PLURALITY_TRUSTED_ORIGINS"].append("https://x.example")
    assert DEFAULTS["PLURALITY_TRUSTED_ORIGINS"] == []


def test_from_prefixed_env(tmp_path: Path, fake: FakePlurality, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_PLURALITY_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("FLASK_PLURALITY_CLIENT_SECRET", fake.client_secret)
    monkeypatch.setenv("FLASK_PLURALITY_API_URL", fake.url)
    monkeypatch.setenv("FLASK_PLURALITY_TIMEOUT", "1.5")
    monkeypatch.setenv("FLASK_PLURALITY_VALIDATE_METHOD", "GET")
    monkeypatch.setenv("FLASK_PLURALITY_TRUSTED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("FLASK_PLURALITY_LOGIN_MAX_FAILURES", "7")
    app = new_app(tmp_path, TESTING=True)
    app.config.from_prefixed_env()
    Plurality(app)
    assert app.config["PLURALITY_TIMEOUT"] == 1.5
    assert app.config["PLURALITY_LOGIN_MAX_FAILURES"] == 7

    client = app.test_client()
    token = fake.issue_token()
    assert login(client, token, headers={"Origin": "https://b.example"}).status_code == 200
    assert [(c.method, c.auth_ok) for c in fake.calls] == [("GET", True)]
    assert login(client, token, headers={"Origin": "https://c.example"}).status_code == 403


# -- one extension, several apps -----------------------------------------------------


def test_one_extension_serves_two_apps(tmp_path: Path, fake: FakePlurality) -> None:
    plurality = Plurality()
    with FakePlurality(client_id="second", client_secret="second-secret-value") as other:
        first = new_app(tmp_path / "1", TESTING=True, **credentials(fake))
        second = new_app(
            tmp_path / "2",
            TESTING=True,
            PLURALITY_URL_PREFIX="/auth",
            PLURALITY_LOGIN_MAX_FAILURES=1,
            **credentials(other),
        )
        plurality.init_app(first)
        plurality.init_app(second)
        assert first.extensions["plurality"] is plurality
        assert second.extensions["plurality"] is plurality
        assert not hasattr(plurality, "app")

        one, two = first.test_client(), second.test_client()
        token_one, token_two = fake.issue_token(user_id="one"), other.issue_token(user_id="two")
        assert one.post("/plurality/login", json={"token": token_one}).get_json()["profile"]["id"] == "one"
        assert two.post("/auth/login", json={"token": token_two}).get_json()["profile"]["id"] == "two"
        assert two.post("/plurality/login", json={"token": token_two}).status_code == 404

        # Each app asks its own upstream with its own credentials.
        assert [(c.client_id, c.auth_ok) for c in fake.calls] == [(FakePlurality.DEMO_CLIENT_ID, True)]
        assert [(c.client_id, c.auth_ok) for c in other.calls] == [("second", True)]
        # A token of one is not a login in the other; sessions do not cross either.
        assert two.post("/auth/login", json={"token": token_one}).status_code == 401
        assert one.get("/plurality/session").get_json()["profile"]["id"] == "one"
        assert two.get("/auth/session").get_json()["profile"]["id"] == "two"
        # Per-app settings stay per app: only the second throttles after one failure.
        assert two.post("/auth/login", json={"token": "junk.junk.junk"}).status_code == 429
        for _ in range(3):
            assert one.post("/plurality/login", json={"token": "junk.junk.junk"}).status_code == 401


# -- Flask-Session -------------------------------------------------------------------


def test_default_sessions_are_files_in_the_instance_folder(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    assert app.config["SESSION_TYPE"] == "cachelib"
    client = app.test_client()
    login(client, fake.issue_token())
    folder = Path(app.instance_path) / "plurality_sessions"
    assert folder.is_dir()
    files = [f for f in folder.iterdir() if f.is_file()]
    assert files
    assert all(f.stat().st_mode & 0o077 == 0 for f in files), "session files readable by others"
    # They survive a restart: a new app on the same instance folder knows the session.
    cookie = client.get_cookie("session")
    assert cookie is not None
    restarted = build_app(fake, app.instance_path)
    again = restarted.test_client()
    again.set_cookie("session", cookie.value)
    assert again.get("/protected").status_code == 200


def test_users_own_flask_session_is_used_as_is(tmp_path: Path, fake: FakePlurality) -> None:
    cache = SimpleCache()
    app = new_app(tmp_path, TESTING=True, SESSION_TYPE="cachelib", SESSION_CACHELIB=cache, **credentials(fake))
    Plurality(app)
    client = app.test_client()
    assert login(client, fake.issue_token(user_id="mine")).status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    held = Login.load(cache.get("session:" + cookie.value)["_plurality"])
    assert held is not None and held.profile.id == "mine"
    assert not (Path(app.instance_path) / "plurality_sessions").exists()


def test_session_set_up_before_the_extension_is_kept(tmp_path: Path, fake: FakePlurality) -> None:
    cache = SimpleCache()
    app = new_app(
        tmp_path,
        TESTING=True,
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=cache,
        SESSION_KEY_PREFIX="mine:",
        SESSION_COOKIE_SAMESITE="Strict",
        **credentials(fake),
    )
    Session(app)
    Plurality(app)
    client = app.test_client()
    response = login(client, fake.issue_token())
    assert "SameSite=Strict" in response.headers["Set-Cookie"]
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert cache.get("mine:" + cookie.value) is not None


# -- fake mode -----------------------------------------------------------------------


def test_fake_mode_refuses_a_production_app(tmp_path: Path) -> None:
    app = new_app(tmp_path, PLURALITY_FAKE=True, DEBUG=False, TESTING=False)
    with pytest.raises(ConfigurationError, match="PLURALITY_FAKE"):
        Plurality(app)


def test_fake_mode_force_starts_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    app = new_app(tmp_path, PLURALITY_FAKE="force", DEBUG=False, TESTING=False)
    Plurality(app)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "PLURALITY_FAKE" in r.getMessage()]
    assert warnings
    assert app.config["PLURALITY_API_URL"].startswith("http://127.0.0.1:")
    client = app.test_client()
    token = client.post("/plurality/fake/token").get_json()["pluralityToken"]
    assert login(client, token).status_code == 200


@pytest.mark.parametrize("flags", [{"TESTING": True}, {"DEBUG": True}])
def test_fake_mode_whole_flow(tmp_path: Path, flags: dict[str, Any]) -> None:
    """The demo page's flow: mint a token, post it, get a session, hit a protected view."""
    app = new_app(tmp_path, PLURALITY_FAKE=True, **flags)
    Plurality(app)
    client = app.test_client()

    response = client.post("/plurality/fake/token", json={"email": "demo-user@example.com"})

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"status", "pluralityToken"}
    assert body["status"] is True
    token = body["pluralityToken"]
    before = len(stand_in_of(app).calls)
    logged_in = login(client, token)
    assert logged_in.status_code == 200
    assert logged_in.get_json()["profile"]["email"] == "demo-user@example.com"
    assert [c.token for c in stand_in_of(app).calls[before:]] == [token]  # a real validate call
    assert client.get("/plurality/session").status_code == 200


def test_fake_token_default_email_and_bad_email(tmp_path: Path) -> None:
    app = new_app(tmp_path, PLURALITY_FAKE=True, TESTING=True)
    Plurality(app)
    client = app.test_client()
    token = client.post("/plurality/fake/token").get_json()["pluralityToken"]
    assert login(client, token).get_json()["profile"]["email"]
    response = client.post("/plurality/fake/token", json={"email": 5})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_fake_token_route_is_404_outside_fake_mode(client: Any) -> None:
    response = client.post("/plurality/fake/token", json={})
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert "pluralityToken" not in response.get_data(as_text=True)


def test_fake_mode_needs_no_credentials_and_replaces_them(tmp_path: Path) -> None:
    app = new_app(tmp_path, PLURALITY_FAKE=True, TESTING=True, PLURALITY_API_URL="https://app.plurality.network/api")
    Plurality(app)
    assert "plurality.network" not in app.config["PLURALITY_API_URL"]
    assert app.config["PLURALITY_CLIENT_ID"]


# -- the docs ------------------------------------------------------------------------


def _config_table_keys() -> list[str]:
    """The key of every row of the config table (the list-table of docs/configuration.rst)."""
    text = (ROOT / "docs" / "configuration.rst").read_text()
    table = text[text.index("\n.. list-table::\n") + len("\n.. list-table::\n") :]
    after = re.search(r"^\S", table, flags=re.MULTILINE)  # the first line not indented ends it
    table = table[: after.start()] if after else table
    return re.findall(r"^   \* - ``(PLURALITY_[A-Z0-9_]+)``\s*$", table, flags=re.MULTILINE)


def test_docs_config_table_lists_exactly_the_defaults() -> None:
    keys = _config_table_keys()
    assert len(keys) == len(set(keys)), "a key is listed twice"
    assert set(keys) == set(DEFAULTS)


def test_every_key_the_package_reads_has_a_default() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "flask_plurality").glob("*.py"))
    used = set(re.findall(r"[\"'](PLURALITY_[A-Z_]+)[\"']", source))
    assert used <= set(DEFAULTS), used - set(DEFAULTS)


def test_environment_is_left_alone(tmp_path: Path, fake: FakePlurality) -> None:
    before = dict(os.environ)
    Plurality(new_app(tmp_path, TESTING=True, **credentials(fake)))
    assert dict(os.environ) == before


def test_a_cookie_session_installed_after_init_app_never_holds_a_login(
    app: Flask, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    from flask.sessions import SecureCookieSessionInterface

    app.secret_key = "x" * 32
    app.session_interface = SecureCookieSessionInterface()
    response = app.test_client().post("/plurality/login", json={"token": fake.issue_token()}, headers=SAME_ORIGIN)
    assert response.status_code == 503
    assert response.json is not None and response.json["error"] == "session_store_unavailable"
    assert "Set-Cookie" not in response.headers  # nothing reached the browser
    assert "replaced after Plurality.init_app" in caplog.text


@pytest.mark.parametrize("value", ["false", "0", "off", "", "no", False, 0])
def test_plurality_fake_given_as_an_off_string_stays_off(
    make_app: AppFactory, fake: FakePlurality, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(DEBUG=True, PLURALITY_FAKE=value)
    assert app.config["PLURALITY_API_URL"] == fake.url  # not replaced by the built-in stand-in
    assert "PLURALITY_FAKE is on" not in caplog.text
    assert app.test_client().post("/plurality/fake/token").status_code == 404


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PLURALITY_LOGIN_MAX_FAILURES", "ten"),
        ("PLURALITY_TIMEOUT", "nan"),
        ("PLURALITY_TIMEOUT", "inf"),
        ("PLURALITY_TIMEOUT", 0),
        ("PLURALITY_GRACE_PERIOD", -1),
        ("PLURALITY_BREAKER_THRESHOLD", 0),
        ("PLURALITY_BREAKER_COOLDOWN", "soon"),
        ("PLURALITY_MAX_TOKEN_LENGTH", None),
        ("PLURALITY_LOGIN_FAILURE_WINDOW", True),
        ("PLURALITY_VERIFY_TLS", "maybe"),
        ("PLURALITY_FAKE", "sometimes"),
    ],
)
def test_a_bad_number_or_flag_fails_at_init_app_naming_the_key(make_app: AppFactory, key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(**{key: value})


def test_numbers_and_flags_from_the_environment_work(make_app: AppFactory) -> None:
    app = make_app(PLURALITY_TIMEOUT="2.5", PLURALITY_LOGIN_MAX_FAILURES="3", PLURALITY_VERIFY_TLS="true")
    assert app.config["PLURALITY_TIMEOUT"] == "2.5"  # read through the accessor as 2.5
    with app.app_context():
        from flask_plurality.config import config

        assert config.timeout == 2.5 and config.login_max_failures == 3 and config.verify_tls is True


def test_check_lists_an_unknown_key_and_exits_9_once_the_rest_is_checked(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    app = make_app(PLURALITY_REVALIDTE=60)
    result = app.test_cli_runner().invoke(args=["plurality", "check", "--token", fake.issue_token()])
    lines = result.output.strip().splitlines()
    assert "error: PLURALITY_REVALIDTE is not a flask-plurality setting; did you mean PLURALITY_REVALIDATE?" in lines
    assert lines[-1].startswith("all OK: profile id ")  # Plurality was still asked
    assert result.exit_code == 9
    assert len(fake.calls) == 1


def test_check_exits_with_a_failure_of_plurality_before_an_unknown_key(make_app: AppFactory) -> None:
    app = make_app(PLURALITY_API_URL=f"http://127.0.0.1:{free_port()}/api", PLURALITY_TIMOUT=1)
    result = app.test_cli_runner().invoke(args=["plurality", "check"])
    assert "error: PLURALITY_TIMOUT is not a flask-plurality setting" in result.output
    assert result.output.strip().splitlines()[-1].startswith("unreachable: no connection")
    assert result.exit_code == 6
