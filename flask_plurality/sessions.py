"""Flask-Session, set up and guarded: the session interface every request goes through.

:func:`setup_sessions` uses the app's own Flask-Session, or sets up cachelib on disk,
and wraps it in :class:`GuardedSessionInterface` so a store outage is a 503, a logout
is never undone by a request still in flight, and no session outlives its token. Every
Flask-Session internal the package touches goes through ``shim``
(:mod:`.flask_session_shim`), so a Flask-Session upgrade is a change to one file.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, cast

from cachelib.file import FileSystemCache
from cachelib.serializers import BaseSerializer
from flask import Flask, Request, Response, has_request_context, request, session
from flask.sessions import SessionInterface, SessionMixin
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from .exceptions import ConfigurationError, SessionStoreUnavailable
from .flask_context import SESSION_KEY
from .flask_session_shim import shim
from .logins import expiry_pinned_to_token, session_lifetime_cap
from .revocation import REVOCATION_EPOCH
from .security import redacted_session_class
from .stores import UNREAD, Store, log, log_store_failure, store_for, store_use
from .stores.files import SessionFormatSerializer, no_size_threshold

#: Seconds between two sweeps of expired session entries (files, SQL rows), per process.
SWEEP_INTERVAL: Final = 3600.0


class UnencodableSessionValue(TypeError):
    """The session serializer cannot encode a value the app put in the session (a lazy
    string, an object of the app's own): the app's own bug, so a 500 through
    Flask's error handling, not a store outage. Names the key and the value's type,
    never the value."""

    def __init__(self, key: str | None, type_name: str) -> None:
        where = f"under {key!r}" if key is not None else "somewhere in it"
        super().__init__(
            f"The session serializer cannot encode a {type_name} stored in the session {where}; "
            "store plain JSON types (str, int, float, bool, None, lists and dicts of them)."
        )
        self.key = key
        self.type_name = type_name


def _cache_probe(cache: Any, value: Any) -> object:
    """Encode ``value`` as a cachelib cache stores it (its serializer's ``dump``, pickle
    by default), raising what it raises."""
    dump = getattr(type(getattr(cache, "serializer", None)), "dump", BaseSerializer.dump)
    if dump is BaseSerializer.dump:  # plain pickle (which would log and swallow some errors)
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    cache.serializer.dump(value, buffer)
    return buffer.getvalue()


def _type_name(value: object) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _culprit(value: object, probe: Callable[[Any], object], depth: int = 0) -> object:
    """The innermost part of ``value`` that ``probe`` cannot encode (``value`` itself if
    no part of it is to blame)."""
    if depth < 16:
        parts: list[object] = []
        if isinstance(value, dict):
            parts = [part for item in value.items() for part in item]
        elif isinstance(value, list | tuple):
            parts = list(value)
        for part in parts:
            try:
                probe({"x": part})
            except Exception:
                return _culprit(part, probe, depth + 1)
    return value


def unencodable(session: SessionMixin, probe: Callable[[Any], object]) -> UnencodableSessionValue:
    """The error for a session the serializer refused: which key, which type."""
    for name, value in dict(session).items():
        try:
            probe({"x": value})
        except Exception:
            key = name if isinstance(name, str) else f"<a {_type_name(name)} key>"
            return UnencodableSessionValue(key, _type_name(_culprit(value, probe)))
    return UnencodableSessionValue(None, "value")


class UnavailableSession(ServerSideSession):  # type: ignore[misc]
    """Stands in for a session the store could not load: empty, and never saved. A view
    that writes to it gets a 503 instead of a 200 whose write was dropped."""

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


#: What Flask-Session's session ids are made of (``secrets.token_urlsafe``).
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]+")
#: The longest id looked up (or what ``SESSION_ID_LENGTH`` generates, if longer): 86
#: characters (``SESSION_ID_LENGTH = 64``), with a key prefix of 150 within memcached's
#: 250 bytes.
MAX_SESSION_ID: Final = 86


def holdable_ids(inner: ServerSideSessionInterface) -> Callable[[str], bool]:
    """Whether a store id (the key prefix and the cookie's session id) can name a session
    on any backend: the id only of the characters Flask-Session generates and no longer
    than it makes them (see :data:`MAX_SESSION_ID`). Anything else (too long for memcached,
    whitespace, NUL, non-ASCII, which memcached or PostgreSQL refuse) was never issued:
    it is no session, read as a missing one without asking the store, so a planted
    cookie is neither a 503 nor a store failure."""
    prefix = str(getattr(inner, "key_prefix", ""))
    longest = max(MAX_SESSION_ID, math.ceil(int(getattr(inner, "sid_length", 32)) * 4 / 3))
    start = len(prefix)
    fullmatch = _SESSION_ID.fullmatch

    def holdable(store_id: str) -> bool:
        return (
            0 < len(store_id) - start <= longest
            and store_id.startswith(prefix)
            and fullmatch(store_id, start) is not None
        )

    return holdable


#: While Flask-Session loads a session: (epoch key, the epoch read with it, whether
#: the session's entry was found).
_epoch_read: ContextVar[tuple[str, list[Any], list[bool]] | None] = ContextVar("plurality_epoch_read", default=None)


class GuardedSessionInterface(SessionInterface):
    """Wraps Flask-Session's interface: every write goes through the store, checked.

    - Loading fails -> an empty :class:`UnavailableSession` that is never written back
      (so nothing already stored is overwritten); protected routes and login answer 503
      ``session_store_unavailable``, and so does a view that writes to it.
    - Saving fails, or the backend reports a failed write or delete -> the response
      becomes that 503, instead of a 200 whose login (or logout) never happened.
    - A session read from the store is written back only while it is still stored, with
      the backend's own atomic write-if-present (:meth:`.stores.Store.save_session`):
      a logout that deleted it while this request ran stays a logout.
    - Where the store can, the revocation epoch is read in the same round trip as the
      session (Redis MGET, memcached get_multi, one SQL SELECT).
    - Expired entries are swept about once an hour per process, off the request's path,
      on backends without their own expiry (files, SQL tables).
    """

    def __init__(self, inner: ServerSideSessionInterface, store: Store | None = None) -> None:
        self.inner = inner
        #: The store behind ``inner`` (found here when not given; SQL needs an app context).
        self.store = store if store is not None else store_for(inner)
        store = self.store
        # Flask-Session calls these on itself while saving; shadowing them on the
        # instance keeps every backend's own save logic while (1) no cookie or stored
        # entry outlives the login's token and (2) the cookie is Secure on HTTPS.
        expiration, secure = inner.get_expiration_time, inner.get_cookie_secure

        def get_expiration_time(app: Flask, session: SessionMixin) -> datetime | None:
            expires = expiration(app, session)
            cap = session_lifetime_cap(timedelta.max)
            if expires is None or cap == timedelta.max:
                return cast(datetime | None, expires)
            return min(cast(datetime, expires), datetime.now(UTC) + cap)

        def upsert_session(lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
            lifetime = session_lifetime_cap(lifetime)
            # A session read from the store is written back only if it is still there:
            # a logout, revoke or login elsewhere that deleted it while this request
            # ran must not be undone by this request's (refresh-each-request) save.
            present = getattr(session, "loaded_sid", None) == session.sid
            refused = False
            try:
                store.save_session(store_id, session, int(lifetime.total_seconds()), only_if_present=present)
            except SessionStoreUnavailable:
                raise
            except Exception:
                # Every store wraps its client calls (an outage is SessionStoreUnavailable):
                # what escapes is the serializer refusing a value of the app's.
                refused = True
            if refused:
                raise unencodable(session, probe)  # outside the except: no chain to the value

        # What tells which value the serializer refused: Flask-Session's own serializer,
        # or pickle where a cachelib cache stores the session itself.
        cache = getattr(inner, "cache", None)
        probe = shim.probe_of(inner) if cache is None else partial(_cache_probe, cache)

        def get_cookie_secure(app: Flask) -> bool:
            return bool(secure(app)) or (has_request_context() and request.is_secure)

        # The revocation epoch in the same round trip as the session, where the store can;
        # and whether the session's entry was found (read from the store: see open_session).
        holdable = holdable_ids(inner)

        def retrieve_session_data(store_id: str) -> dict[str, Any] | None:
            pending = _epoch_read.get()
            if not holdable(store_id):  # a junk cookie: no session, and not the store's problem
                if pending is not None:
                    pending[2].append(False)
                return None
            data, epoch = store.retrieve_session(store_id, pending[0] if pending else None)
            if pending is not None:
                if epoch is not UNREAD:
                    pending[1].append(epoch)
                pending[2].append(data is not None)
            return cast(dict[str, Any] | None, data)

        inner.get_expiration_time = get_expiration_time
        inner.get_cookie_secure = get_cookie_secure
        shim.set_upsert(inner, upsert_session)
        shim.set_delete(inner, store.delete_session)
        shim.set_retrieve(inner, retrieve_session_data)
        # Nothing else deletes an abandoned login's file or row: sweep expired entries
        # about once an hour per process, in a thread, off the request's path.
        self._sweep: Callable[[], None] | None = lambda: sweep_expired(store.sweep)
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        # repr(session) must not show the token (debug logs, error reporters).
        inner.session_class = redacted_session_class(inner.session_class)

    def __getattr__(self, name: str) -> Any:  # regenerate(), key_prefix, client...
        return getattr(self.inner, name)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        box: list[Any] = []
        found: list[bool] = []
        epoch_key = str(app.config.get("PLURALITY_KEY_PREFIX", "plurality:")) + REVOCATION_EPOCH
        reading = _epoch_read.set((epoch_key, box, found))
        use = store_use.set("session_load")
        try:
            session = self.inner.open_session(app, request)
        except Exception as exc:
            if not isinstance(exc, SessionStoreUnavailable):  # already logged
                log_store_failure(exc)
            return UnavailableSession(sid=None)
        finally:
            store_use.reset(use)
            _epoch_read.reset(reading)
        if box:
            #: ``revoke_user``'s epoch as it was when this session was read.
            session.revocation_epoch = box[0] if isinstance(box[0], str) else None
        if found and found[-1]:
            #: Read from the store under this id (else: a new session, a new id). Known
            #: from the read itself, not from the cookie: a signed cookie is not the id.
            session.loaded_sid = session.sid
        return session  # type: ignore[no-any-return]

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        from .responses import store_unavailable_into

        if getattr(session, "detached", False):
            return  # a bearer request's session: never saved, no cookie (see detach_session)
        if isinstance(session, UnavailableSession):
            if session.modified:  # the view wrote to a session that could not be loaded
                log.error("A view wrote to the session while the store was unavailable; answered 503")
                store_unavailable_into(response)
            return
        if self._sweep is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            threading.Thread(target=self._sweep, name="plurality-session-sweep", daemon=True).start()
        if getattr(session, "unencodable", False):
            return  # the 500 for it is being answered: nothing to save (see below)
        if unchanged_pinned_login(app, session):
            # The steady protected request: nothing to write. Flask-Session would rewrite
            # the entry and resend the cookie (SESSION_REFRESH_EACH_REQUEST) with the same
            # content and the same expiry, the token's exp: one store write per request
            # (under a flock on files) that changes nothing. Logout finality is untouched:
            # writing less can never bring a deleted entry back.
            if session.accessed:
                response.vary.add("Cookie")
            return
        use = store_use.set("session_save")
        try:
            self.inner.save_session(app, session, response)
        except UnencodableSessionValue as exc:
            log.error(
                "A session value cannot be encoded (key %r, a %s): answered 500, the session was not saved",
                exc.key,
                exc.type_name,
            )
            session.unencodable = True  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            if not isinstance(exc, SessionStoreUnavailable):  # already logged
                log_store_failure(exc)
            store_unavailable_into(response)
        finally:
            store_use.reset(use)


def unchanged_pinned_login(app: Flask, session: SessionMixin) -> bool:
    """Would saving ``session`` rewrite exactly what is stored? True for a session read
    from the store under this id, not changed by this request (``session.modified``:
    top-level changes; a nested change needs ``session.modified = True``, as in Flask),
    holding a permanent Plurality login whose entry and cookie have expired at the token's
    ``exp`` since the login (:func:`.logins.expiry_pinned_to_token`). Anything else
    (a session without a Plurality login, a sliding lifetime shorter than the token's)
    is saved as Flask-Session saves it."""
    return (
        not session.modified
        and session.permanent
        and getattr(session, "loaded_sid", None) == getattr(session, "sid", False)
        and expiry_pinned_to_token(session, app.permanent_session_lifetime)
        and not holds_containers_of_the_app(session)
    )


#: Values a view can change in place (``session["cart"].append(x)``) without Flask seeing it.
_CHANGEABLE_IN_PLACE: Final = (dict, list, set, bytearray)


def holds_containers_of_the_app(session: SessionMixin) -> bool:
    """Does the session hold a value of the app's own (not the login) that a view could
    change in place, unseen by ``session.modified``? Then it is saved on every request,
    as Flask-Session saves it, so such a change is never lost. Flask-Login's, Flask-WTF's
    and most apps' keys are strings, numbers and flags: their steady requests write nothing."""
    items = dict.items(cast("dict[str, Any]", session))
    return any(isinstance(value, _CHANGEABLE_IN_PLACE) for key, value in items if key != SESSION_KEY)


def sweep_expired(sweep: Callable[[], None]) -> None:
    """Run a store's sweep of expired entries (sessions, answers, counters)."""
    try:
        sweep()
    except Exception as exc:  # a sweep must never take a worker down
        log.warning("Sweeping expired session entries failed: %s", type(exc).__name__)


def setup_sessions(app: Flask) -> Store:
    """Use the app's Flask-Session, or set up cachelib on disk; guard it either way.
    Returns the store behind it (see :mod:`.stores`)."""
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    interface = app.session_interface
    if isinstance(interface, GuardedSessionInterface):
        return interface.store
    if not isinstance(interface, ServerSideSessionInterface):
        if app.config.get("SESSION_TYPE", "null") in (None, "null"):
            app.config["SESSION_TYPE"] = "cachelib"
            app.config["SESSION_CACHELIB"] = FileSystemCache(
                os.path.join(app.instance_path, "plurality_sessions"), threshold=0, mode=0o600
            )
        # Flask-Session makes every session permanent (a 31-day cookie) by default: a
        # session without a login keeps a browser-session cookie here, and a login's
        # cookie lasts to its token's expiry (start_login makes it permanent).
        app.config.setdefault("SESSION_PERMANENT", False)
        shim.setup(app)
        interface = app.session_interface
    shim.keep_client(interface, app.config)
    missing = shim.missing(interface)
    if missing:
        raise ConfigurationError(
            f"This Flask-Session release lacks what flask-plurality relies on ({', '.join(missing)}); "
            "use Flask-Session 0.8."
        )
    cache = getattr(interface, "cache", None)
    if isinstance(cache, FileSystemCache):
        no_size_threshold(cache, app.config)
        if isinstance(cache.serializer, SessionFormatSerializer):  # the test helpers' store
            cache.serializer.use_format(str(app.config.get("SESSION_SERIALIZATION_FORMAT", "msgpack")))
    store = store_for(interface, app)
    app.session_interface = GuardedSessionInterface(cast(ServerSideSessionInterface, interface), store)
    return store
