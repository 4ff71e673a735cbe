"""Flask-Session, set up and guarded: the session interface every request goes through.

:func:`setup_sessions` uses the app's own Flask-Session, or sets up cachelib on disk,
and wraps it in :class:`GuardedSessionInterface` so a store outage is a 503, a logout
is never undone by a request still in flight, and no session outlives its token. Every
Flask-Session internal the package touches goes through :class:`_FlaskSessionShim`
(``shim``), so a Flask-Session upgrade is a change to one class here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from cachelib.file import FileSystemCache
from flask import Flask, Request, Response, has_request_context, request, session
from flask.sessions import SessionInterface, SessionMixin
from flask_session import Session
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from .revocation import REVOCATION_EPOCH
from .security import redacted_session_class
from .sessiondata import session_lifetime_cap
from .store import log, log_store_failure, redis_client

#: Seconds between two sweeps of expired session files (FileSystemCache), per process.
SWEEP_INTERVAL: Final = 3600.0


class _FlaskSessionShim:
    """Every Flask-Session internal this package reads or replaces, in one place.

    Flask-Session 0.8 has ``serializer.encode``/``decode``; its development branch
    renames them ``dumps``/``loads``: both are accepted. ``INTERNALS`` lists what must
    exist; a test fails by name when an upgrade removes one.
    """

    #: Attributes of a ``ServerSideSessionInterface`` that are not its public API.
    INTERNALS: Final = ("_upsert_session", "_retrieve_session_data", "serializer")

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
    def encode(inner: SessionInterface, session: ServerSideSession) -> bytes:
        serializer: Any = inner.serializer  # type: ignore[attr-defined]
        encode = getattr(serializer, "encode", None) or serializer.dumps
        return cast(bytes, encode(session))

    @staticmethod
    def decode(inner: SessionInterface, raw: bytes | str) -> Any:
        serializer: Any = inner.serializer  # type: ignore[attr-defined]
        decode = getattr(serializer, "decode", None) or serializer.loads
        return decode(raw)

    @staticmethod
    def upsert_of(inner: SessionInterface) -> Upsert:
        return cast(Upsert, inner._upsert_session)  # type: ignore[attr-defined]

    @staticmethod
    def set_upsert(inner: SessionInterface, upsert: Upsert) -> None:
        inner._upsert_session = upsert  # type: ignore[attr-defined]

    @staticmethod
    def set_retrieve(inner: SessionInterface, retrieve: Callable[[str], dict[str, Any] | None]) -> None:
        inner._retrieve_session_data = retrieve  # type: ignore[attr-defined]


shim = _FlaskSessionShim()


Upsert = Callable[[timedelta, ServerSideSession, str], None]


def upsert_if_present(inner: SessionInterface) -> Callable[[timedelta, ServerSideSession, str, Upsert], None] | None:
    """An upsert that writes only over an existing entry, for backends that can do it
    cheaply: Redis ``SET ... XX`` (atomic, no extra round trip), FileSystemCache one
    ``stat`` first. ``None`` for other backends (they keep last-writer-wins)."""
    client = redis_client(inner)
    if client is not None:

        def redis_xx(lifetime: timedelta, session: ServerSideSession, store_id: str, upsert: Upsert) -> None:
            data = shim.encode(inner, session)
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


class UnavailableSession(ServerSideSession):  # type: ignore[misc]
    """Stands in for a session the store could not load: empty, and never saved."""

    store_error = True


def detach_session() -> None:
    """This request is judged by its bearer token: its session is emptied and never saved.

    A bearer request creates no session, and a cookie it also carries is neither read
    (the token decides) nor refreshed (no ``Set-Cookie``); the stored entry is untouched."""
    sess = session._get_current_object()  # type: ignore[attr-defined]
    sess.detached = True
    dict.clear(sess)  # not session.clear(): that would mark it modified (and delete the entry)


def is_detached(sess: SessionMixin) -> bool:
    return getattr(sess, "detached", False) is True


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
        expiration, upsert, secure = inner.get_expiration_time, shim.upsert_of(inner), inner.get_cookie_secure

        def get_expiration_time(app: Flask, session: SessionMixin) -> datetime | None:
            expires = expiration(app, session)
            cap = session_lifetime_cap(timedelta.max)
            if expires is None or cap == timedelta.max:
                return cast(datetime | None, expires)
            return min(cast(datetime, expires), datetime.now(UTC) + cap)

        if_present = upsert_if_present(inner)

        def upsert_session(lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
            lifetime = session_lifetime_cap(lifetime)
            if getattr(session, "loaded_sid", None) == session.sid and if_present is not None:
                # A session read from the store is written back only if it is still there:
                # a logout, revoke or login elsewhere that deleted it while this request
                # ran must not be undone by this request's (refresh-each-request) save.
                if_present(lifetime, session, store_id, upsert)
            else:
                upsert(lifetime, session, store_id)

        def get_cookie_secure(app: Flask) -> bool:
            return bool(secure(app)) or (has_request_context() and request.is_secure)

        inner.get_expiration_time = get_expiration_time
        shim.set_upsert(inner, upsert_session)
        inner.get_cookie_secure = get_cookie_secure
        client = redis_client(inner)
        if client is not None:
            # Read the revocation epoch in the same round trip as the session (MGET).
            def retrieve_session_data(store_id: str) -> dict[str, Any] | None:
                pending = _epoch_read.get()
                if pending is None:
                    raw = client.get(store_id)
                else:
                    raw, epoch = client.mget([store_id, pending[0]])
                    pending[1].append(epoch)
                return cast(dict[str, Any], shim.decode(inner, raw)) if raw else None

            shim.set_retrieve(inner, retrieve_session_data)
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
            log_store_failure(exc)
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
        if isinstance(session, UnavailableSession) or getattr(session, "detached", False):
            return
        if self._sweep is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            threading.Thread(target=self._sweep, name="plurality-session-sweep", daemon=True).start()
        try:
            self.inner.save_session(app, session, response)
        except Exception as exc:
            log_store_failure(exc)
            from .responses import store_unavailable_into

            store_unavailable_into(response)


def sweep_expired(cache: FileSystemCache) -> None:
    """Delete the expired entries of a FileSystemCache (sessions, answers, counters)."""
    try:
        cache._remove_expired(time.time())
    except Exception as exc:  # a sweep must never take a worker down
        log.warning("Sweeping expired session files failed: %s", type(exc).__name__)


def setup_sessions(app: Flask) -> None:
    """Use the app's Flask-Session, or set up cachelib on disk; guard it either way."""
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    interface = app.session_interface
    if isinstance(interface, GuardedSessionInterface):
        return
    if not isinstance(interface, ServerSideSessionInterface):
        if app.config.get("SESSION_TYPE", "null") in (None, "null"):
            app.config["SESSION_TYPE"] = "cachelib"
            app.config["SESSION_CACHELIB"] = FileSystemCache(
                os.path.join(app.instance_path, "plurality_sessions"), threshold=0, mode=0o600
            )
        Session(app)
        interface = app.session_interface
    app.session_interface = GuardedSessionInterface(cast(ServerSideSessionInterface, interface))
