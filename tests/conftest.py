"""Shared fixtures: a real stand-in over HTTP, and apps built the way a user builds them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import AppFactory, build_app, redis_url_or_skip

from flask_plurality.testing import FakePlurality


@pytest.fixture
def fake() -> Iterator[FakePlurality]:
    """A fresh stand-in on a random loopback port."""
    with FakePlurality() as stand_in:
        yield stand_in


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


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """A real Redis client on a database flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url_or_skip())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
