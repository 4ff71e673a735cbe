"""Every Flask-Session internal the package touches still exists: an upgrade that
removes or renames one fails here, by name, instead of somewhere in a login."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import AppFactory, login

from flask_plurality.flask_session_shim import shim
from flask_plurality.sessions import GuardedSessionInterface
from flask_plurality.testing import FakePlurality


def test_the_shim_names_what_it_needs() -> None:
    assert shim.INTERNALS == (
        "_upsert_session",
        "_delete_session",
        "_retrieve_session_data",
        "_get_store_id",
        "serializer",
    )


def test_the_default_backend_has_every_internal(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    interface = app.session_interface
    assert isinstance(interface, GuardedSessionInterface)
    assert shim.missing(interface.inner) == []
    # And the round trip through them works: a login is stored and read back.
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert client.get("/protected").status_code == 200


@pytest.mark.redis
def test_the_redis_backend_has_every_internal(make_app: AppFactory, fake: FakePlurality, redis_client: Any) -> None:
    app = make_app(SESSION_TYPE="redis", SESSION_REDIS=redis_client)
    inner = app.session_interface.inner  # type: ignore[attr-defined]
    assert shim.missing(inner) == []
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert client.get("/protected").status_code == 200
    stored = [k for k in redis_client.keys("session:*")]
    assert len(stored) == 1
    assert "_plurality" in shim.decode(inner, redis_client.get(stored[0]))


def test_a_missing_internal_is_named() -> None:
    class Serializer:
        def dumps(self, value: Any) -> bytes:  # the development branch's names
            return b""

        def loads(self, raw: bytes) -> Any:
            return {}

    class Renamed:
        serializer = Serializer()

        def _upsert_session(self) -> None: ...

        def _delete_session(self) -> None: ...

        def _get_store_id(self) -> None: ...

    assert shim.missing(Renamed()) == ["_retrieve_session_data"]  # type: ignore[arg-type]
    del Serializer.loads
    assert shim.missing(Renamed()) == ["_retrieve_session_data", "serializer.decode"]  # type: ignore[arg-type]
    del Renamed._delete_session
    assert shim.missing(Renamed()) == ["_delete_session", "_retrieve_session_data", "serializer.decode"]  # type: ignore[arg-type]
