"""What the tests share: building apps the README's way, logging in, reading the store.

Fixtures live in conftest.py; everything else a test module needs from another lives
here, so no test module imports another.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from flask.views import MethodView
from flask_session.base import ServerSideSessionInterface
from werkzeug.test import TestResponse

from flask_plurality import Plurality, current_profile, plurality_required
from flask_plurality.testing import FakePlurality, config_for

AppFactory = Callable[..., Flask]

#: The client id of ``hfake`` (conftest), the stand-in whose secret tests search for.
HYGIENE_CLIENT_ID = "0b0e5e1c-7f57-4c8e-9d55-3f2f9a9b6a01"

#: The app's own origin as the test client sees it: what a same-site page sends.
SAME_ORIGIN = {"Origin": "http://localhost"}


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TESTS = Path(__file__).resolve().parent


def fan_out(call: Callable[[], Any], times: int, threads: int = 8) -> list[Any]:
    """``call()`` ``times`` times from ``threads`` threads; the results in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: call(), range(times)))


@dataclass
class Gunicorn:
    """A running ``gunicorn``: its base URL, the master process, the workers' pids."""

    base: str
    process: subprocess.Popen[bytes]
    workers: set[int]


@contextmanager
def gunicorn(app: str, env: dict[str, str], workers: int, log: Path, *options: str) -> Iterator[str]:
    """``gunicorn -w N [options] app`` (the tests folder on its path) on a free loopback
    port; yields its base URL once every worker answers ``GET /pid``. Stopped after,
    and the test fails if its log shows a traceback."""
    with gunicorn_process(app, env, workers, log, *options) as served:
        yield served.base


@contextmanager
def gunicorn_process(app: str, env: dict[str, str], workers: int, log: Path, *options: str) -> Iterator[Gunicorn]:
    """:func:`gunicorn`, yielding the master process and the workers' pids too."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        *options,
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(TESTS),
        app,
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        pids: set[int] = set()
        while len(pids) < workers:  # every worker has booted and answers
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"gunicorn did not start:\n{log.read_text()}"
            try:
                pids |= {r["pid"] for r in fan_out(lambda: requests.get(f"{base}/pid", timeout=15).json(), 2 * workers)}
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a worker still booting
                time.sleep(0.1)
        yield Gunicorn(base, process, pids)
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert "Traceback" not in log.read_text(), log.read_text()


def process_is_gone(pid: int) -> bool:
    """No process ``pid``, or only its zombie (exited, not yet reaped by whoever adopted it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def build_app(fake: FakePlurality, instance_path: str, *, session_redis: Any = None, **config: Any) -> Flask:
    """An app as the README wires it, plus a few protected routes used across the tests."""
    app = Flask("testapp", instance_path=instance_path)
    app.config.update(
        TESTING=True,
        **config_for(fake),
        PLURALITY_TIMEOUT=2.0,
    )
    if session_redis is not None:
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=session_redis)
    app.config.update(config)
    Plurality(app)

    @app.get("/")
    def home() -> dict[str, Any]:
        return {"user": current_profile.id if current_profile else None}

    @app.route("/protected", methods=["GET", "POST", "OPTIONS"])
    @plurality_required
    def protected() -> dict[str, Any]:
        return {"id": current_profile.id, "email": current_profile.email}

    @app.post("/sensitive")
    @plurality_required(revalidate=True)
    def sensitive() -> dict[str, Any]:
        return {"done": True, "id": current_profile.id}

    @app.get("/async")
    @plurality_required
    async def async_view() -> dict[str, Any]:
        return {"id": current_profile.id}

    class Items(MethodView):
        decorators: ClassVar[list[Callable[..., Any]]] = [plurality_required]

        def get(self) -> dict[str, Any]:
            return {"items": [], "owner": current_profile.id}

    app.add_url_rule("/items", view_func=Items.as_view("items"))
    return app


