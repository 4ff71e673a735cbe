"""pytest fixtures for apps that use flask-plurality (installed with the ``testing`` extra).

Opt-in: a project turns it on with ``pytest_plugins = ["flask_plurality.pytest_plugin"]``
in its top ``conftest.py`` (or ``pytest -p flask_plurality.pytest_plugin``). There is no
``pytest11`` entry point, so pytest runs of other projects in the same environment never
import the package.

Each test is isolated: :func:`plurality_config` points the app at a stand-in of the
test's own and at a session store of the test's own (files in a fresh temporary
directory), so sessions, failed-login counters, cached answers and revocations never
cross from one test, or one run, to the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .testing import FakePlurality, _track, config_for, store_config


@pytest.fixture
def plurality_fake() -> Iterator[FakePlurality]:
    """A running stand-in for Plurality's validate API on a free loopback port.

    One per test: its users, revocations, faults and ``calls`` start empty.
    :class:`~flask_plurality.testing.PluralityTestClient` finds it from the app's
    ``PLURALITY_API_URL``.
    """
    with FakePlurality() as fake, _track(fake):
        yield fake


@pytest.fixture
def plurality_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``SESSION_TYPE`` and ``SESSION_CACHELIB`` for a session store of this test's own:
    the file store ``init_app`` sets up by default, in a new temporary directory instead
    of the app's instance folder, encoding sessions with Flask-Session's serializer (as
    Redis, memcached and SQL do) so a value production would refuse fails the test."""
    return store_config(tmp_path_factory.mktemp("plurality_sessions"))


@pytest.fixture
def plurality_config(plurality_fake: FakePlurality, plurality_store: dict[str, Any]) -> dict[str, Any]:
    """Everything an app under test needs: ``PLURALITY_API_URL``, ``PLURALITY_CLIENT_ID``
    and ``PLURALITY_CLIENT_SECRET`` pointing at :func:`plurality_fake`, and the session
    store of :func:`plurality_store`. Give it to your app factory; keys you set after it
    (your own ``SESSION_TYPE``, say) win."""
    return {**config_for(plurality_fake), **plurality_store}
