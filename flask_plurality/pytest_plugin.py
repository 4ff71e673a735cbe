"""pytest fixtures for apps that use flask-plurality (installed with the ``testing`` extra).

Registered through the ``pytest11`` entry point, so ``pip install
flask-plurality[testing]`` is all a project needs: no ``pytest_plugins`` line.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakePlurality, _track, config_for


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
def plurality_config(plurality_fake: FakePlurality) -> dict[str, str]:
    """``PLURALITY_API_URL``, ``PLURALITY_CLIENT_ID`` and ``PLURALITY_CLIENT_SECRET``
    pointing at :func:`plurality_fake`; give them to your app factory."""
    return config_for(plurality_fake)
