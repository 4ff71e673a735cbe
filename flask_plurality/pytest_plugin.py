"""pytest fixtures for apps that use flask-plurality (installed with the ``testing`` extra)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakePlurality


@pytest.fixture
def plurality_fake() -> Iterator[FakePlurality]:
    """A running stand-in for Plurality's validate API on a free loopback port."""
    with FakePlurality() as fake:
        yield fake
