"""The extension's own keys (answer cache, throttles, revocations) in the session store.

They live beside the sessions, in the same Redis or cachelib cache, so that every
worker and every machine that shares the sessions shares them too. Values are plain
JSON types. Also here: the guard that turns an unreachable store into a clean 503.
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
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from cachelib import BaseCache, SimpleCache
from cachelib.file import FileSystemCache
from flask import Flask, Request, Response, has_request_context, request
from flask.sessions import SessionInterface, SessionMixin
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from .exceptions import SessionStoreUnavailable
from .security import redacted_session_class
from .sessiondata import session_lifetime_cap

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("flask_plurality")

#: Key (after ``PLURALITY_KEY_PREFIX``) that ``revoke_user`` changes on every revocation.
#: On Redis it is read together with the session (one MGET), so the revocation check of
#: a protected request costs no round trip while nobody was revoked since the login.
REVOCATION_EPOCH: Final = "revocations:epoch"
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

    def read_epoch(self, key: str) -> Any:
        """:meth:`get` for a key read on every protected request and written rarely."""
        ...


def store_failed(exc: Exception) -> SessionStoreUnavailable:
    """Log a store failure (type and message; never a value) and give the error to raise."""
    log.error("The session store failed: %s: %s", type(exc).__name__, exc)
    return SessionStoreUnavailable("The session store is unavailable.")


@contextlib.contextmanager
def store_errors_as_unavailable() -> Iterator[None]:
    """Any failure of the store client becomes :class:`SessionStoreUnavailable` (a 503)."""
    try:
        yield
    except SessionStoreUnavailable:
        raise
    except Exception as exc:
        raise store_failed(exc) from None


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

    def read_epoch(self, key: str) -> Any:
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
        # read_epoch on FileSystemCache: key -> its file, and (file's identity, value).
        self._epoch_files: dict[str, str] = {}
        self._epochs: dict[str, tuple[tuple[int, int, int], Any]] = {}

    def read_epoch(self, key: str) -> Any:
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
            raise store_failed(exc) from None
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


#: Seconds between two sweeps of expired session files (FileSystemCache), per process.
SWEEP_INTERVAL: Final = 3600.0


def sweep_expired(cache: FileSystemCache) -> None:
    """Delete the expired entries of a FileSystemCache (sessions, answers, counters)."""
    try:
        cache._remove_expired(time.time())
    except Exception as exc:  # a sweep must never take a worker down
        log.warning("Sweeping expired session files failed: %s", type(exc).__name__)


Upsert = Callable[[timedelta, ServerSideSession, str], None]


def _still_stored(inner: SessionInterface) -> Callable[[timedelta, ServerSideSession, str, Upsert], None] | None:
    """An upsert that writes only over an existing entry, for backends that can do it
    cheaply: Redis ``SET ... XX`` (atomic, no extra round trip), FileSystemCache one
    ``stat`` first. ``None`` for other backends (they keep last-writer-wins)."""
    client = _redis_client(inner)
    if client is not None:

        def redis_xx(lifetime: timedelta, session: ServerSideSession, store_id: str, upsert: Upsert) -> None:
            data = inner.serializer.encode(session)  # type: ignore[attr-defined]
            client.set(store_id, data, ex=max(1, int(lifetime.total_seconds())), xx=True)

        return redis_xx
    cache = getattr(inner, "cache", None)
    filename = getattr(cache, "_get_filename", None)
    if isinstance(cache, FileSystemCache) and filename is not None:

        def file_exists(lifetime: timedelta, session: ServerSideSession, store_id: str, upsert: Upsert) -> None:
            if os.path.exists(filename(store_id)):
                upsert(lifetime, session, store_id)

        return file_exists
    return None


def _redis_client(inner: SessionInterface) -> Redis | None:
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


def store_for(interface: SessionInterface) -> Store:
    """Find the store behind Flask-Session's interface; fall back to one per process."""
    inner = interface.inner if isinstance(interface, GuardedSessionInterface) else interface
    client = _redis_client(inner)
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
    interface = app.session_interface
    inner = interface.inner if isinstance(interface, GuardedSessionInterface) else interface
    warnings: list[str] = []
    client = _redis_client(inner)
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
                "Pass socket_timeout=0.5, socket_connect_timeout=0.5 (see the README's Deployment section)."
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


