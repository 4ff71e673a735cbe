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
        reason = "PLURALITY_TEST_REDIS_URL is not set (.ci/run starts a redis-server of its own)"
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


def flask_env(**env: str) -> dict[str, str]:
    """The environment of a ``flask`` command: none of our PLURALITY_/FLASK_ variables
    (``env`` adds some, ``FLASK_APP`` included) and this checkout's package first."""
    root = Path(__file__).resolve().parents[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLURALITY_", "FLASK_"))}
    clean["PYTHONPATH"] = os.pathsep.join([str(root), clean.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**clean, **env}


def flask_command(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``flask`` command in ``cwd``, run to its end, in :func:`flask_env`."""
    return subprocess.run(
        [sys.executable, "-m", "flask", *args],
        cwd=cwd,
        env=flask_env(**env),
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


@dataclass
class Traffic:
    """What steady traffic saw: ``(when, status, wrong user)`` per request (status -1:
    no answer at all)."""

    seen: list[tuple[float, int, bool]]

    def counts(self) -> dict[int, int]:
        """{status: count}, in status order."""
        counted: dict[int, int] = {}
        for _, status, _ in list(self.seen):
            counted[status] = counted.get(status, 0) + 1
        return dict(sorted(counted.items()))

    def wrong_users(self) -> int:
        return sum(1 for _, _, wrong in list(self.seen) if wrong)

    def failing_after(self, start: float) -> float:
        """Seconds from ``start`` to the last answer that was not a 200 (0: none)."""
        failing = [at for at, status, _ in list(self.seen) if status != 200 and at >= start]
        return max(failing) - start if failing else 0.0

    def wait_clean(self, seconds: float = 3, timeout: float = 45) -> None:
        """Until ``seconds`` of nothing but 200s (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            recent = [status for at, status, _ in list(self.seen) if at > time.monotonic() - seconds]
            if recent and all(status == 200 for status in recent):
                return


@contextmanager
def steady_traffic(
    http: requests.Session, servers: list[str], cookies: list[str], users: list[str], threads: int = 4
) -> Iterator[Traffic]:
    """``threads`` threads asking ``/protected`` of every server with every session
    (``cookies[n]`` is ``users[n]``'s) until the block ends; a 200 naming another user
    is counted as a wrong user."""
    traffic = Traffic([])
    stop = threading.Event()

    def run(n: int) -> None:
        i = n
        while not stop.is_set():
            base, which = servers[i % len(servers)], i % len(cookies)
            wrong = False
            try:
                response = http.get(f"{base}/protected", cookies={"session": cookies[which]}, timeout=10)
                status = response.status_code
                wrong = status == 200 and response.json().get("id") != users[which]
            except requests.RequestException:
                status = -1  # counted: must not happen
            traffic.seen.append((time.monotonic(), status, wrong))
            i += 1
            time.sleep(0.02)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield traffic
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)


def _settled_status(client: FlaskClient, cookie: str, timeout: float = 30) -> int:
    """``/protected``'s status for the session ``cookie`` once the store answers again
    (not a 503): the cookie as it was, whatever the logout's answer did to it."""
    deadline = time.monotonic() + timeout
    while True:
        client.set_cookie("session", cookie)
        status = client.get("/protected").status_code
        if status != 503 or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


@contextmanager
def replication_cut(replica_port: int) -> Iterator[None]:
    """For the block, the replica on ``replica_port`` has no link to its primary: dropped,
    and every attempt to connect again refused (a wrong ``masterauth``). What the primary
    acknowledges meanwhile reaches no replica, as when it dies a moment after answering."""
    import redis

    with redis.Redis(host="127.0.0.1", port=replica_port, socket_timeout=2) as replica:
        replica.config_set("masterauth", "not-the-password")
        replica.client_kill_filter(_type="master")
    try:
        yield
    finally:
        with redis.Redis(host="127.0.0.1", port=replica_port, socket_timeout=2) as replica:
            replica.config_set("masterauth", "")


def check_logouts_survive_a_failover(
    held: FlaskClient,
    unconfirmed: FlaskClient,
    *,
    replica_port: int,
    kill_primary: Callable[[], None],
    promoted: Callable[[], bool],
) -> None:
    """Two sessions stored on one primary. ``held`` logs out while its replica is up; then
    the replica is cut off (:func:`replication_cut`), ``unconfirmed`` logs out, the
    primary is killed right after and the replica promoted. A logout answered 200 must
    stay a logout; one no replica acknowledged must be a 503 (without waiting for a
    replica it would be a 200, and its session would come back)."""
    from backends import wait_until

    held_cookie, unconfirmed_cookie = (client.get_cookie("session") for client in (held, unconfirmed))
    assert held_cookie is not None and unconfirmed_cookie is not None
    assert held.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    with replication_cut(replica_port):
        answer = unconfirmed.post("/plurality/logout", json={}, headers=SAME_ORIGIN)
        kill_primary()
        wait_until(promoted, 30, "the replica's promotion")
    unconfirmed_after = _settled_status(unconfirmed, unconfirmed_cookie.value)
    held_after = _settled_status(held, held_cookie.value)
    assert held_after == 401  # acknowledged by the replica before the answer: held
    if answer.status_code == 200:
        assert unconfirmed_after == 401, "a logout answered 200 came back after the failover"
    error_of(answer, 503, "session_store_unavailable")
    assert unconfirmed_after == 200  # the replica never saw that delete: the 503 was true
