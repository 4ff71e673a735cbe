"""Demo mode (``PLURALITY_FAKE``) in more than one process: gunicorn workers, with and
without ``--preload``, and a dev server the reloader restarts.

Every process serving one instance folder shares the stand-in's signing key and demo
users through a file there, so a token minted by one worker logs in at another, and a
restarted process still accepts the session of the one before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from flask import Flask
from helpers import TESTS, free_port, gunicorn_process, process_is_gone, stand_in_of, wait_for

from flask_plurality import ConfigurationError, Plurality, current_profile, plurality_required
from flask_plurality.fake import STATE_FILE
from flask_plurality.testing import FakePlurality, PluralityTestClient, shared_fake


def demo_env(instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_", "FLASK_", "GUNICORN_", "WEB_C"))}
    return {**env, "PYTHONUNBUFFERED": "1", "DEMO_INSTANCE": str(instance), **extra}


def demo_login(base: str, email: str) -> dict[str, Any]:
    """The demo page's flow, each request on a new connection (so any worker may answer):
    mint a token, post it to /login, then a protected route with the session."""
    minted = requests.post(f"{base}/plurality/fake/token", json={"email": email}, timeout=15)
    token = minted.json()["pluralityToken"]
    login = requests.post(f"{base}/plurality/login", json={"token": token}, timeout=15)
    cookie = login.cookies.get("session")
    protected = requests.get(f"{base}/fresh", headers={"Cookie": f"session={cookie}"}, timeout=15)
    return {
        "statuses": (minted.status_code, login.status_code, protected.status_code),
        "pids": (minted.headers["X-Pid"], login.headers["X-Pid"], protected.headers["X-Pid"]),
        "user": protected.json().get("user") if protected.status_code == 200 else None,
    }


# -- gunicorn -w 3 -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("options", [(), ("--preload",)], ids=["forked-after-import", "preload"])
def test_every_login_works_on_three_workers_and_they_stop_cleanly(tmp_path: Path, options: tuple[str, ...]) -> None:
    log = tmp_path / "gunicorn.log"
    env = demo_env(tmp_path / "instance")
    with gunicorn_process("demo_app:create_app()", env, 3, log, *options, "--graceful-timeout", "30") as served:
        # Five at a time, so a busy worker leaves the next connection to another.
        with ThreadPoolExecutor(5) as pool:
            logins = list(pool.map(lambda n: demo_login(served.base, f"user{n}@example.com"), range(20)))
        assert [r["statuses"] for r in logins] == [(200, 200, 200)] * 20, log.read_text()
        crossed = [r for r in logins if len(set(r["pids"])) > 1]
        assert crossed, "no login was minted by one worker and posted to another"
        assert len({pid for r in logins for pid in r["pids"]}) >= 2
        processes = {served.process.pid, *served.workers}

        began = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=60)
        while not all(process_is_gone(pid) for pid in processes) and time.monotonic() - began < 60:
            time.sleep(0.05)
        took = time.monotonic() - began
    leftover = [pid for pid in processes if not process_is_gone(pid)]
    assert leftover == []
    output = log.read_text()
    assert took < 10, f"shutdown took {took:.1f} s:\n{output}"  # a worker waiting on a lost thread takes 30
    assert "SIGKILL" not in output and "WORKER TIMEOUT" not in output, output
    assert served.process.returncode == 0, output


# -- the reloader ----------------------------------------------------------------------------------


RESTARTS = {
    "flask run --debug": ["-m", "flask", "--app", "demo_app:create_app()", "run", "--debug", "--port", "{port}"],
    "app.run(debug=True)": ["demo_app.py"],
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(RESTARTS))
def test_a_code_reload_keeps_the_developer_logged_in(tmp_path: Path, how: str) -> None:
    """The reloader starts a new process on every change; the session made before it is
    still good, on a route that asks the stand-in again (``revalidate=True``)."""
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(TESTS / "demo_app.py", code / "demo_app.py")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = demo_env(tmp_path / "instance", DEMO_FAKE="true", DEMO_PORT=str(port), PYTHONPATH=str(code))
    log = tmp_path / "server.log"
    command = [sys.executable, *(part.format(port=port) for part in RESTARTS[how])]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(f"{base}/pid", server, log)
        with requests.Session() as browser:
            token = browser.post(f"{base}/plurality/fake/token", json={}, timeout=15).json()["pluralityToken"]
            assert browser.post(f"{base}/plurality/login", json={"token": token}, timeout=15).status_code == 200
            before = browser.get(f"{base}/fresh", timeout=15)
            assert before.status_code == 200
            first_pid = before.json()["pid"]

            later = time.time() + 5
            os.utime(code / "demo_app.py", (later, later))  # "a code change"
            deadline = time.monotonic() + 60
            pid = first_pid
            while pid == first_pid:
                assert time.monotonic() < deadline, f"the reloader did not restart the app:\n{log.read_text()}"
                time.sleep(0.2)
                try:
                    pid = requests.get(f"{base}/pid", timeout=5).json()["pid"]
                except (requests.ConnectionError, requests.Timeout, ValueError):
                    continue

            after = browser.get(f"{base}/fresh", timeout=15)
            assert (after.status_code, after.json()) == (200, {"pid": pid, "user": before.json()["user"]})
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone: its log says why
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.slow
def test_a_new_process_on_the_same_instance_folder_accepts_the_old_session(tmp_path: Path) -> None:
    """Restarted by hand (Ctrl-C, start again): the same as the reloader's restart."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = demo_env(tmp_path / "instance")
    command = [sys.executable, "-m", "flask", "--app", "demo_app:create_app()", "run", "--port", str(port)]

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            server = subprocess.Popen(command, cwd=TESTS, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(f"{base}/pid", server, log)
        return server

    first = start(tmp_path / "first.log")
    try:
        with requests.Session() as browser:
            token = browser.post(f"{base}/plurality/fake/token", json={}, timeout=15).json()["pluralityToken"]
            assert browser.post(f"{base}/plurality/login", json={"token": token}, timeout=15).status_code == 200
            assert browser.get(f"{base}/fresh", timeout=15).status_code == 200
            cookie = browser.cookies["session"]
    finally:
        first.terminate()
        first.wait(timeout=30)
    second = start(tmp_path / "second.log")
    try:
        again = requests.get(f"{base}/fresh", headers={"Cookie": f"session={cookie}"}, timeout=15)
        assert again.status_code == 200, again.text
        assert again.json()["pid"] == second.pid
    finally:
        second.terminate()
        second.wait(timeout=30)


# -- a fork keeps the stand-in usable ----------------------------------------------------------------

FORK = """
import json, os, sys, time
import requests
from flask_plurality.fake import shared_fake

fake = shared_fake(sys.argv[1])
read, write = os.pipe()
child = os.fork()
if child == 0:
    token = fake.issue_token(email="forked@example.com")  # recorded in the child only
    began = time.monotonic()
    fake.stop()
    os.write(write, json.dumps([token, time.monotonic() - began]).encode())
    os._exit(0)
os.close(write)
token, stop_took = json.loads(os.read(read, 65536))
os.waitpid(child, 0)
answer = requests.post(fake.validate_url, json={"token": token}, auth=(fake.client_id, fake.client_secret), timeout=10)
print(json.dumps({"status": answer.status_code, "email": answer.json()["user"]["email"], "stop_took": stop_took}))
"""


@pytest.mark.slow
def test_a_forked_child_mints_tokens_the_parent_accepts_and_stops_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORK, str(tmp_path / "instance")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json_line(done.stdout)
    assert (result["status"], result["email"]) == (200, "forked@example.com")
    assert result["stop_took"] < 2  # not waiting for the parent's thread


def json_line(output: str) -> dict[str, Any]:
    value = json.loads(output.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


# -- one user per email ------------------------------------------------------------------------------


def demo_app(instance: Path, **config: Any) -> Flask:
    app = Flask("demo", instance_path=str(instance))
    app.config.update(TESTING=True, **config, PLURALITY_FAKE=True)
    return app


def claims(token: str) -> dict[str, Any]:
    value: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return value


def mint(client: Any, email: str | None = None) -> str:
    response = client.post("/plurality/fake/token", json={} if email is None else {"email": email})
    assert response.status_code == 200
    token = response.get_json()["pluralityToken"]
    assert isinstance(token, str)
    return token


def test_fake_token_gives_one_user_per_email_the_same_as_login_as(tmp_path: Path) -> None:
    app = demo_app(tmp_path / "instance")
    Plurality(app)
    client = app.test_client()
    ada, ada_again, bob = (claims(mint(client, e))["id"] for e in ("ada@example.com", "ada@example.com", "bob@x.org"))
    assert ada == ada_again != bob
    assert claims(mint(client))["id"] == claims(mint(client, "demo@example.com"))["id"]  # the default email

    app.test_client_class = PluralityTestClient
    assert app.test_client().login_as("ada@example.com").id == ada


def test_find_or_create_by_unique_email_logs_the_same_user_in_twice(tmp_path: Path) -> None:
    """The docs' user loader: one row per email (a unique column), found or created."""
    app = demo_app(tmp_path / "instance")
    plurality = Plurality(app)
    users = sqlite3.connect(":memory:", check_same_thread=False)
    users.execute("CREATE TABLE users (plurality_id TEXT PRIMARY KEY, email TEXT UNIQUE)")

    @plurality.user_loader
    def load(profile: Any) -> str:
        users.execute("INSERT OR IGNORE INTO users VALUES (?, ?)", (profile.id, profile.email))
        row = users.execute("SELECT plurality_id FROM users WHERE email = ?", (profile.email,)).fetchone()
        if row[0] != profile.id:
            raise sqlite3.IntegrityError("UNIQUE constraint failed: users.email")
        return str(row[0])

    @app.get("/me")
    @plurality_required
    def me() -> dict[str, Any]:
        return {"id": current_profile.id}

    for _ in range(2):
        browser = app.test_client()
        token = mint(browser, "carol@example.com")
        assert browser.post("/plurality/login", json={"token": token}).status_code == 200
        assert browser.get("/me").status_code == 200
    assert users.execute("SELECT count(*) FROM users").fetchone()[0] == 1


# -- the state file ----------------------------------------------------------------------------------


def test_apps_on_one_instance_folder_share_a_stand_in_and_accept_each_others_tokens(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    first, second, elsewhere = demo_app(instance), demo_app(instance), demo_app(tmp_path / "other")
    for app in (first, second, elsewhere):
        Plurality(app)
    assert stand_in_of(first) is stand_in_of(second) is shared_fake(instance)
    assert stand_in_of(elsewhere) is not stand_in_of(first)

    # What a second worker process has: its own stand-in object on the same file.
    with FakePlurality(state_file=instance / STATE_FILE) as worker:
        assert worker.signing_key == stand_in_of(first).signing_key
        token = worker.issue_token(email="dora@example.com")
        browser = first.test_client()
        login = browser.post("/plurality/login", json={"token": token})
        assert login.status_code == 200 and login.get_json()["profile"]["email"] == "dora@example.com"
        # Revoked in one, refused by every other.
        revoked = mint(second.test_client(), "erin@example.com")
        worker.revoke(revoked)
        assert second.test_client().post("/plurality/login", json={"token": revoked}).status_code == 401

    mode = stat.S_IMODE((instance / STATE_FILE).stat().st_mode)
    assert mode == 0o600  # it holds the signing key
    # The key was never written to the log or the file's name, and it is not a token's.
    assert stand_in_of(first).signing_key not in repr(stand_in_of(first))


def test_a_state_file_that_is_not_one_is_a_one_line_configuration_error(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / STATE_FILE).write_bytes(b"not a database, " * 64)
    with pytest.raises(ConfigurationError) as caught:
        Plurality(demo_app(instance))
    message = str(caught.value)
    assert "\n" not in message and STATE_FILE in message and "file is not a database" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_unwritable_instance_folder_is_a_one_line_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the instance folder should be")
    with pytest.raises(ConfigurationError, match=r"^PLURALITY_FAKE keeps the stand-in's signing key") as caught:
        Plurality(demo_app(blocker / "instance"))
    assert "\n" not in str(caught.value)


def test_a_signing_key_that_differs_from_the_files_is_refused(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    FakePlurality(state_file=path, signing_key="k" * 32)
    assert FakePlurality(state_file=path).signing_key == "k" * 32
    with pytest.raises(ValueError, match="differs") as caught:
        FakePlurality(state_file=path, signing_key="j" * 32)
    assert "k" * 32 not in str(caught.value) and "j" * 32 not in str(caught.value)


def test_fake_token_is_a_503_when_the_state_file_is_gone_bad(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    app = demo_app(instance)
    Plurality(app)
    (instance / STATE_FILE).write_bytes(b"not a database, " * 256)  # overwritten behind the stand-in's back
    response = app.test_client().post("/plurality/fake/token", json={})
    assert response.status_code == 503
    assert response.get_json()["error"] == "upstream_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert stand_in_of(app).signing_key not in response.get_data(as_text=True)
