"""The sample app's safety: when it runs in demo mode, where ``next`` may send a browser,
its demo in several processes, and what it prints when something is wrong.

Demo mode lets anyone mint a login (``POST /plurality/fake/token``), so it must never be
on next to real credentials, however ``PLURALITY_FAKE`` is spelled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from flask import Flask

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed; it is imported from the checkout
    sys.path.insert(0, str(ROOT))

from helpers import SAME_ORIGIN, error_of, free_port, wait_for  # noqa: E402

from examples.app import DASHBOARD, create_app  # noqa: E402
from flask_plurality import ConfigurationError  # noqa: E402
from flask_plurality.testing import FakePlurality, live_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("fresh_sample")

SECRET = "sample-app-secret-0123456789abcdef"
OFF = ["False", "false", "FALSE", "off", "OFF", "no", "No", "0", "none"]
ON = ["true", "True", "TRUE", "1", "yes", "on", "force", "FORCE", "Force"]


def sample(tmp_path: Path, env_file: Path | None = None) -> Flask:
    """The sample app as ``python -m examples.app`` builds it: settings from the environment."""
    return create_app(env_file=env_file, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def credentials(fake: FakePlurality, monkeypatch: pytest.MonkeyPatch) -> FakePlurality:
    """Real credentials in the environment, for a client app the stand-in knows."""
    fake.add_client("sample-app-id", SECRET)
    monkeypatch.setenv("PLURALITY_CLIENT_ID", "sample-app-id")
    monkeypatch.setenv("PLURALITY_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("PLURALITY_API_URL", fake.url)
    return fake


def assert_real_mode(app: Flask, fake: FakePlurality) -> None:
    assert app.config["DEMO_MODE"] is False
    client = app.test_client()
    # The route that mints logins does not exist, and nothing on the page offers it.
    error_of(client.post("/plurality/fake/token", json={}), 404, "not_found")
    assert "Sign in (demo)" not in client.get("/").get_data(as_text=True)
    # Logins are checked with the configured Plurality, under the app's own credentials.
    token = fake.issue_token(email="erin@example.com", client_id="sample-app-id")
    assert client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN).status_code == 200
    assert (fake.calls[-1].client_id, fake.calls[-1].auth_ok) == ("sample-app-id", True)


def assert_demo_mode(app: Flask) -> None:
    assert app.config["DEMO_MODE"] is True
    client = app.test_client()
    token = client.post("/plurality/fake/token", json={}).json["pluralityToken"]
    assert client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN).status_code == 200
    assert client.get("/api/me").status_code == 200


# -- PLURALITY_FAKE, spelled every way, with and without credentials ---------------------------


@pytest.mark.parametrize("spelling", OFF)
def test_fake_off_with_credentials_is_real_mode(
    spelling: str, credentials: FakePlurality, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The reported hole: ``PLURALITY_FAKE=False`` turned demo mode on next to real credentials."""
    monkeypatch.setenv("PLURALITY_FAKE", spelling)
    assert_real_mode(sample(tmp_path), credentials)


def test_fake_unset_with_credentials_is_real_mode(credentials: FakePlurality, tmp_path: Path) -> None:
    assert_real_mode(sample(tmp_path), credentials)


