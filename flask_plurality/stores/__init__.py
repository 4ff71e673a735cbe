"""One store implementation per session backend family (SPEC 7).

The extension keeps its own state (answer cache, single-flight markers, throttles,
revocations) in the store that holds the sessions, with that backend's own atomic
operations, and writes Flask-Session's entries through the same store so that every
write's outcome is checked and a late request cannot undo a logout:

========================================  ===========================================
Flask-Session backend                      store
========================================  ===========================================
``cachelib`` ``FileSystemCache``           :class:`~.files.FileStore` (flock per key)
``cachelib`` ``RedisCache``, ``redis``     :class:`~.redis.RedisStore`
``cachelib`` ``MemcachedCache``,           :class:`~.memcached.MemcachedStore`
``memcached`` (pymemcache clients)
``sqlalchemy``                             :class:`~.sql.SQLStore`
anything else                              :class:`CacheLibStore` on a per-process
                                           ``SimpleCache`` (a WARNING at ``init_app``)
========================================  ===========================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cachelib import BaseCache, SimpleCache
from cachelib.file import FileSystemCache

from .base import MAX_TTL, RarelyWritten, SessionWriter, bounded, store_errors_as_unavailable, unavailable_error
from .files import FileStore
from .memcached import MemcachedStore, is_pymemcache
from .redis import RedisStore, refuse_cluster

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("flask_plurality")

__all__ = [
    "MAX_TTL",
    "CacheLibStore",
    "FileStore",
    "MemcachedStore",
    "RedisStore",
    "SessionWriter",
    "build_store",
    "store_errors_as_unavailable",
    "unavailable_error",
    "unusable_client",
]


class CacheLibStore(RarelyWritten):
    """Any other cachelib cache; per process (``shared=False``) for ``SimpleCache``.

    Read-modify-write steps run under a lock of this process: exact within it, which is
    all a per-process store can promise.
    """

    def __init__(self, cache: BaseCache, *, shared: bool) -> None:
        self.cache = cache
        self.shared = shared
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with store_errors_as_unavailable():
            return self.cache.get(key)

    def set(self, key: str, value: Any, ttl: float) -> None:
        with store_errors_as_unavailable():
            done = self.cache.set(key, value, timeout=bounded(ttl))
        if done is False:
            raise unavailable_error(f"{type(self.cache).__name__}.set reported a failure")

    def delete(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.cache.delete(key)

    def add(self, key: str, value: Any, ttl: float) -> bool:
        with self._lock, store_errors_as_unavailable():
            return bool(self.cache.add(key, value, timeout=bounded(ttl)))

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        with self._lock:
            now = time.time()
            count, until = self._counter(key, now)
            if not count:
                until = now + bounded(ttl)
            self.set(key, [count + 1, until], until - now + 1)
        return count + 1, max(1, int(until - now + 0.999))

    def decr(self, key: str) -> None:
        with self._lock:
            now = time.time()
            count, until = self._counter(key, now)
            if count > 1:
                self.set(key, [count - 1, until], until - now + 1)
            elif count == 1:
                self.delete(key)

    def peek(self, key: str) -> tuple[int, int]:
        now = time.time()
        count, until = self._counter(key, now)
        return (count, max(1, int(until - now + 0.999))) if count else (0, 0)

    def _counter(self, key: str, now: float) -> tuple[int, float]:
        value = self.get(key)
        if isinstance(value, list) and len(value) == 2 and value[1] > now:
            return int(value[0]), float(value[1])
        return 0, now

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        with self._lock:
            with store_errors_as_unavailable():
                if only_if_present and not self.cache.has(store_id):
                    return
                done = self.cache.set(store_id, dict(session), timeout=max(1, ttl))
            if done is False:
                raise unavailable_error(f"{type(self.cache).__name__}.set reported a failure")

    def delete_session(self, store_id: str) -> None:
        with store_errors_as_unavailable():
            done = self.cache.delete(store_id)
        if done is False and self.cache.has(store_id):
            raise unavailable_error(f"{type(self.cache).__name__}.delete reported a failure")


def _redis_client(inner: Any) -> Any:
    client = getattr(inner, "client", None)
    try:
        from redis import Redis
    except ImportError:  # pragma: no cover - Flask-Session's redis backend needs it anyway
        return None
    return client if isinstance(client, Redis) else None


Encode = Callable[[Any], bytes]
Decode = Callable[[Any], Any]


def build_store(inner: Any, app: Any, encode: Encode, decode: Decode) -> tuple[Store, str | None]:
    """The store for Flask-Session's interface ``inner``, and a warning when it can only
    be per process (what does not work then). ``encode``/``decode``: Flask-Session's
    serializer for ``inner`` (through the shim in :mod:`flask_plurality.flask_session_shim`)."""
    client = _redis_client(inner)
    if client is not None:
        return RedisStore(client, encode=encode, decode=decode), None
    cache = getattr(inner, "cache", None)
    if isinstance(cache, FileSystemCache):
        return FileStore(cache), None
    if isinstance(cache, BaseCache):
        found = _cachelib_store(cache)
        if found is not None:
            return found, None
    if type(inner).__name__ == "SqlAlchemySessionInterface":
        from .sql import sql_store_for

        sql = sql_store_for(inner, app, encode, decode)
        if sql is not None:
            return sql, None
    memcached = getattr(inner, "client", None)
    if type(inner).__name__ == "MemcachedSessionInterface" and is_pymemcache(memcached):
        return MemcachedStore(memcached, encode=encode, decode=decode), None
    if isinstance(cache, SimpleCache):
        return CacheLibStore(cache, shared=False), ("Sessions are in cachelib's SimpleCache, inside each process")
    kind = type(cache).__name__ if isinstance(cache, BaseCache) else type(inner).__name__
    return CacheLibStore(SimpleCache(threshold=10_000), shared=False), (
        f"flask-plurality cannot share its answer cache, throttles and revocations through {kind}: "
        "they are kept per process, revoke_user raises ConfigurationError, and a request in flight "
        "may write back a session a logout just deleted. Use SESSION_TYPE 'redis', 'sqlalchemy', "
        "'memcached' (pymemcache) or 'cachelib' (FileSystemCache, RedisCache, MemcachedCache)."
    )


def _cachelib_store(cache: BaseCache) -> Store | None:
    from cachelib.memcached import MemcachedCache
    from cachelib.redis import RedisCache

    if isinstance(cache, RedisCache) and isinstance(cache.key_prefix, str):
        serializer = cache.serializer
        return RedisStore(
            cache._write_client,
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
        return refuse_cluster(config.get("SESSION_REDIS"))
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
