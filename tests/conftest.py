"""Shared fixtures: a real stand-in over HTTP, and apps built the way a user builds them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import CHROMIUM_ARGS, HYGIENE_CLIENT_ID, AppFactory, build_app, chromium_or_skip, redis_url_or_skip

from flask_plurality import Plurality
from flask_plurality.testing import FakePlurality

# The package's pytest plugin (plurality_fake, plurality_config) is opt-in, as in a user's
# project: without this line none of it loads.
pytest_plugins = ["flask_plurality.pytest_plugin"]


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


# -- browsers -----------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Debian chromium driven by Playwright (a ``Browser``); skips as
    :func:`chromium_or_skip` says."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# -- the sample app ---------------------------------------------------------------------------


@pytest.fixture
def fresh_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start a test of the sample app (examples/) from scratch: no PLURALITY_* in the
    environment, which it reads, and a new module-level ``Plurality()``, whose client
    keeps the circuit breaker and any ``Retry-After`` hold of earlier tests."""
    for key in list(os.environ):
        if key.startswith(("PLURALITY_CLIENT", "FLASK_PLURALITY_", "PLURALITY_FAKE", "PLURALITY_API_URL")):
            monkeypatch.delenv(key)
    import examples.app

    monkeypatch.setattr(examples.app, "plurality", Plurality())


@pytest.fixture
def secret() -> str:
    """A client secret of the test's own, to search every output for."""
    return "sk_" + secrets.token_urlsafe(24)


@pytest.fixture
def hfake(secret: str) -> Iterator[FakePlurality]:
    """A stand-in that knows only ``HYGIENE_CLIENT_ID`` with ``secret``."""
    with FakePlurality(client_id=HYGIENE_CLIENT_ID, client_secret=secret) as stand_in:
        yield stand_in
