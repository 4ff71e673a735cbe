"""What a newcomer reads on the command line when something is wrong: a bad setting is
one line from any ``flask`` command, not a traceback; and ``flask plurality validate``
in demo mode says why a token from another process is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
import requests
from flask import Flask
from helpers import flask_command, flask_env, free_port, stand_in_of, wait_for

from flask_plurality import ConfigurationError, Plurality
from flask_plurality.testing import FakePlurality

ROOT = Path(__file__).resolve().parents[1]

APP = """
from flask import Flask
from flask_plurality import Plurality


def create_app():
    app = Flask(__name__)
    app.config.from_prefixed_env()
    Plurality(app)
    return app
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_a_configuration_error_is_a_click_error() -> None:
    error = ConfigurationError("PLURALITY_TIMEOUT must be a number")
    assert isinstance(error, click.ClickException) and error.exit_code == 1
    assert str(error) == error.format_message() == "PLURALITY_TIMEOUT must be a number"


CREDENTIALS = {
    "FLASK_PLURALITY_CLIENT_ID": "6ea8bf02-0000-4000-8000-000000000000",
    "FLASK_PLURALITY_CLIENT_SECRET": "s",
}


@pytest.mark.slow
@pytest.mark.parametrize("command", [["run", "--port", "0"], ["plurality", "check"], ["routes"]])
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({**CREDENTIALS, "FLASK_PLURALITY_TIMEOUT": "nan"}, "PLURALITY_TIMEOUT must be a number of at least 0.001"),
        ({"FLASK_PLURALITY_FAKE": "true"}, "PLURALITY_FAKE is on but the app is neither in debug nor in testing mode"),
    ],
)
def test_a_bad_setting_is_one_line_from_any_flask_command(
    project: Path, command: list[str], env: dict[str, str], says: str
) -> None:
    result = flask_command(project, "--app", "app", *command, **env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {says}") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_fake_without_debug_says_which_variable_to_set(project: Path) -> None:
    """``FLASK_PLURALITY_FAKE=true flask run`` fails; the message names the two ways out."""
    refused = flask_command(project, "--app", "app", "plurality", "check", FLASK_PLURALITY_FAKE="true")
    assert "flask run --debug" in refused.stderr and "FLASK_PLURALITY_FAKE=force" in refused.stderr
    forced = flask_command(project, "--app", "app", "plurality", "check", FLASK_PLURALITY_FAKE="force")
    assert forced.returncode == 3, forced.stdout + forced.stderr  # the stand-in answers: reachable


# -- exploring the commands before the app can serve -------------------------------------

#: The app cannot load: fake mode outside debug mode (and, in the quickstart, no credentials).
CANNOT_LOAD = {"FLASK_PLURALITY_FAKE": "true"}


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, CANNOT_LOAD], ids=["no-credentials", "app-cannot-load"])
def test_plurality_help_lists_the_commands_without_loading_the_app(project: Path, env: dict[str, str]) -> None:
    listed = flask_command(project, "--app", "app", "plurality", "--help", **env)
    assert listed.returncode == 0, listed.stderr
    assert {"check", "validate", "fake-server", "revoke-user"} <= set(listed.stdout.split())
    assert listed.stderr == ""  # not even init_app's warning about the missing credentials
    one = flask_command(project, "--app", "app", "plurality", "check", "--help", **env)
    assert one.returncode == 0 and "--token" in one.stdout and one.stderr == "", one.stderr


@pytest.mark.slow
def test_flask_help_says_why_the_app_cannot_load_in_one_line(project: Path) -> None:
    """Flask's own help still lists every command, ours included, after one line."""
    result = flask_command(project, "--app", "app", "--help", **CANNOT_LOAD)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: PLURALITY_FAKE is on but the app is neither in debug nor in testing mode")
    assert "plurality" in result.stdout.split() and "routes" in result.stdout.split()