@pytest.mark.parametrize("spelling", ON)
def test_fake_on_with_credentials_refuses_to_start(
    spelling: str, credentials: FakePlurality, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PLURALITY_FAKE", spelling)
    with pytest.raises(ConfigurationError, match=r"PLURALITY_FAKE=.* asks for demo mode, but Plurality credentials"):
        sample(tmp_path)


@pytest.mark.parametrize("spelling", ["", *ON])
def test_fake_unset_or_on_without_credentials_is_demo_mode(
    spelling: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PLURALITY_FAKE", spelling)
    assert_demo_mode(sample(tmp_path))


@pytest.mark.parametrize("spelling", OFF)
def test_fake_off_without_credentials_says_what_is_missing(
    spelling: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Off means real mode was asked for: not a silent demo, but the missing settings named,
    and logins refused with a 503 that names them too."""
    monkeypatch.setenv("PLURALITY_FAKE", spelling)
    app = sample(tmp_path)
    assert app.config["DEMO_MODE"] is False
    error_of(app.test_client().post("/plurality/fake/token", json={}), 404, "not_found")
    login = app.test_client().post("/plurality/login", json={"token": "x.y.z"}, headers=SAME_ORIGIN)
    body = error_of(login, 503, "not_configured")
    assert "PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET are not set" in body["message"]


@pytest.mark.parametrize("spelling", ["maybe", "fals", "2x"])
def test_fake_misspelled_is_refused_by_name(spelling: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLURALITY_FAKE", spelling)
    with pytest.raises(ConfigurationError, match="PLURALITY_FAKE must be true or false"):
        sample(tmp_path)


def test_fake_off_in_the_env_file_with_credentials_is_real_mode(fake: FakePlurality, tmp_path: Path) -> None:
    fake.add_client("sample-app-id", SECRET)
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"PLURALITY_CLIENT_ID=sample-app-id\nPLURALITY_CLIENT_SECRET={SECRET}\n"
        f"PLURALITY_API_URL={fake.url}\nPLURALITY_FAKE=False\n"
    )
    assert_real_mode(sample(tmp_path, env_file), fake)


def test_flask_prefixed_fake_is_read_the_same_way(
    credentials: FakePlurality, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLASK_PLURALITY_FAKE", "off")  # from_prefixed_env: not JSON, a string
    assert_real_mode(sample(tmp_path), credentials)
    monkeypatch.setenv("FLASK_PLURALITY_FAKE", "true")  # JSON true
    with pytest.raises(ConfigurationError, match="asks for demo mode"):
        sample(tmp_path / "again")


# -- the pages -----------------------------------------------------------------------------------


def test_signed_in_home_page_is_not_headed_sign_in(tmp_path: Path) -> None:
    client = sample(tmp_path).test_client()
    assert "<h1>Sign in with Plurality</h1>" in client.get("/").get_data(as_text=True)
    token = client.post("/plurality/fake/token", json={"email": "ann@example.com"}).json["pluralityToken"]
    client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN)
    page = client.get("/").get_data(as_text=True)
    assert "<h1>You are signed in</h1>" in page and "Sign in with Plurality" not in page
    assert "ann@example.com" in page


def test_demo_page_says_how_to_get_to_real_logins(tmp_path: Path) -> None:
    page = sample(tmp_path).test_client().get("/", base_url="http://127.0.0.1:5000").get_data(as_text=True)
    steps = page[page.index('id="next-steps"') :]
    for needed in (
        f'<a href="{DASHBOARD}">',
        "<code>http://127.0.0.1:5000</code>, for it",  # the exact origin to register
        "Invalid domain",
        "PLURALITY_CLIENT_ID=...",
        "PLURALITY_CLIENT_SECRET=...",
        "examples/.env",
        "Restart the app",
    ):
        assert needed in steps, needed


def test_real_mode_page_has_no_demo_steps(credentials: FakePlurality, tmp_path: Path) -> None:
    assert 'id="next-steps"' not in sample(tmp_path).test_client().get("/").get_data(as_text=True)


HOSTILE_NEXT = [
    "/\t/evil.example/phish",
    "/\r/evil.example/phish",
    "/\n/evil.example/phish",
    "/\r\n/evil.example/phish",
    "/\\/evil.example/phish",
    "/\\evil.example/phish",
    "\\\\evil.example/phish",
    "/%09/evil.example/phish",  # encoded once more than the query string decodes
    "//evil.example/phish",
    "https://evil.example/phish",
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_hostile_next_is_not_put_on_the_page(target: str, tmp_path: Path) -> None:
    page = sample(tmp_path).test_client().get("/?next=" + quote(target, safe="")).get_data(as_text=True)
    assert 'data-next="/profile"' in page
    assert "evil.example" not in page


def test_a_path_on_the_site_is_kept_as_next(tmp_path: Path) -> None:
    page = sample(tmp_path).test_client().get("/?next=" + quote("/api/me?x=1", safe="")).get_data(as_text=True)
    assert 'data-next="/api/me?x=1"' in page


# -- the open redirect, in a real browser ----------------------------------------------------------

# How the page's query string is written, and the value a naive "starts with one /, no
# backslash" check would have let through (tab, CR and LF; the backslash variants are
# for checks that forget it). Browsers drop tabs and newlines and read "\" as "/", so
# each of these leaves the site.
REDIRECT_VARIANTS = [
    ("/?next=/%09/evil.example/phish", "/\t/evil.example/phish"),
    ("/?next=/%0D/evil.example/phish", "/\r/evil.example/phish"),
    ("/?next=/%0A/evil.example/phish", "/\n/evil.example/phish"),
    ("/?next=/%0D%0A/evil.example/phish", "/\r\n/evil.example/phish"),
    ("/?next=/%5C/evil.example/phish", "/\\/evil.example/phish"),
    ("/?next=/%5Cevil.example/phish", "/\\evil.example/phish"),
    ("/?next=%5C%5Cevil.example/phish", "\\\\evil.example/phish"),
    ("/?next=/%09/%5Cevil.example/phish", "/\t/\\evil.example/phish"),
    ("/?next=/\t/evil.example/phish", "/\t/evil.example/phish"),  # a raw tab: the browser drops it
]


def loopback_only(outside: list[str]) -> Any:
    """A Playwright route handler: loopback goes through; anything else is recorded in
    ``outside`` and answered with a stand-in for the attacker's page."""

    def handle(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.fulfill(status=200, content_type="text/html", body="<h1>phished</h1>")

    return handle


@pytest.mark.browser
def test_next_never_leaves_the_site_in_chromium(chromium: Any, tmp_path: Path) -> None:
    with live_server(sample(tmp_path)) as base:
        for query, naive_value in [*REDIRECT_VARIANTS, ("/?next=/profile%3Ffrom%3Dmail", None)]:
            context = chromium.new_context()
            outside: list[str] = []
            context.route("**/*", loopback_only(outside))
            page = context.new_page()
            page.goto(base + query)
            if naive_value is not None:
                # The variant is a real attack: the browser resolves it to the attacker's host.
                assert page.evaluate("v => new URL(v, location.href).host", naive_value) == "evil.example", query
            with page.expect_navigation():
                page.get_by_role("button", name="Sign in (demo)").click()
            page.wait_for_load_state()
            assert outside == [], query
            expected = base + ("/profile" if naive_value is not None else "/profile?from=mail")
            assert page.url == expected, query
            assert page.get_by_role("heading", name="Your Plurality profile").is_visible()
            context.close()


# -- processes: one-line errors, Ctrl-C, workers ---------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_", "FLASK_", "GUNICORN_", "WEB_C"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def demo_login(base: str) -> int:
    with requests.Session() as http:
        token = http.post(base + "/plurality/fake/token", json={}, timeout=10).json()["pluralityToken"]
        assert http.post(base + "/plurality/login", json={"token": token}, timeout=10).status_code == 200
        return http.get(base + "/api/me", timeout=10).status_code


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PLURALITY_TIMEOUT": "nan"}, "error: PLURALITY_TIMEOUT must be a number of at least 0.001, not 'nan'"),
        ({"PLURALITY_FAKE": "maybe"}, "error: PLURALITY_FAKE must be true or false, not 'maybe'"),
        (
            {"PLURALITY_FAKE": "1", "PLURALITY_CLIENT_ID": "x", "PLURALITY_CLIENT_SECRET": "y"},
            "error: PLURALITY_FAKE=1 asks for demo mode, but Plurality credentials are set",
        ),
    ],
)
def test_a_bad_setting_is_one_line_not_a_traceback(env: dict[str, str], says: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.app", "--instance-path", str(tmp_path)],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(says) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "to_group"),
    [
        # Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
        (signal.SIGINT, True),
        # An IDE's stop button or a process manager: SIGTERM (or the terminal closing:
        # SIGHUP) to dev.py alone, which must not leave the app serving on its port.
        (signal.SIGTERM, False),
        (signal.SIGHUP, False),
        # A process manager that signals the whole group: the app gets it twice (passed on too).
        (signal.SIGTERM, True),
    ],
    ids=["ctrl-c", "sigterm-to-dev-py", "sighup-to-dev-py", "sigterm-to-the-group"],
)
def test_stopping_dev_py_demo_stops_the_app(tmp_path: Path, how: signal.Signals, to_group: bool) -> None:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("dev.py runs the app from .venv, which `python3 dev.py test` creates")
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "dev.py", "demo", "--port", str(port), "--instance-path", str(tmp_path / "i")],
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell job has
        )
        try:
            assert wait_for(f"http://127.0.0.1:{port}/", process, log).status_code == 200
            if to_group:
                os.killpg(process.pid, how)
            else:
                process.send_signal(how)
            code = process.wait(timeout=30)
            with pytest.raises(requests.ConnectionError):  # nothing left serving the port
                requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the group: dev.py and an orphaned app alike
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert code == 0, output
    assert output.rstrip().endswith("Stopped."), output


