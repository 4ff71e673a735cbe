"""What the store implementations share: TTL bounds, failure handling, JSON values, the
plain rarely-written trio, cachelib keys changed under a lock (files, per process) and
the part common to the network clients (Redis, memcached)."""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Final

from cachelib import BaseCache
from flask import current_app, has_app_context

from .. import signals
from ..exceptions import SessionStoreUnavailable

log = logging.getLogger("flask_plurality")

#: No key the extension writes lives longer than this (revocations, the longest-lived,
#: must outlive every session they concern; tokens live one day).
MAX_TTL: Final = 2 * 86400


def bounded(ttl: float) -> int:
    """A TTL in whole seconds, at least 1 and at most :data:`MAX_TTL`."""
    return max(1, min(int(ttl), MAX_TTL))


class PlainRarelyWritten(abc.ABC):
    """The revocation epoch's reads and writes where the backend has nothing cheaper than
    a plain ``get`` and ``set`` (every store but files). On Redis, memcached and SQL the
    epoch usually comes with the session anyway (``retrieve_session``)."""

    @abc.abstractmethod
    def get(self, key: str) -> Any: ...

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float) -> None: ...

    def get_rarely_written(self, key: str) -> Any:
        return self.get(key)

    def still_current(self, key: str, value: Any) -> bool:
        return False  # nothing cheaper than reading the value: the caller reads it

    def set_rarely_written(self, key: str, value: Any, ttl: float) -> None:
        self.set(key, value, ttl)

    def set_lasting(self, key: str, value: Any, ttl: float) -> None:
        self.set(key, value, ttl)  # no replica to wait for: a write that returned is kept


class LockedKeys(abc.ABC):
    """The extension's keys in a cachelib cache, each read-modify-write (``add``, counters
    as a stored ``[count, window end]``) under a lock of the key: on files a ``flock``
    every process shares, in a per-process cache a lock of the process."""

    cache: BaseCache

    @abc.abstractmethod
    def _locked(self, key: str) -> AbstractContextManager[Any]:
        """Exclusive access to ``key`` for one read-modify-write."""

    @abc.abstractmethod
    def _put(self, key: str, value: Any, ttl: int) -> None:
        """Write ``key`` (already under :meth:`_locked`), raising when the write fails."""

    @abc.abstractmethod
    def _remove(self, key: str) -> None:
        """Delete ``key`` (already under :meth:`_locked`)."""

    def get(self, key: str) -> Any:
        with store_errors_as_unavailable():
            return self.cache.get(key)

    def set(self, key: str, value: Any, ttl: float) -> None:
        self._put(key, value, bounded(ttl))

    def set_lasting(self, key: str, value: Any, ttl: float) -> None:
        self._put(key, value, bounded(ttl))  # files and per-process caches have no replicas

    def delete(self, key: str) -> None:
        with self._locked(key):
            self._remove(key)

    def add(self, key: str, value: Any, ttl: float) -> bool:
        with self._locked(key):
            if self.get(key) is not None:  # held, not expired
                return False
            self._put(key, value, bounded(ttl))
            return True

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        with self._locked(key):
            now = time.time()
            count, until = self._counter(key, now)
            if not count:
                until = now + bounded(ttl)
            self._put(key, [count + 1, until], bounded(until - now + 1))
        return count + 1, _seconds_left(until, now)

    def decr(self, key: str) -> None:
        with self._locked(key):
            now = time.time()
            count, until = self._counter(key, now)
            if count > 1:
                self._put(key, [count - 1, until], bounded(until - now + 1))
            elif count == 1:
                self._remove(key)

    def peek(self, key: str) -> tuple[int, int]:
        now = time.time()
        count, until = self._counter(key, now)
        return (count, _seconds_left(until, now)) if count else (0, 0)

    def _counter(self, key: str, now: float) -> tuple[int, float]:
        """(count, window end) of a live counter; (0, now) for none, an expired or junk one."""
        value = self.get(key)
        if (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], int)
            and isinstance(value[1], int | float)
            and value[1] > now
        ):
            return value[0], float(value[1])
        return 0, now


def _seconds_left(until: float, now: float) -> int:
    return max(1, int(until - now + 0.999))


#: What the store is being used for, for ``store_failed``'s ``where``: the session
#: interface sets ``session_load`` / ``session_save`` while it loads or saves.
store_use: ContextVar[str] = ContextVar("plurality_store_use", default="extension")


#: Whether a session delete must survive a failover (:meth:`.protocol.Store.delete_session`
#: on Redis with replicas: ``WAIT``). ``False`` only while a login replaces the id of a
#: session that held no login: a failover bringing that entry back brings back nobody,
#: so a login never waits for a replica (nor fails, after a failover, until one is back).
lasting_deletes: ContextVar[bool] = ContextVar("plurality_lasting_deletes", default=True)


def log_store_failure(exc: BaseException | str) -> None:
    """Log a store failure: its type and message (or what failed), never a value; and
    send ``store_failed`` (``where``: :data:`store_use`)."""
    if isinstance(exc, str):
        log.error("The session store failed: %s", exc)
    else:
        log.error("The session store failed: %s: %s", type(exc).__name__, exc)
    if has_app_context():
        signals.store_failed.send(current_app._get_current_object(), where=store_use.get())  # type: ignore[attr-defined]


def unavailable_error(exc: BaseException | str) -> SessionStoreUnavailable:
    """Log a store failure and build the error to raise for it."""
    log_store_failure(exc)
    return SessionStoreUnavailable("The session store is unavailable.")


@contextlib.contextmanager
def store_errors_as_unavailable() -> Iterator[None]:
    """Any failure of the store client becomes :class:`SessionStoreUnavailable` (a 503)."""
    try:
        yield
    except SessionStoreUnavailable:
        raise
    except Exception as exc:
        raise unavailable_error(exc) from None


class ClientStore:
    """A store over a network client (Redis, memcached) whose keys may carry the
    client's own prefix, and that writes Flask-Session's entries with Flask-Session's
    serializer (``encode``/``decode``; ``None`` for a store of the extension's keys only)."""

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = "",
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
    ) -> None:
        self.client = client
        #: Prepended to every key (cachelib's ``RedisCache``/``MemcachedCache`` ``key_prefix``).
        self.key_prefix = key_prefix
        self._encode = encode
        self._decode = decode

    def get(self, key: str) -> Any:
        with store_errors_as_unavailable():
            raw = self.client.get(self.key_prefix + key)
        return loads(raw)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(raw: Any) -> Any:
    """A stored JSON value, ``None`` for nothing or junk."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None