def serve(project: Path, log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """``flask --app app ARGS`` in the background, its output in ``log``, in a process
    group of its own (so that a signal reaches the reloader's child too)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=project,
            env=flask_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, to the whole group, and wait for it."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:  # pragma: no cover - only when the server hangs
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["app-cannot-load", "debug"])
def test_fake_server_runs_without_credentials_and_without_the_apps_stand_in(
    project: Path, tmp_path: Path, debug: list[str]
) -> None:
    """The command that gives out the demo credentials needs none, nor debug mode, and
    starts one stand-in: its own (the app's, in fake mode, is never started)."""
    port, log = free_port(), tmp_path / "fake-server.log"
    server = serve(project, log, *debug, "plurality", "fake-server", "--port", str(port), **CANNOT_LOAD)
    try:
        url = f"http://127.0.0.1:{port}/api/user/validate"
        wait_for(url, server, log)
        answer = requests.post(url, json={"token": "a.b.c"}, timeout=10)
        assert (answer.status_code, answer.text) == (403, "Invalid token")
    finally:
        stop(server)
    output = log.read_text()
    assert output.startswith(f"Plurality stand-in running at http://127.0.0.1:{port}/api"), output
    assert "PLURALITY_FAKE is on" not in output and "Error" not in output, output


@pytest.mark.slow
def test_fake_mode_warns_once_under_the_reloader(project: Path, tmp_path: Path) -> None:
    """``flask run --debug`` loads the app twice (the reloader's watcher, then the
    server): one warning that logins are fake, from the one that serves."""
    port, log = free_port(), tmp_path / "run.log"
    server = serve(project, log, "run", "--debug", "--port", str(port), FLASK_PLURALITY_FAKE="true")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/plurality/session", server, log).status_code == 401
    finally:
        stop(server)
    assert log.read_text().count("PLURALITY_FAKE is on: logins are checked by a local stand-in") == 1, log.read_text()


# -- validate in demo mode ---------------------------------------------------------------------


def demo_app(tmp_path: Path) -> Flask:
    app = Flask("demo", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, PLURALITY_FAKE=True)
    Plurality(app)
    return app


def test_validate_in_demo_mode_says_why_another_stand_ins_token_is_refused(tmp_path: Path) -> None:
    with FakePlurality() as elsewhere:  # what `flask plurality fake-server` runs
        token = elsewhere.issue_token(email="ada@example.com")
    result = demo_app(tmp_path).test_cli_runner().invoke(args=["plurality", "validate", token])
    assert result.exit_code == 4
    lines = result.output.strip().splitlines()
    assert lines[0] == "token invalid or expired: Plurality refused it (bad signature, expired or revoked)"
    assert lines[1].startswith("note: this app runs in demo mode (PLURALITY_FAKE)")
    assert "PLURALITY_API_URL, PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET" in lines[1]


def test_validate_in_demo_mode_accepts_its_own_stand_ins_token(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    token = stand_in_of(app).issue_token(email="ada@example.com")
    result = app.test_cli_runner().invoke(args=["plurality", "validate", token])
    assert result.exit_code == 0, result.output
    assert '"email": "ada@example.com"' in result.output and "note:" not in result.output


def test_validate_outside_demo_mode_has_no_demo_note(tmp_path: Path, fake: FakePlurality) -> None:
    app = Flask("real", instance_path=str(tmp_path / "instance"))
    app.config.update(PLURALITY_API_URL=fake.url, PLURALITY_CLIENT_ID=fake.client_id)
    app.config["PLURALITY_CLIENT_SECRET"] = fake.client_secret
    Plurality(app)
    token = fake.issue_token()
    fake.revoke(token)
    result = app.test_cli_runner().invoke(args=["plurality", "validate", token])
    assert result.exit_code == 4 and "demo mode" not in result.output


@pytest.mark.slow
def test_validate_a_fake_server_token_with_the_sample_in_demo_mode(tmp_path: Path) -> None:
    """The reported case, as typed: ``flask --app examples.app plurality validate <token>``."""
    with FakePlurality() as fake_server:
        token = fake_server.issue_token()
        demo = flask_command(
            ROOT, "--app", f"examples.app:create_app(instance_path={str(tmp_path)!r})", "plurality", "validate", token
        )
        assert demo.returncode == 4, demo.stderr
        assert "note: this app runs in demo mode" in demo.stderr
        # What the note says to do works: point the sample at that fake-server.
        pointed = flask_command(
            ROOT,
            "--app",
            f"examples.app:create_app(instance_path={str(tmp_path)!r})",
            "plurality",
            "validate",
            token,
            PLURALITY_API_URL=fake_server.url,
            PLURALITY_CLIENT_ID=fake_server.client_id,
            PLURALITY_CLIENT_SECRET=fake_server.client_secret,
        )
        assert pointed.returncode == 0, pointed.stderr
        assert '"email": "demo@example.com"' in pointed.stdout or '"id":' in pointed.stdout