class DictSessions(ServerSideSessionInterface):  # type: ignore[misc]
    """A Flask-Session backend flask-plurality has no store for: sessions in a dict."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self.data: dict[str, Any] = {}

    def _retrieve_session_data(self, store_id: str) -> Any:
        return self.data.get(store_id)

    def _delete_session(self, store_id: str) -> None:
        self.data.pop(store_id, None)

    def _upsert_session(self, lifetime: Any, session: Any, store_id: str) -> None:
        self.data[store_id] = dict(session)


def stand_in_of(app: Flask) -> FakePlurality:
    """The stand-in an app in demo mode (``PLURALITY_FAKE``) started: its instance folder's."""
    fake = app.extensions["plurality.state"].fake
    assert isinstance(fake, FakePlurality), "the app is not in demo mode"
    return fake


def error_of(response: TestResponse, status: int, code: str, *secrets: str) -> dict[str, Any]:
    """The error shape of docs/endpoints.rst: JSON, ``{"error", "message"}``, nothing secret or internal."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    for secret in secrets:
        assert secret not in text
        assert all(secret not in value for value in response.headers.values())
    return body


def login(client: FlaskClient, token: str, **kwargs: Any) -> Any:
    """POST the token the way the sample page does (JSON, same origin)."""
    kwargs.setdefault("headers", SAME_ORIGIN)
    return client.post("/plurality/login", json={"token": token}, **kwargs)


def logged_in_on_two(first: Flask, second: Flask, token: str) -> tuple[FlaskClient, FlaskClient]:
    """Log in on ``first`` (a worker) and give a client of ``second`` the same cookie:
    (the browser, the same browser as another worker sees it)."""
    browser = first.test_client()
    assert login(browser, token).status_code == 200
    cookie = browser.get_cookie("session")
    assert cookie is not None
    other = second.test_client()
    other.set_cookie("session", cookie.value)
    return browser, other


def redis_url_or_skip() -> str:
    url = os.environ.get("PLURALITY_TEST_REDIS_URL")
    reason = None
    if not url:
        reason = "PLURALITY_TEST_REDIS_URL is not set (.ci/run sets redis://127.0.0.1:6379/15)"
    else:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            reason = f"no Redis answers at {url}: {exc}"
    if reason:
        if os.environ.get("PLURALITY_REQUIRE_REDIS"):
            pytest.fail(f"Redis is required here (PLURALITY_REQUIRE_REDIS): {reason}")
        pytest.skip(reason)
    assert url is not None
    return url


try:
    import redis
except ImportError:  # the Redis tests skip (or fail to import) without it; nothing else needs it
    pass
else:

    class CountingRedis(redis.Redis):
        """A real Redis client (a subclass, as a Redis-compatible server's client may be)
        that remembers the commands it sends, in ``sent`` (set it to a list first)."""

        sent: list[str]

        def execute_command(self, *args: Any, **options: Any) -> Any:
            self.sent.append(str(args[0]))
            return super().execute_command(*args, **options)


# -- reading what a login left in the store ---------------------------------------------


def stored_login(app: Flask, client: FlaskClient) -> dict[str, Any] | None:
    """The login as the session store holds it for ``client``'s cookie, or ``None``."""
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    if cookie is None:
        return None
    interface: Any = app.session_interface
    store_id = interface.key_prefix + cookie.value
    if hasattr(interface, "cache"):
        data = interface.cache.get(store_id)
    else:
        raw = interface.client.get(store_id)
        data = interface.serializer.decode(raw) if raw is not None else None
    if not isinstance(data, dict):
        return None
    value = data.get("_plurality")
    return dict(value) if isinstance(value, dict) else None


def stored_session(app: Flask, sid: str) -> dict[str, Any] | None:
    """Everything the session store holds under session id ``sid``, or ``None``."""
    interface: Any = app.session_interface
    store_id = interface.key_prefix + sid
    if hasattr(interface, "cache"):
        data = interface.cache.get(store_id)
    else:
        raw = interface.client.get(store_id)
        data = interface.serializer.decode(raw) if raw is not None else None
    return dict(data) if isinstance(data, dict) else None


def csrf_token_in(page: TestResponse) -> str:
    """The CSRF token a Flask-WTF form on ``page`` carries (what a browser would post back)."""
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1) or found.group(2)