@pytest.mark.slow
def test_a_second_demo_on_a_busy_port_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "examples.app", "--port", str(port), "--instance-path", str(tmp_path / "i")],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"port {port} is in use" in line and f"--port {port + 1}" in line and "python3 dev.py demo" in line, line
    assert "Traceback" not in result.stderr


def demo_session(base: str) -> str:
    """Log in to the demo at ``base`` as its page does; the session cookie."""
    with requests.Session() as http:
        token = http.post(base + "/plurality/fake/token", json={}, timeout=10).json()["pluralityToken"]
        assert http.post(base + "/plurality/login", json={"token": token}, timeout=10).status_code == 200
        return str(http.cookies["session"])


@pytest.mark.slow
def test_two_demo_processes_on_one_instance_folder_share_their_logins(tmp_path: Path) -> None:
    """A second ``python -m examples.app`` beside the first: a session made on one is good
    on the other, even where the stand-in is asked again (the sensitive action)."""
    instance = str(tmp_path / "instance")
    servers, bases = [], []
    try:
        for n in range(2):
            port = free_port()
            log = tmp_path / f"demo{n}.log"
            with log.open("wb") as out:
                server = subprocess.Popen(
                    [sys.executable, "-m", "examples.app", "--port", str(port), "--instance-path", instance],
                    cwd=ROOT,
                    env=clean_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            servers.append(server)
            bases.append(f"http://127.0.0.1:{port}")
            wait_for(bases[-1] + "/", server, log)
        for here, there in (bases, bases[::-1]):
            cookie = {"Cookie": f"session={demo_session(here)}"}
            assert requests.get(there + "/api/me", headers=cookie, timeout=10).status_code == 200
            transfer = requests.post(there + "/api/transfer", json={}, headers={**cookie, "Origin": there}, timeout=10)
            assert transfer.status_code == 200, transfer.text
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    for n in range(2):
        assert "Traceback" not in (tmp_path / f"demo{n}.log").read_text()


def gunicorn(workers: int, port: int, instance: Path, log: Path) -> subprocess.Popen[bytes]:
    factory = f"examples.app:create_app(instance_path={str(instance)!r})"
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", factory],
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "logins"), [(3, 12), (1, 5)])
def test_demo_under_gunicorn_logs_everyone_in(tmp_path: Path, workers: int, logins: int) -> None:
    """The docstring's command: with three workers, 13 of 30 logins failed once, each
    worker with its own stand-in."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    server = gunicorn(workers, port, tmp_path / "instance", log)
    try:
        wait_for(f"http://127.0.0.1:{port}/", server, log)
        assert [demo_login(f"http://127.0.0.1:{port}") for _ in range(logins)] == [200] * logins
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_demo_under_flask_run_debug_starts_despite_the_reloader(tmp_path: Path) -> None:
    """``flask run --debug`` loads the app in the reloader's parent and again in the child
    that serves: both open the instance folder's stand-in, and the child serves."""
    port = free_port()
    log = tmp_path / "flask.log"
    factory = f"examples.app:create_app(instance_path={str(tmp_path / 'instance')!r})"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", factory, "run", "--debug", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/", server, log)
        assert demo_login(f"http://127.0.0.1:{port}") == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert "Traceback" not in log.read_text()
