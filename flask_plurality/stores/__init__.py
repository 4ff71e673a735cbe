"""The store layer: one store per session backend family, and how the app finds its own.

The extension keeps its own state (answer cache, single-flight markers, throttles,
revocations) in the store that holds the sessions, with that backend's own atomic
operations, and writes Flask-Session's entries through the same store so that every
write's outcome is checked and a late request cannot undo a logout. What a store does
is written down once, in :class:`~.protocol.Store`; :func:`get_store` finds the one
behind the app's sessions:

========================================  ===========================================
Flask-Session backend                      store
========================================  ===========================================
``cachelib`` ``FileSystemCache``           :class:`~.files.FileStore` (flock per key)
``cachelib`` ``RedisCache``, ``redis``     :class:`~.redis.RedisStore` (one Redis,
(also Sentinel and ``RedisCluster``)        Sentinel, Redis Cluster)
``cachelib`` ``MemcachedCache``,           :class:`~.memcached.MemcachedStore`
``memcached`` (pymemcache clients)
``sqlalchemy``                             :class:`~.sql.SQLStore`
``cachelib`` ``SimpleCache``               :class:`~.local.CacheLibStore` (per process)
anything else                              :class:`~.local.ForeignStore`: the sessions
                                           where the backend keeps them, the rest per
                                           process (a WARNING at ``init_app``)
========================================  ===========================================
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from cachelib import BaseCache, SimpleCache
from cachelib.file import FileSystemCache
from flask import Flask, current_app
from flask.sessions import SessionInterface

from ..config import DEFAULTS, config
from ..exceptions import ConfigurationError
from ..flask_session_shim import shim
from ..state import get_state
from .base import MAX_TTL, lasting_deletes, log_store_failure, store_errors_as_unavailable, store_use, unavailable_error
from .files import FileStore
from .local import CacheLibStore, ForeignStore, per_process_warning
from .memcached import MemcachedStore, is_pymemcache
from .protocol import UNREAD, Store
from .redis import RedisStore, refuse_client, replica_acks

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

log = logging.getLogger("flask_plurality")

__all__ = [
    "MAX_TTL",
    "UNREAD",
    "CacheLibStore",
    "FileStore",
    "ForeignStore",
    "MemcachedStore",
    "RedisStore",
    "Store",
    "build_store",
    "check_session_client",
    "get_store",
    "key",
    "lasting_deletes",
    "log_store_failure",
    "per_process_warning",
    "redis_client",
    "slot_tag",
    "store_errors_as_unavailable",
    "store_for",
    "store_use",
    "unavailable_error",
    "unusable_client",
    "unwrap",
]


def get_store(app: Flask | None = None) -> Store:
    """The store behind ``app``'s sessions (default: the current app), found once."""
    state = get_state(app)
    if state.store is None:
        target = app or current_app
        state.store = store_for(target.session_interface, target)
    return state.store


def key(kind: str, name: str) -> str:
    """The store key of one of the extension's entries (``PLURALITY_KEY_PREFIX`` first)."""
    return f"{config.key_prefix}{kind}:{name}"


