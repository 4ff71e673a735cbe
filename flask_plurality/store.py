"""The extension's own keys (answer cache, throttles, revocations) in the session store.

They live beside the sessions, in the same Redis or cachelib cache, so that every
worker and every machine that shares the sessions shares them too. Values are plain
JSON types. One :class:`Store` per backend family, each using that backend's own
atomic operations; :func:`get_store` finds the one behind the app's sessions.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from cachelib import BaseCache, SimpleCache
from cachelib.file import FileSystemCache
from flask import Flask, current_app
from flask.sessions import SessionInterface

from .config import config
from .exceptions import SessionStoreUnavailable
from .state import get_state

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("flask_plurality")

#: Longest a request should wait for a stalled Redis before answering 503, in seconds.
SLOW_STORE_WARNING: Final = 3.0


class Store(Protocol):
    """What the extension needs from a store; keys arrive already prefixed."""

    #: ``True`` when every worker and machine sees the same store.
    shared: bool

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, ttl: int) -> None: ...

    def delete(self, key: str) -> None: ...

    def add(self, key: str, value: Any, ttl: int) -> bool:
        """Set ``key`` only if it is absent (or expired), atomically across every process
        sharing the store; ``True`` if this call set it."""
        ...

    def incr(self, key: str, ttl: int) -> tuple[int, int]:
        """Add one to a counter whose window of ``ttl`` seconds starts at its first
        count; return (count, seconds left in the window)."""
        ...

    def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of a counter, (0, 0) when there is none."""
        ...

    def get_rarely_written(self, key: str) -> Any:
        """:meth:`get` for a key read on every protected request and written rarely
        (the revocation epoch): backends may answer it from a cheaper check."""
        ...


def log_store_failure(exc: Exception) -> None:
    """Log a store failure: its type and message, never a value."""
    log.error("The session store failed: %s: %s", type(exc).__name__, exc)


def unavailable_error(exc: Exception) -> SessionStoreUnavailable:
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


class RedisStore:
    """Redis or any server that speaks its protocol (Valkey, KeyDB, Dragonfly...)."""

    shared = True

    def __init__(self, client: Redis) -> None:
        self.client = client

    def get(self, key: str) -> Any:
        with store_errors_as_unavailable():
            raw = self.client.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def set(self, key: str, value: Any, ttl: int) -> None:
        with store_errors_as_unavailable():
            self.client.set(key, json.dumps(value), ex=max(1, ttl))

    def delete(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.client.delete(key)

    def add(self, key: str, value: Any, ttl: int) -> bool:
        with store_errors_as_unavailable():
            return bool(self.client.set(key, json.dumps(value), nx=True, ex=max(1, ttl)))

    def incr(self, key: str, ttl: int) -> tuple[int, int]:
        with store_errors_as_unavailable():
            count = int(self.client.incr(key))
            if count == 1:
                self.client.expire(key, ttl)
                return count, ttl
            left = int(self.client.ttl(key))
            if left < 0:  # lost its expiry (a crash between INCR and EXPIRE): restart the window
                self.client.expire(key, ttl)
                left = ttl
        return count, left

    def get_rarely_written(self, key: str) -> Any:
        return self.get(key)

    def peek(self, key: str) -> tuple[int, int]:
        with store_errors_as_unavailable():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(key)
            pipe.ttl(key)
            raw, left = pipe.execute()
        if raw is None:
            return 0, 0
        return int(raw), max(int(left), 1)


class CacheLibStore:
    """Any cachelib cache. Counters are read-modify-write here: good enough to throttle,
    not exact under concurrent failures in several processes."""

    def __init__(self, cache: BaseCache, *, shared: bool) -> None:
        self.cache = cache
        self.shared = shared
        # get_rarely_written on FileSystemCache: key -> its file, and (file's identity, value).
        self._epoch_files: dict[str, str] = {}
        self._epochs: dict[str, tuple[tuple[int, int, int], Any]] = {}

    def get_rarely_written(self, key: str) -> Any:
        """On FileSystemCache, one ``stat`` instead of opening and unpickling a file:
        cachelib writes through a temporary file and a rename, so any write changes the
        file's inode and mtime, and only then is the value read again."""
        filename = getattr(self.cache, "_get_filename", None)
        if not isinstance(self.cache, FileSystemCache) or filename is None:
            return self.get(key)
        path = self._epoch_files.get(key)
        if path is None:
            path = self._epoch_files[key] = filename(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise unavailable_error(exc) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._epochs.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
        value = self.get(key)
        self._epochs[key] = (stamp, value)
        return value

    def get(self, key: str) -> Any:
        with store_errors_as_unavailable():
            return self.cache.get(key)

    def set(self, key: str, value: Any, ttl: int) -> None:
        # FileSystemCache expires at int(now) + ttl: one second more, or an entry written
        # at x.99 with a ttl of 1 would live 0.01 s (readers check ages themselves).
        grain = 1 if isinstance(self.cache, FileSystemCache) else 0
        with store_errors_as_unavailable():
            self.cache.set(key, value, timeout=max(1, ttl) + grain)

    def delete(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.cache.delete(key)

    def add(self, key: str, value: Any, ttl: int) -> bool:
        if isinstance(self.cache, FileSystemCache) and all(
            hasattr(self.cache, name) for name in ("_get_filename", "_path", "_fs_transaction_suffix", "serializer")
        ):  # cachelib's internals as of 0.13-0.17; a later cachelib falls back to its own add
            with store_errors_as_unavailable():
                return _add_file(self.cache, key, value, max(1, ttl))
        # SimpleCache: under its lock; cachelib's Redis and memcached: their own atomic add.
        with store_errors_as_unavailable():
            return bool(self.cache.add(key, value, timeout=max(1, ttl)))

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


def _add_file(cache: FileSystemCache, key: str, value: Any, ttl: int) -> bool:
    """``FileSystemCache.add`` checks for the file, then writes it: two processes can both
    "add". Here the complete entry is written to a temporary file and hard-linked to the
    key's file name, which fails if that name exists: one winner, and readers never see
    half a file. An expired entry is replaced; two processes replacing the same expired
    entry at once may both win (an extra upstream call, nothing worse)."""
    filename = cache._get_filename(key)
    fd, tmp = tempfile.mkstemp(suffix=cache._fs_transaction_suffix, dir=cache._path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("I", int(time.time()) + ttl))
            cache.serializer.dump(value, f)
        if cache._mode is not None:
            os.chmod(tmp, cache._mode)
        try:
            os.link(tmp, filename)
        except FileExistsError:
            if cache.get(key) is not None:  # held, not expired
                return False
            os.replace(tmp, filename)
            return True
        except OSError:  # no hard links on this filesystem: cachelib's own, less strict add
            return bool(cache.add(key, value, timeout=ttl))
        cache._update_count(delta=1)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


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
        state.store = store_for((app or current_app).session_interface)
    return state.store


def key(kind: str, name: str) -> str:
    """The store key of one of the extension's entries (``PLURALITY_KEY_PREFIX`` first)."""
    return f"{config.key_prefix}{kind}:{name}"


def store_for(interface: SessionInterface) -> Store:
    """Find the store behind Flask-Session's interface; fall back to one per process."""
    inner = unwrap(interface)
    client = redis_client(inner)
    if client is not None:
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
    warnings.append(
        f"flask-plurality cannot share its answer cache, throttles and revocations through "
        f"{type(inner).__name__}; they stay per process. Use SESSION_TYPE='redis' or 'cachelib'."
    )
    return type(inner).__name__, warnings
