"""The session store goes away: 503 ``session_store_unavailable``, never a 500 or a
trace; back to 200 by itself when the store returns, with every session intact.

Each test runs its own redis-server on a free port, so it can stop, pause (SIGSTOP:
connections are accepted, nothing answers) and restart it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from flask import Flask, session
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory, free_port, login
from werkzeug.test import TestResponse

from flask_plurality import plurality_required
from flask_plurality.logins import Login
from flask_plurality.testing import FakePlurality

pytestmark = pytest.mark.redis


class RedisServer:
    """A redis-server of the test's own; the data survives only an orderly restart."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            for _ in range(100):
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError("redis-server did not start")
        finally:
            probe.close()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart_keeping_data(self) -> None:
        """SHUTDOWN SAVE (writes the data to disk even with --save ""), then start again."""
        self.shutdown(save=True)
        self.start()

    def shutdown(self, *, save: bool) -> None:
        admin = redis.Redis(port=self.port, socket_timeout=2)
        try:
            admin.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            admin.close()
        assert self.process is not None
        self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("PLURALITY_REQUIRE_REDIS"):
            pytest.fail(reason)
        pytest.skip(reason)
    instance = RedisServer(free_port(), tmp_path)
    yield instance
    instance.kill()


@pytest.fixture
def store_client(server: RedisServer) -> Iterator[redis.Redis]:
    """Short timeouts, as the README's deployment section recommends: a stalled store
    answers 503 in half a second instead of holding the request."""
    client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def redis_app(make_app: AppFactory, store_client: redis.Redis) -> Flask:
    return make_app(session_redis=store_client)


def assert_unavailable(response: TestResponse) -> None:
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == "session_store_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert b"Traceback" not in response.data and b"redis" not in response.data.lower()


def assert_logged_in(client: FlaskClient, user_id: str) -> None:
    response = client.get("/protected")
    assert response.status_code == 200, response.data
    assert response.get_json()["id"] == user_id


def stored(store_client: redis.Redis, client: FlaskClient) -> dict[str, Any]:
    cookie = client.get_cookie("session")
    assert cookie is not None
    raw = store_client.get("session:" + cookie.value)
    assert raw is not None, "the session is gone from Redis"
    data = msgspec.msgpack.decode(raw)
    assert isinstance(data, dict)
    return data


def test_store_down_from_the_start_then_up(
    redis_app: Flask, server: RedisServer, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="flask_plurality")
    visitor, returning = redis_app.test_client(), redis_app.test_client()
    returning.set_cookie("session", "a-session-from-before")

    assert_unavailable(login(visitor, fake.issue_token()))
    for response in (
        returning.get("/protected"),
        returning.get("/async"),
        returning.get("/plurality/session"),
        returning.post("/plurality/logout", json={}, headers=SAME_ORIGIN),
    ):
        assert_unavailable(response)
    assert visitor.get("/").get_json() == {"user": None}  # public pages still work
    assert len(fake.calls) == 0  # no upstream call is spent on a login that cannot be kept
    assert caplog.records, "the outage is logged"
    assert all(record.exc_info is None for record in caplog.records)  # a line, not a trace

    server.start()
    response = login(visitor, fake.issue_token())
    assert response.status_code == 200
    assert_logged_in(visitor, response.get_json()["profile"]["id"])


def test_paused_store_answers_503_then_the_session_is_intact(
    redis_app: Flask, server: RedisServer, store_client: redis.Redis, fake: FakePlurality
) -> None:
    server.start()
    client = redis_app.test_client()
    user_id = login(client, fake.issue_token()).get_json()["profile"]["id"]
    assert_logged_in(client, user_id)
    before = stored(store_client, client)

    server.pause()
    try:
        assert_unavailable(client.get("/protected"))
        assert_unavailable(client.get("/plurality/session"))
        assert_unavailable(client.post("/plurality/logout", json={}, headers=SAME_ORIGIN))
        assert_unavailable(login(redis_app.test_client(), fake.issue_token()))
        assert client.get("/").get_json() == {"user": None}
    finally:
        server.resume()

    assert stored(store_client, client) == before  # nothing was overwritten or deleted
    assert_logged_in(client, user_id)
    assert client.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert client.get("/protected").status_code == 401


def test_restarted_store_keeps_the_session(
    redis_app: Flask, server: RedisServer, store_client: redis.Redis, fake: FakePlurality
) -> None:
    server.start()
    client = redis_app.test_client()
    user_id = login(client, fake.issue_token()).get_json()["profile"]["id"]

    server.shutdown(save=True)
    assert_unavailable(client.get("/protected"))
    assert_unavailable(login(redis_app.test_client(), fake.issue_token()))
    server.start()

    assert_logged_in(client, user_id)


def test_store_lost_while_saving_is_a_503_without_a_cookie(
    redis_app: Flask, server: RedisServer, store_client: redis.Redis, fake: FakePlurality
) -> None:
    """The view ran, but its session change cannot be confirmed stored: the client must
    not get a 200 (or a cookie) for it."""

    @redis_app.post("/note")
    @plurality_required
    def note() -> dict[str, Any]:
        session["note"] = "written during the outage"
        server.pause()
        return {"ok": True}

    server.start()
    client = redis_app.test_client()
    user_id = login(client, fake.issue_token()).get_json()["profile"]["id"]
    try:
        response = client.post("/note")
        assert_unavailable(response)
        assert "Set-Cookie" not in response.headers
    finally:
        server.resume()
    # A write that timed out may still land when the store wakes up (it was sent): the
    # 503 means "not confirmed", never "lost". Either way the login is intact.
    held = Login.load(stored(store_client, client)["_plurality"])
    assert held is not None and held.profile.id == user_id
    assert_logged_in(client, user_id)