def slot_tag(owner: str) -> str:
    """A Redis Cluster hash tag for ``owner`` (a user id, say): keys that contain it live in
    one hash slot, so one script or transaction may touch them all (without it, a
    cluster answers ``CROSSSLOT``). A digest, not the id itself: a ``}`` in an id would
    end the tag early, and an empty tag is no tag at all."""
    return "{" + hashlib.blake2b(owner.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest() + "}"


def unwrap(interface: SessionInterface) -> SessionInterface:
    """Flask-Session's own interface, inside the guard :mod:`..sessions` puts around it."""
    return cast(SessionInterface, getattr(interface, "inner", interface))


def store_for(interface: SessionInterface, app: Flask | None = None) -> Store:
    """The store behind Flask-Session's interface; one per process, with a WARNING,
    for backends it cannot share."""
    inner = unwrap(interface)
    store = build_store(inner, app or current_app, lambda s: shim.encode(inner, s), lambda raw: shim.decode(inner, raw))
    if isinstance(store, CacheLibStore):
        log.warning("%s", per_process_warning(store))
    return store


def check_session_client(app: Flask) -> None:
    """Refuse, at ``init_app``, a session client Flask-Session would silently replace
    with a default one on localhost (a ``StrictRedis`` of another library, say)."""
    problem = unusable_client(app.config)
    if problem is not None:
        raise ConfigurationError(problem)


def redis_client(inner: SessionInterface) -> Redis | RedisCluster | None:
    """The ``redis.Redis`` (or subclass: any server speaking its protocol) or
    ``redis.cluster.RedisCluster`` behind ``inner``."""
    client = getattr(inner, "client", None)
    if client is None:
        return None
    try:
        from redis import Redis
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - Flask-Session's redis backend needs it anyway
        return None
    return client if isinstance(client, Redis | RedisCluster) else None


Encode = Callable[[Any], bytes]
Decode = Callable[[Any], Any]


def build_store(inner: SessionInterface, app: Flask, encode: Encode, decode: Decode) -> Store:
    """The store for Flask-Session's interface ``inner`` (see the table above).
    ``encode``/``decode``: Flask-Session's serializer for ``inner`` (through the shim in
    :mod:`flask_plurality.flask_session_shim`)."""
    client = redis_client(inner)
    if client is not None:
        return RedisStore(client, encode=encode, decode=decode, **_replicas(app, client))
    cache = getattr(inner, "cache", None)
    if isinstance(cache, FileSystemCache):
        return FileStore(cache)
    if isinstance(cache, BaseCache):
        found = _cachelib_store(cache, app)
        if found is not None:
            return found
    if type(inner).__name__ == "SqlAlchemySessionInterface":
        from .sql import sql_store_for

        sql = sql_store_for(inner, app, encode, decode)
        if sql is not None:
            return sql
    memcached = getattr(inner, "client", None)
    if type(inner).__name__ == "MemcachedSessionInterface" and is_pymemcache(memcached):
        return MemcachedStore(memcached, encode=encode, decode=decode)
    if isinstance(cache, SimpleCache):
        return CacheLibStore(cache)
    return ForeignStore(inner)


def _replicas(app: Flask, client: Any) -> dict[str, Any]:
    """How a Redis store waits for replicas: ``PLURALITY_REPLICA_ACKS``, ``..._TIMEOUT``."""
    settings: Mapping[str, Any]
    try:
        settings = app.config
    except RuntimeError:  # built outside an app context (store_for without an app)
        settings = DEFAULTS
    acks, timeout = (
        settings.get(name, DEFAULTS[name]) for name in ("PLURALITY_REPLICA_ACKS", "PLURALITY_REPLICA_TIMEOUT")
    )
    return {"acks": replica_acks(acks, client), "acks_timeout": float(timeout)}


def _cachelib_store(cache: BaseCache, app: Flask) -> Store | None:
    """The shared store for cachelib's Redis and memcached caches, ``None`` for others."""
    from cachelib.memcached import MemcachedCache
    from cachelib.redis import RedisCache

    if isinstance(cache, RedisCache) and isinstance(cache.key_prefix, str):
        serializer = cache.serializer
        return RedisStore(
            cache._write_client,
            **_replicas(app, cache._write_client),
            key_prefix=cache.key_prefix,
            encode=lambda s: serializer.dumps(dict(s)),
            decode=serializer.loads,
        )
    if isinstance(cache, MemcachedCache) and is_pymemcache(cache._client):
        return MemcachedStore(cache._client, key_prefix=cache.key_prefix or "", encode=dict, decode=lambda v: v)
    return None


def unusable_client(config: Any) -> str | None:
    """Why the session client in ``config`` cannot be used as given (Flask-Session 0.8
    would silently replace it with a default client on localhost), or ``None``."""
    kind = config.get("SESSION_TYPE")
    if kind == "redis":
        return refuse_client(config.get("SESSION_REDIS"))
    if kind == "memcached":
        client = config.get("SESSION_MEMCACHED")
        if client is not None and not all(hasattr(client, name) for name in ("get", "set", "delete")):
            return (
                f"SESSION_MEMCACHED is a {type(client).__name__}, not a memcached client: Flask-Session "
                "would silently connect to 127.0.0.1:11211 instead. Pass a pymemcache client."
            )
    if kind == "sqlalchemy":
        db = config.get("SESSION_SQLALCHEMY")
        try:
            from flask_sqlalchemy import SQLAlchemy
        except ImportError:
            return "SESSION_TYPE is 'sqlalchemy' but Flask-SQLAlchemy is not installed (flask-plurality[sqlalchemy])."
        if db is not None and not isinstance(db, SQLAlchemy):
            return (
                f"SESSION_SQLALCHEMY is a {type(db).__name__}, not a flask_sqlalchemy.SQLAlchemy: "
                "Flask-Session would silently create its own. Pass the app's SQLAlchemy() object."
            )
    return None