class UnavailableSession(ServerSideSession):  # type: ignore[misc]
    """Stands in for a session the store could not load: empty, and never saved."""

    store_error = True


#: While Flask-Session loads a session from Redis: (epoch key, box for what was read).
_epoch_read: ContextVar[tuple[str, list[Any]] | None] = ContextVar("plurality_epoch_read", default=None)


def _json_str(raw: Any) -> str | None:
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, str) else None


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

        still_stored = _still_stored(inner)

        def upsert_session(lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
            lifetime = session_lifetime_cap(lifetime)
            if getattr(session, "loaded_sid", None) == session.sid and still_stored is not None:
                # A session read from the store is written back only if it is still there:
                # a logout, revoke or login elsewhere that deleted it while this request
                # ran must not be undone by this request's (refresh-each-request) save.
                still_stored(lifetime, session, store_id, upsert)
            else:
                upsert(lifetime, session, store_id)

        def get_cookie_secure(app: Flask) -> bool:
            return bool(secure(app)) or (has_request_context() and request.is_secure)

        inner.get_expiration_time = get_expiration_time
        inner._upsert_session = upsert_session
        inner.get_cookie_secure = get_cookie_secure
        client = _redis_client(inner)
        if client is not None:
            # Read the revocation epoch in the same round trip as the session (MGET).
            def retrieve_session_data(store_id: str) -> dict[str, Any] | None:
                pending = _epoch_read.get()
                if pending is None:
                    raw = client.get(store_id)
                else:
                    raw, epoch = client.mget([store_id, pending[0]])
                    pending[1].append(epoch)
                return cast(dict[str, Any], inner.serializer.decode(raw)) if raw else None

            inner._retrieve_session_data = retrieve_session_data
        # The default FileSystemCache has no item limit (a limit would evict live
        # sessions), so nothing would ever delete an abandoned login's file: sweep expired
        # files about once an hour per process, in a thread, off the request's path.
        cache = getattr(inner, "cache", None)
        self._sweep: Callable[[], None] | None = None
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        if isinstance(cache, FileSystemCache) and hasattr(cache, "_remove_expired"):
            self._sweep = lambda: sweep_expired(cache)
        # repr(session) must not show the token (debug logs, error reporters).
        inner.session_class = redacted_session_class(inner.session_class)

    def __getattr__(self, name: str) -> Any:  # regenerate(), key_prefix, client...
        return getattr(self.inner, name)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        box: list[Any] = []
        reading = _epoch_read.set((str(app.config.get("PLURALITY_KEY_PREFIX", "plurality:")) + REVOCATION_EPOCH, box))
        try:
            session = self.inner.open_session(app, request)
        except Exception as exc:
            store_failed(exc)
            return UnavailableSession(sid=None)
        finally:
            _epoch_read.reset(reading)
        if box:
            #: ``revoke_user``'s epoch as it was when this session was read (Redis only).
            session.revocation_epoch = _json_str(box[0])
        if session.sid == request.cookies.get(app.config["SESSION_COOKIE_NAME"]):
            #: Read from the store under this id (else: a new session, a new id).
            session.loaded_sid = session.sid
        return session  # type: ignore[no-any-return]

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if isinstance(session, UnavailableSession):
            return
        if self._sweep is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            threading.Thread(target=self._sweep, name="plurality-session-sweep", daemon=True).start()
        try:
            self.inner.save_session(app, session, response)
        except Exception as exc:
            store_failed(exc)
            from .responses import store_unavailable_into

            store_unavailable_into(response)
