"""Every Flask-Session internal the package reads or replaces, behind one object.

A leaf module (it imports nothing of the package), so that both the stores and the
session guard use it: a Flask-Session upgrade that renames an internal is a change to
this file, and ``tests/test_flask_session_shim.py`` names what went missing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, cast

from flask import Flask
from flask.sessions import SessionInterface
from flask_session import Session
from flask_session.base import ServerSideSession

#: Flask-Session's own upsert: (lifetime, session, store id).
Upsert = Callable[[timedelta, ServerSideSession, str], None]
#: Flask-Session's own read of a session's data: store id -> data or ``None``.
Retrieve = Callable[[str], dict[str, Any] | None]


class _FlaskSessionShim:
    """Every Flask-Session internal this package reads or replaces, in one place.

    Flask-Session 0.8 has ``serializer.encode``/``decode``; its development branch
    renames them ``dumps``/``loads``: both are accepted. ``INTERNALS`` lists what must
    exist; a test fails by name when an upgrade removes one.
    """

    #: Attributes of a ``ServerSideSessionInterface`` that are not its public API.
    INTERNALS: Final = (
        "_upsert_session",
        "_delete_session",
        "_retrieve_session_data",
        "_get_store_id",
        "serializer",
    )

    @staticmethod
    def missing(inner: SessionInterface) -> list[str]:
        """The internals ``inner`` lacks (empty when this shim fits it)."""
        gone = [name for name in _FlaskSessionShim.INTERNALS if not hasattr(inner, name)]
        serializer = getattr(inner, "serializer", None)
        if serializer is not None:
            if not any(hasattr(serializer, name) for name in ("encode", "dumps")):
                gone.append("serializer.encode")
            if not any(hasattr(serializer, name) for name in ("decode", "loads")):
                gone.append("serializer.decode")
        return gone

    @staticmethod
    def store_id(inner: SessionInterface, sid: str) -> str:
        """Where Flask-Session stores the session ``sid`` (its key prefix first)."""
        return cast(str, inner._get_store_id(sid))  # type: ignore[attr-defined]

    @staticmethod
    def encode(inner: SessionInterface, session: ServerSideSession) -> bytes:
        serializer: Any = inner.serializer  # type: ignore[attr-defined]
        encode = getattr(serializer, "encode", None) or serializer.dumps
        return cast(bytes, encode(session))

    @staticmethod
    def probe_of(inner: SessionInterface) -> Callable[[Any], object]:
        """Encodes like :meth:`encode`, for finding which value it refuses: msgspec's
        encoder itself where there is one (Flask-Session logs every failure of its own)."""
        encoder = getattr(getattr(inner, "serializer", None), "encoder", None)
        if encoder is not None and callable(getattr(encoder, "encode", None)):
            return cast(Callable[[Any], object], encoder.encode)
        return lambda data: _FlaskSessionShim.encode(inner, data)

    @staticmethod
    def decode(inner: SessionInterface, raw: bytes | str) -> Any:
        serializer: Any = inner.serializer  # type: ignore[attr-defined]
        decode = getattr(serializer, "decode", None) or serializer.loads
        return decode(raw)

    # The backend's own methods, from its class: the session guard shadows them on the
    # instance, and a store that delegates to them must never reach the guard's.

    @staticmethod
    def own_upsert(inner: SessionInterface) -> Upsert:
        return cast(Upsert, _own(inner, "_upsert_session"))

    @staticmethod
    def own_retrieve(inner: SessionInterface) -> Retrieve:
        return cast(Retrieve, _own(inner, "_retrieve_session_data"))

    @staticmethod
    def own_delete(inner: SessionInterface) -> Callable[[str], None]:
        return cast(Callable[[str], None], _own(inner, "_delete_session"))

    @staticmethod
    def set_upsert(inner: SessionInterface, upsert: Upsert) -> None:
        inner._upsert_session = upsert  # type: ignore[attr-defined]

    @staticmethod
    def set_delete(inner: SessionInterface, delete: Callable[[str], None]) -> None:
        inner._delete_session = delete  # type: ignore[attr-defined]

    @staticmethod
    def retrieve_of(inner: SessionInterface) -> Callable[[str], dict[str, Any] | None]:
        return cast(Callable[[str], dict[str, Any] | None], inner._retrieve_session_data)  # type: ignore[attr-defined]

    # Flask-Session 0.8's redis backend takes only a ``redis.Redis``: anything else (a
    # ``redis.cluster.RedisCluster``) it replaces with ``Redis()`` on localhost, silently.

    @staticmethod
    def setup(app: Flask) -> None:
        """``Session(app)``, keeping a ``SESSION_REDIS`` cluster client as given."""
        client = app.config.get("SESSION_REDIS")
        replaced = app.config.get("SESSION_TYPE") == "redis" and _is_cluster(client)
        if replaced:
            from redis import Redis

            app.config["SESSION_REDIS"] = Redis()  # never connects: Flask-Session checks its type only
        try:
            Session(app)
        finally:
            if replaced:
                app.config["SESSION_REDIS"] = client
        _FlaskSessionShim.keep_client(app.session_interface, app.config)

    @staticmethod
    def keep_client(inner: SessionInterface, config: Any) -> None:
        """Put back the cluster client Flask-Session replaced (when the app called
        ``Session(app)`` itself, after Flask-Session's RuntimeWarning about it)."""
        client = config.get("SESSION_REDIS")
        if type(inner).__name__ == "RedisSessionInterface" and _is_cluster(client) and inner.client is not client:  # type: ignore[attr-defined]
            inner.client = client  # type: ignore[attr-defined]

    @staticmethod
    def set_retrieve(inner: SessionInterface, retrieve: Callable[[str], dict[str, Any] | None]) -> None:
        inner._retrieve_session_data = retrieve  # type: ignore[attr-defined]


def _is_cluster(client: Any) -> bool:
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # no redis: no cluster client either
        return False
    return isinstance(client, RedisCluster)


def _own(inner: SessionInterface, name: str) -> Any:
    """``inner``'s method ``name`` as its class defines it (not as shadowed on ``inner``)."""
    return getattr(type(inner), name).__get__(inner, type(inner))


shim = _FlaskSessionShim()