def session_is_live(client: FlaskClient) -> bool:
    """What the page sees: ``/plurality/session`` says 200 or 401."""
    response = client.get("/plurality/session")
    assert response.status_code in (200, 401), response.get_data(as_text=True)
    return response.status_code == 200


def age_session(client: FlaskClient, seconds: float) -> None:
    """Pretend the last good answer is ``seconds`` older (as if that much time had passed)."""
    with client.session_transaction() as sess:
        data = dict(sess["_plurality"])
        data["v"] -= seconds  # when Plurality last said yes (see flask_plurality.logins.Login)
        sess["_plurality"] = data


#: Every method of the store protocol (flask_plurality.stores.protocol.Store) that writes.
STORE_WRITES = (
    "set",
    "delete",
    "add",
    "incr",
    "decr",
    "set_rarely_written",
    "save_session",
    "delete_session",
)


@contextmanager
def store_writes(app: Flask) -> Iterator[list[str]]:
    """The writes the app makes to its store while the block runs, by method name, in
    order. Every write the extension or Flask-Session makes goes through the store
    (the session guard routes Flask-Session's own through it); each is still made."""
    store: Any = app.session_interface.store  # type: ignore[attr-defined]
    writes: list[str] = []

    def counted(name: str) -> Callable[..., Any]:
        real = getattr(store, name)

        def write(*args: Any, **kwargs: Any) -> Any:
            writes.append(name)
            return real(*args, **kwargs)

        return write

    for name in STORE_WRITES:
        setattr(store, name, counted(name))
    try:
        yield writes
    finally:
        for name in STORE_WRITES:
            delattr(store, name)


@contextmanager
def captured(signal: Any, app: Flask) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every ``signal`` sent by ``app`` inside the block."""
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    with signal.connected_to(receiver, sender=app):
        yield seen


# -- browsers -----------------------------------------------------------------------------

#: Debian's chromium, headless, with nothing that reaches out to the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> str:
    """Debian's chromium and Playwright's Python package, or a skip (a failure in CI)."""
    reason = None
    executable = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if executable is None:
        reason = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright's Python package is not installed (python3 dev.py installs it: requirements/dev.txt)"
    if reason is not None:
        if os.environ.get("PLURALITY_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test must run here (PLURALITY_REQUIRE_BROWSER): {reason}")
        pytest.skip(reason)
    assert executable is not None
    return executable


def wait_for(url: str, process: subprocess.Popen[Any], log: Path) -> requests.Response:
    """The first answer of a server ``process`` starts (its output goes to ``log``)."""
    deadline = time.monotonic() + 90  # a bound for a loaded machine, not a measurement
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return requests.get(url, timeout=5)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still importing the app
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()}")


def all_at_once(count: int, send: Callable[[int], Any]) -> list[Any]:
    """``send(0)`` ... ``send(count - 1)``, each in a thread of its own, released together
    by a barrier so they really overlap; their results in that order."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(n: int) -> None:
        start.wait()
        results[n] = send(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result is not None for result in results), "a request raised instead of answering"
    return results


def login_over_http(http: requests.Session, base: str, token: str) -> str:
    """Log in through a real server at ``base`` (as the page on that origin would):
    the new session's cookie."""
    response = http.post(f"{base}/plurality/login", json={"token": token}, headers={"Origin": base}, timeout=10)
    assert response.status_code == 200, response.text
    cookie = response.cookies.get("session")
    assert cookie
    return str(cookie)


def flask_command(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``flask`` command in ``cwd``, with none of our PLURALITY_/FLASK_ variables
    (``env`` adds some, ``FLASK_APP`` included) and this checkout's package first."""
    root = Path(__file__).resolve().parents[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_", "FLASK_"))}
    clean["PYTHONPATH"] = os.pathsep.join([str(root), clean.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "flask", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_benchmark(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ...`` from the repository's root, its output captured."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
