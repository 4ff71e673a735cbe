"""The extension's own keys (answer cache, throttles, revocations) in the session store.

They live beside the sessions, in the same Redis or cachelib cache, so that every
worker and every machine that shares the sessions shares them too. Values are plain
JSON types. One :class:`Store` per backend family, each using that backend's own
atomic operations; :func:`get_store` finds the one behind the app's sessions.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from cachelib import BaseCache, SimpleCache
from flask import Flask, current_app
from flask.sessions import SessionInterface

from .config import config
from .exceptions import ConfigurationError
from .flask_session_shim import shim
from .state import get_state
from .stores import CacheLibStore, FileStore, MemcachedStore, RedisStore, build_store, unusable_client
from .stores.base import log_store_failure, store_errors_as_unavailable, unavailable_error

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("flask_plurality")

__all__ = [
    "CacheLibStore",
    "FileStore",
    "MemcachedStore",
    "RedisStore",
    "Store",
    "check_session_client",
    "describe_store",
    "get_store",
    "key",
    "log_store_failure",
    "redis_client",
    "store_errors_as_unavailable",
    "store_for",
    "unavailable_error",
    "unwrap",
]

#: Longest a request should wait for a stalled Redis before answering 503, in seconds.
SLOW_STORE_WARNING: Final = 3.0


class Store(Protocol):
    """What the extension needs from a store; keys arrive already prefixed.

    Every write and delete either happens or raises :class:`SessionStoreUnavailable`
    (a backend call that *reports* failure is a failure too), and every key gets a TTL
    of at most :data:`~.stores.base.MAX_TTL`. The implementations, one per backend
    family, are in :mod:`flask_plurality.stores`.
    """

    #: ``True`` when every worker and machine sees the same store.
    shared: bool

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, ttl: float) -> None: ...

    def delete(self, key: str) -> None: ...

    def add(self, key: str, value: Any, ttl: float) -> bool:
        """Set ``key`` only if it is absent (or expired), atomically across every process
        sharing the store; ``True`` if this call set it."""
        ...

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        """Add one to a counter, atomically; its window of ``ttl`` seconds starts at its
        first count. Return (count after this call, seconds left in the window)."""
        ...

    def decr(self, key: str) -> None:
        """Take one back from a counter (an attempt counted in advance that did not fail)."""
        ...

    def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of a counter, (0, 0) when there is none."""
        ...

    def get_rarely_written(self, key: str) -> Any:
        """:meth:`get` for a key read on every protected request and written rarely
        (the revocation epoch): backends may answer it from a cheaper check."""
        ...

    def still_current(self, key: str, value: Any) -> bool:
        """Does ``key`` (written by :meth:`set_rarely_written`) still hold ``value``
        (``None``: nothing)? ``False`` when unsure; never ``True`` after a
        :meth:`set_rarely_written` of another value has returned, in any process."""
        ...

    def set_rarely_written(self, key: str, value: Any, ttl: float) -> None:
        """:meth:`set` for such a key."""
        ...


def redis_client(inner: SessionInterface) -> Redis | None:
    """The ``redis.Redis`` (or subclass: any server speaking its protocol) behind ``inner``."""
    client = getattr(inner, "client", None)
    if client is None:
        return None
    try:
        from redis import Redis
    except ImportError:  # pragma: no cover - Flask-Session's redis backend needs it anyway
        return None
    return client if isinstance(client, Redis) else None


def _connection_setting(client: Redis, name: str) -> Any:
    """A connection setting of ``client``: as given, else the connection class's default."""
    pool = client.connection_pool
    if name in pool.connection_kwargs:
        return pool.connection_kwargs[name]
    for cls in pool.connection_class.__mro__:
        init = vars(cls).get("__init__")
        if init is None:
            continue
        try:
            parameter = inspect.signature(init).parameters.get(name)
        except (TypeError, ValueError):  # pragma: no cover - a C-level __init__
            continue
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def unwrap(interface: SessionInterface) -> SessionInterface:
    """Flask-Session's own interface, inside the guard :mod:`.sessions` puts around it."""
    return cast(SessionInterface, getattr(interface, "inner", interface))


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


def store_for(interface: SessionInterface, app: Flask | None = None) -> Store:
    """The store behind Flask-Session's interface (one per backend family, see
    :mod:`.stores`); one per process, with a WARNING, for backends it cannot share."""
    inner = unwrap(interface)
    store, warning = build_store(
        inner, app or current_app, lambda s: shim.encode(inner, s), lambda raw: shim.decode(inner, raw)
    )
    if warning is not None:
        log.warning("%s", warning)
    return store


def check_session_client(app: Flask) -> None:
    """Refuse, at ``init_app``, a session client Flask-Session would silently replace
    with a default one on localhost (``redis.cluster.RedisCluster``, say)."""
    problem = unusable_client(app.config)
    if problem is not None:
        raise ConfigurationError(problem)


def describe_store(app: Flask) -> tuple[str, list[str]]:
    """(what holds the sessions, warnings about it) for ``flask plurality check``.

    Looks at the configuration only; it never connects to the store.
    """
    inner = unwrap(app.session_interface)
    warnings: list[str] = []
    client = redis_client(inner)
    if client is not None:
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        name = f"redis ({type(client).__name__} at {where}, db {kwargs.get('db', 0)})"
        timeout = _connection_setting(client, "socket_timeout")
        connect = _connection_setting(client, "socket_connect_timeout")
        retry = client.get_retry() or kwargs.get("retry")
        tries = 1 + int(getattr(retry, "_retries", 0)) if retry is not None else 1
        worst = tries * max(float(timeout), float(connect or 0)) if timeout is not None else math.inf
        if timeout is None:
            warnings.append(
                "The Redis client has no socket_timeout: a stalled Redis holds every request forever. "
                "Pass socket_timeout=0.5, socket_connect_timeout=0.5 (see Deployment in the docs)."
            )
        elif worst > SLOW_STORE_WARNING:
            warnings.append(
                f"A stalled Redis holds a request up to {worst:g} s (socket timeout x {tries} "
                f"attempt{'s' if tries > 1 else ''}) "
                "before it answers 503; prefer socket_timeout=0.5, socket_connect_timeout=0.5 and at most "
                "one retry."
            )
        if client.get_encoder().decode_responses:
            warnings.append(
                "The Redis client has decode_responses=True: Flask-Session stores msgpack bytes, "
                "which cannot be read back as text. Create SESSION_REDIS without it."
            )
        return name, warnings
    cache = getattr(inner, "cache", None)
    if isinstance(cache, SimpleCache):
        warnings.append(
            "Sessions are in cachelib's SimpleCache, inside each process: with more than one worker "
            "(gunicorn -w N) or machine, a login made in one worker is unknown to the others and "
            "revocations and throttles are not shared. Use FileSystemCache (one machine) or Redis."
        )
        return "cachelib SimpleCache (per process)", warnings
    if isinstance(cache, BaseCache):
        where = getattr(cache, "_path", None)
        kind = type(cache).__name__
        return (f"cachelib {kind} ({where})" if where else f"cachelib {kind}"), warnings
    store = get_state(app).store
    if store is not None and store.shared:  # sqlalchemy, memcached: shared through its own store
        return f"{type(inner).__name__} ({type(store).__name__})", warnings
    warnings.append(
        f"flask-plurality cannot share its answer cache, throttles and revocations through "
        f"{type(inner).__name__}; they stay per process and revoke_user is refused. Use SESSION_TYPE "
        "'redis', 'sqlalchemy', 'memcached' (pymemcache) or 'cachelib'."
    )
    return type(inner).__name__, warnings
