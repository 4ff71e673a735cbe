"""The extension's own keys (answer cache, throttles, revocations) in the session store.

They live beside the sessions, in the same Redis or cachelib cache, so that every
worker and every machine that shares the sessions shares them too. Values are plain
JSON types. Also here: the guard that turns an unreachable store into a clean 503.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from cachelib import BaseCache, SimpleCache
from flask import Flask, Request, Response, has_request_context, request
from flask.sessions import SessionInterface, SessionMixin
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from .exceptions import SessionStoreUnavailable
from .sessiondata import session_lifetime_cap

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("flask_plurality")


class Store(Protocol):
    """What the extension needs from a store; keys arrive already prefixed."""

    #: ``True`` when every worker and machine sees the same store.
    shared: bool

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, ttl: int) -> None: ...

    def delete(self, key: str) -> None: ...

    def incr(self, key: str, ttl: int) -> tuple[int, int]:
        """Add one to a counter whose window of ``ttl`` seconds starts at its first
        count; return (count, seconds left in the window)."""
        ...

    def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of a counter, (0, 0) when there is none."""
        ...


def _guard(exc: Exception) -> SessionStoreUnavailable:
    log.error("The session store failed: %s: %s", type(exc).__name__, exc)
    return SessionStoreUnavailable("The session store is unavailable.")


class RedisStore:
    """Redis or any server that speaks its protocol (Valkey, KeyDB, Dragonfly...)."""

    shared = True

    def __init__(self, client: Redis) -> None:
        self.client = client

    def get(self, key: str) -> Any:
        try:
            raw = self.client.get(key)
        except Exception as exc:
            raise _guard(exc) from None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def set(self, key: str, value: Any, ttl: int) -> None:
        try:
            self.client.set(key, json.dumps(value), ex=max(1, ttl))
        except Exception as exc:
            raise _guard(exc) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete(key)
        except Exception as exc:
            raise _guard(exc) from None

    def incr(self, key: str, ttl: int) -> tuple[int, int]:
        try:
            count = int(self.client.incr(key))
            if count == 1:
                self.client.expire(key, ttl)
                return count, ttl
            left = int(self.client.ttl(key))
        except Exception as exc:
            raise _guard(exc) from None
        if left < 0:  # lost its expiry (a crash between INCR and EXPIRE): restart the window
            self.client.expire(key, ttl)
            left = ttl
        return count, left

    def peek(self, key: str) -> tuple[int, int]:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(key)
            pipe.ttl(key)
            raw, left = pipe.execute()
        except Exception as exc:
            raise _guard(exc) from None
        if raw is None:
            return 0, 0
        return int(raw), max(int(left), 1)


class CacheLibStore:
    """Any cachelib cache. Counters are read-modify-write here: good enough to throttle,
    not exact under concurrent failures in several processes."""

    def __init__(self, cache: BaseCache, *, shared: bool) -> None:
        self.cache = cache
        self.shared = shared

    def get(self, key: str) -> Any:
        try:
            return self.cache.get(key)
        except Exception as exc:
            raise _guard(exc) from None

    def set(self, key: str, value: Any, ttl: int) -> None:
        try:
            self.cache.set(key, value, timeout=max(1, ttl))
        except Exception as exc:
            raise _guard(exc) from None

    def delete(self, key: str) -> None:
        try:
            self.cache.delete(key)
        except Exception as exc:
            raise _guard(exc) from None

    def incr(self, key: str, ttl: int) -> tuple[int, int]:
        now = time.time()
        count, until = self._counter(key, now)
        if not count:
            until = now + ttl
        self.set(key, [count + 1, until], math.ceil(until - now))
        return count + 1, max(1, math.ceil(until - now))

    def peek(self, key: str) -> tuple[int, int]:
        now = time.time()
        count, until = self._counter(key, now)
        return count, max(0, math.ceil(until - now))

    def _counter(self, key: str, now: float) -> tuple[int, float]:
        value = self.get(key)
        if isinstance(value, list) and len(value) == 2 and value[1] > now:
            return int(value[0]), float(value[1])
        return 0, now


def store_for(interface: SessionInterface) -> Store:
    """Find the store behind Flask-Session's interface; fall back to one per process."""
    inner = interface.inner if isinstance(interface, GuardedSessionInterface) else interface
    client = getattr(inner, "client", None)
    if client is not None and type(client).__module__.startswith("redis"):
        return RedisStore(client)
    cache = getattr(inner, "cache", None)
    if isinstance(cache, BaseCache):
        return CacheLibStore(cache, shared=not isinstance(cache, SimpleCache))
    log.warning(
        "flask-plurality keeps its answer cache, throttles and revocations per process: "
        "it cannot share %s. Use SESSION_TYPE='redis' or 'cachelib' to share them.",
        type(inner).__name__,
    )
    return CacheLibStore(SimpleCache(threshold=10_000), shared=False)


class UnavailableSession(ServerSideSession):  # type: ignore[misc]
    """Stands in for a session the store could not load: empty, and never saved."""

    store_error = True


class GuardedSessionInterface(SessionInterface):
    """Wraps Flask-Session's interface so a store outage is a 503, not a 500 with a trace.

    Loading fails -> an empty :class:`UnavailableSession` that is never written back (so
    nothing already stored is overwritten); protected routes and login answer 503
    ``session_store_unavailable``. Saving fails -> the response becomes that 503 too,
    instead of a 200 whose login was never stored.
    """

    def __init__(self, inner: ServerSideSessionInterface) -> None:
        self.inner = inner
        # Flask-Session calls these on itself while saving; shadowing them on the
        # instance keeps every backend's own save logic while (1) no cookie or stored
        # entry outlives the login's token and (2) the cookie is Secure on HTTPS.
        expiration, upsert, secure = inner.get_expiration_time, inner._upsert_session, inner.get_cookie_secure

        def get_expiration_time(app: Flask, session: SessionMixin) -> datetime | None:
            expires = expiration(app, session)
            cap = session_lifetime_cap(timedelta.max)
            if expires is None or cap == timedelta.max:
                return cast(datetime | None, expires)
            return min(cast(datetime, expires), datetime.now(UTC) + cap)

        def upsert_session(lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
            upsert(session_lifetime_cap(lifetime), session, store_id)

        def get_cookie_secure(app: Flask) -> bool:
            return bool(secure(app)) or (has_request_context() and request.is_secure)

        inner.get_expiration_time = get_expiration_time
        inner._upsert_session = upsert_session
        inner.get_cookie_secure = get_cookie_secure

    def __getattr__(self, name: str) -> Any:  # regenerate(), key_prefix, client...
        return getattr(self.inner, name)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        try:
            return self.inner.open_session(app, request)  # type: ignore[no-any-return]
        except Exception as exc:
            _guard(exc)
            return UnavailableSession(sid=None)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if isinstance(session, UnavailableSession):
            return
        try:
            self.inner.save_session(app, session, response)
        except Exception as exc:
            _guard(exc)
            from .responses import store_unavailable_into

            store_unavailable_into(response)
