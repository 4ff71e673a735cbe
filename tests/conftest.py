"""Shared fixtures: a real stand-in over HTTP, and apps built the way a user builds them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.views import MethodView
from werkzeug.test import TestResponse

from flask_plurality import Plurality, current_profile, plurality_required
from flask_plurality.testing import FakePlurality, config_for

AppFactory = Callable[..., Flask]


@pytest.fixture
def fake() -> Iterator[FakePlurality]:
    """A fresh stand-in on a random loopback port."""
    with FakePlurality() as stand_in:
        yield stand_in


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


@pytest.fixture
def make_app(fake: FakePlurality, tmp_path_factory: pytest.TempPathFactory) -> AppFactory:
    """``make_app(**config)``: a new app (own instance folder) against ``fake``."""

    def factory(**config: Any) -> Flask:
        return build_app(fake, str(tmp_path_factory.mktemp("instance")), **config)

    return factory


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def error_of(response: TestResponse, status: int, code: str, *secrets: str) -> dict[str, Any]:
    """The SPEC error shape: JSON, ``{"error", "message"}``, nothing secret or internal."""
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
    kwargs.setdefault("headers", {"Origin": "http://localhost"})
    return client.post("/plurality/login", json={"token": token}, **kwargs)


def redis_url_or_skip() -> str:
    url = os.environ.get("PLURALITY_TEST_REDIS_URL")
    reason = None
    if not url:
        reason = "PLURALITY_TEST_REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)"
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


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """A real Redis client on a database flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url_or_skip())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
