"""The per-process stores: cachelib's ``SimpleCache``, and backends with no store here.

Neither is shared between workers (``shared = False``): ``init_app`` logs
:func:`per_process_warning` and ``revoke_user`` is refused. Read-modify-write steps run
under a lock of this process: exact within it, which is all a per-process store can
promise.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from cachelib import BaseCache, SimpleCache
from flask.sessions import SessionInterface

from ..flask_session_shim import shim
from .base import LockedKeys, PlainRarelyWritten, store_errors_as_unavailable, unavailable_error


class CacheLibStore(LockedKeys, PlainRarelyWritten):
    """The extension's keys and the sessions in a cachelib cache of this process
    (``SimpleCache``)."""

    shared = False

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache
        self._lock = threading.Lock()

    def _locked(self, key: str) -> threading.Lock:
        return self._lock  # one lock for every key: the cache is this process's alone

    def _put(self, key: str, value: Any, ttl: int) -> None:
        with store_errors_as_unavailable():
            done = self.cache.set(key, value, timeout=ttl)
        if done is False:
            raise unavailable_error(f"{type(self.cache).__name__}.set reported a failure")

    def _remove(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.cache.delete(key)

    # -- Flask-Session's entries --------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """The session, then the epoch: two reads of this process's memory."""
        data = self.cache.get(store_id)  # the session guard makes a failure here a 503
        return data, (self.get_rarely_written(epoch_key) if epoch_key is not None else None)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        with self._lock:
            with store_errors_as_unavailable():
                if only_if_present and not self.cache.has(store_id):
                    return
            self._put(store_id, dict(session), max(1, ttl))

    def delete_session(self, store_id: str) -> None:
        with store_errors_as_unavailable():
            done = self.cache.delete(store_id)
        if done is False and self.cache.has(store_id):
            raise unavailable_error(f"{type(self.cache).__name__}.delete reported a failure")

    def sweep(self) -> None:
        """Nothing to do: ``SimpleCache`` drops expired entries itself as it is used."""


class ForeignStore(CacheLibStore):
    """A Flask-Session backend this package has no store for (mongodb, dynamodb, a cachelib
    cache other than files, Redis and memcached, an app's own interface): the extension's
    keys in a ``SimpleCache`` of this process, the sessions where the backend keeps them,
    through its own methods. Writing a session only while it is still stored is a read
    and then a write there, not one atomic step."""

    def __init__(self, inner: SessionInterface) -> None:
        super().__init__(SimpleCache(threshold=10_000))
        cache = getattr(inner, "cache", None)
        #: What holds the sessions, for :func:`per_process_warning`.
        self.kind = type(cache).__name__ if isinstance(cache, BaseCache) else type(inner).__name__
        self._retrieve = shim.own_retrieve(inner)
        self._upsert = shim.own_upsert(inner)
        self._delete = shim.own_delete(inner)

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """The backend's own read of the session, then the epoch from this process."""
        with store_errors_as_unavailable():
            data = self._retrieve(store_id)
        return data, (self.get_rarely_written(epoch_key) if epoch_key is not None else None)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        with store_errors_as_unavailable():
            if only_if_present and self._retrieve(store_id) is None:
                return
            self._upsert(timedelta(seconds=max(1, ttl)), session, store_id)

    def delete_session(self, store_id: str) -> None:
        with store_errors_as_unavailable():
            self._delete(store_id)

    def sweep(self) -> None:
        """Nothing to do: the backend expires its sessions itself (or not at all), and the
        ``SimpleCache`` drops expired keys as it is used."""


def per_process_warning(store: CacheLibStore) -> str:
    """What does not work with a store of this process: logged at ``init_app`` and shown by
    ``flask plurality check``."""
    if not isinstance(store, ForeignStore):
        return (
            "Sessions are in cachelib's SimpleCache, inside each process: with more than one worker "
            "(gunicorn -w N) or machine, a login made in one worker is unknown to the others, and "
            "revocations and throttles are not shared (revoke_user raises ConfigurationError). Use "
            "FileSystemCache (one machine) or Redis."
        )
    return (
        f"flask-plurality cannot share its answer cache, throttles and revocations through {store.kind}: "
        "they are kept per process, revoke_user raises ConfigurationError, and a request in flight "
        "may write back a session a logout just deleted. Use SESSION_TYPE 'redis', 'sqlalchemy', "
        "'memcached' (pymemcache) or 'cachelib' (FileSystemCache, RedisCache, MemcachedCache)."
    )
