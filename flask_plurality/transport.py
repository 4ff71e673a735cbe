"""One HTTP exchange that ends by its deadline and reads at most :data:`MAX_BODY` bytes.

``requests`` bounds each socket wait, not a call: a server (or a proxy) that sends a
byte every second would hold a worker for ever, and one that sends a gigabyte, or a
gzip bomb, would have it read and inflated. Here a call ends by its deadline
(:class:`_Watchdog` shuts its socket down), reads at most :data:`MAX_BODY` bytes, and
never inflates a compressed body: a hostile or broken server costs a worker at most
``PLURALITY_TIMEOUT`` seconds and a few KiB.

This module knows nothing of Plurality: :mod:`.client` builds the request and reads
the answer; :func:`exchange` only carries it.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.hooks import dispatch_hook
from requests.models import PreparedRequest
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import Timeout

log = logging.getLogger("flask_plurality")

#: Largest answer body read; Plurality's answers are a few hundred bytes. Anything
#: larger is a proxy's page or an attack, and is an outage (``reason="oversized"``).
MAX_BODY: Final = 8 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer, read within the deadline and the size cap."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class Failure:
    """Why an exchange gave no answer. Returned, never raised from inside an ``except``
    block, so that no exception the caller raises keeps requests' (which holds the
    request, its ``Authorization`` header and its body) on its ``__context__``."""

    reason: str
    message: str
    retry_after: int | None = None
    #: Nothing was sent: the one failure that is always safe to retry.
    connect_failed: bool = field(default=False)


# -- one deadline per call, whatever the server does ---------------------------------


class _Deadline:
    """One call's wall-clock deadline and the sockets it uses.

    A socket timeout bounds each read, not the call. The watchdog shuts the call's
    socket down when the deadline passes; the blocked read then fails at once.
    """

    __slots__ = ("at", "done", "expired", "sockets")

    def __init__(self, at: float) -> None:
        self.at = at
        self.sockets: list[socket.socket] = []
        self.done = False
        self.expired = False


# Which call uses a (pooled, kept-alive) socket right now, so that a late watchdog
# never cuts a socket from under the next call that took it from the pool.
_owners_lock = threading.Lock()
_owners: weakref.WeakKeyDictionary[socket.socket, _Deadline] = weakref.WeakKeyDictionary()
_current = threading.local()  # the calling thread's _Deadline (gevent patches it per greenlet)


def _own(sock: socket.socket | None) -> None:
    """Put ``sock`` under the calling thread's deadline (the socket, not the connection:
    http.client hands a ``Connection: close`` socket over to the response)."""
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is None or sock is None:
        return
    with _owners_lock:
        _owners[sock] = deadline
        deadline.sockets.append(sock)


def _expire(deadline: _Deadline) -> None:
    with _owners_lock:
        if deadline.done:
            return
        deadline.expired = True
        for sock in deadline.sockets:
            if _owners.get(sock) is deadline:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv/send in the caller


def _finish(deadline: _Deadline) -> None:
    with _owners_lock:
        deadline.done = True


class _Watchdog:
    """One daemon thread per process that expires the calls whose deadline passed."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked worker starts its own

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="flask-plurality-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            due: list[_Deadline] = []
            with self._cond:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    deadline = heapq.heappop(self._heap)[2]
                    if not deadline.done:
                        due.append(deadline)
                if not due:
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            for deadline in due:
                _expire(deadline)


_watchdog: Final = _Watchdog()


class _DeadlineHTTPConnection(HTTPConnection):
    """Tells the calling thread's :class:`_Deadline` which socket to cut: a new one once
    connected, a kept-alive one when a request starts on it."""

    def connect(self) -> None:
        super().connect()
        _own(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _own(self.sock)
        super().request(*args, **kwargs)


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, HTTPSConnection):
    """The same for TLS (its ``connect`` is HTTPSConnection's, by the MRO)."""


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections the watchdog can cut (direct and through an
    HTTP(S) proxy; a SOCKS proxy keeps its own connections and only the timeouts)."""

    _POOLS: Final = {"http": _HTTPPool, "https": _HTTPSPool}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._POOLS  # urllib3 lets a manager override these

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.PoolManager:
        manager: urllib3.PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:
            manager.pool_classes_by_scheme = self._POOLS
        return manager


def pooled_session() -> requests.Session:
    """A ``requests.Session`` whose every connection answers to :func:`exchange`'s deadline."""
    session = requests.Session()
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _connect_failed(exc: requests.RequestException) -> bool:
    """True when nothing was sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    body: str,
    headers: Mapping[str, str],
    auth: tuple[str, str],
    deadline: float,
    verify: bool,
    room_for_retry: bool = False,
) -> tuple[Reply | None, Failure | None]:
    """Send one request and read its whole answer by ``deadline`` (``time.monotonic()``).

    ``room_for_retry``: the caller will try again if the connection itself fails, so
    connecting may take only half of the time left. Never follows a redirect, never
    inflates a body.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        return None, Failure("timeout", "Plurality could not be reached in time.")
    watch = _Deadline(deadline)
    _current.deadline = watch
    _watchdog.watch(watch)
    try:
        template, adapter, settings = _prepared(session, method, url, headers, auth, verify)
        prepared = template.copy()
        prepared.prepare_body(body, None)
        response = adapter.send(
            prepared,
            stream=True,
            # The watchdog ends the whole exchange at the deadline; these bound each socket wait.
            timeout=Timeout(connect=left / 2 if room_for_retry else left, read=left),
            verify=settings["verify"],
            cert=settings["cert"],
            proxies=settings["proxies"],
        )
        if session.hooks["response"]:  # tracing's hook (what session.send would run)
            response = dispatch_hook("response", session.hooks, response)  # type: ignore[no-untyped-call]
        try:
            return _read(response, deadline), None
        finally:
            response.close()
    except _TooMuch as refused:
        return None, refused.failure
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        if watch.expired or time.monotonic() >= deadline or isinstance(exc, requests.Timeout):
            return None, Failure("timeout", "Plurality did not answer in time.")
        connect_failed = isinstance(exc, requests.RequestException) and _connect_failed(exc)
        return None, Failure("connection_error", "Plurality could not be reached.", connect_failed=connect_failed)
    finally:
        _finish(watch)
        _current.deadline = None


#: Per session: (method, url, headers, auth, verify) -> (the request, prepared but for
#: its body; the adapter; the environment's proxy and CA settings for the URL).
_templates: weakref.WeakKeyDictionary[requests.Session, dict[Any, tuple[PreparedRequest, Any, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)


def _prepared(
    session: requests.Session,
    method: str,
    url: str,
    headers: Mapping[str, str],
    auth: tuple[str, str],
    verify: bool,
) -> tuple[PreparedRequest, Any, dict[str, Any]]:
    """What ``session.request`` works out anew on every call, worked out once: the
    request prepared but for its body (URL parsed, headers merged with the session's,
    Basic auth encoded), its adapter, and the proxy and CA settings the environment
    gives the URL (``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``: read at the
    first call to a URL, as a pool of connections to it outlives a change of them).
    Those steps were a third of a login's instructions outside the socket calls. The
    session's cookies are never sent or kept: Plurality sets none, and an answer of one
    client's call must never travel with another's."""
    per_session = _templates.get(session)
    if per_session is None:
        per_session = _templates.setdefault(session, {})
    key = (method, url, tuple(headers.items()), auth, verify)
    found = per_session.get(key)
    if found is None:
        template = PreparedRequest()
        template.prepare(
            method=method,
            url=url,
            # A compressed answer is refused, never inflated.
            headers={**session.headers, **headers, "Accept-Encoding": "identity"},
            auth=auth,
        )
        settings = session.merge_environment_settings(url, {}, True, verify, None)
        if len(per_session) >= 16:  # a handful of URLs and methods per process
            per_session.clear()
        found = (template, session.get_adapter(url), dict(settings))
        per_session[key] = found
    return found


class _TooMuch(Exception):
    """An answer refused before or while reading it (compressed, oversized, too slow)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _read(response: requests.Response, deadline: float) -> Reply:
    """The whole body, at most :data:`MAX_BODY` bytes, as sent (never inflated)."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        log.error("Plurality's URL answered a %r-encoded body, which is never inflated", encoding[:20])
        raise _TooMuch(Failure("encoded", "Plurality's answer was compressed."))
    length = response.headers.get("Content-Length", "").strip()
    if length.isdecimal() and int(length) > MAX_BODY:
        log.error("Plurality's URL answered %s bytes; at most %d are read", length, MAX_BODY)
        raise _TooMuch(Failure("oversized", "Plurality's answer was too large."))
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() >= deadline:
            raise _TooMuch(Failure("timeout", "Plurality did not answer in time."))
        chunk = response.raw.read(min(4096, MAX_BODY + 1 - size), decode_content=False)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            log.error("Plurality's URL answered more than %d bytes; not read further", MAX_BODY)
            raise _TooMuch(Failure("oversized", "Plurality's answer was too large."))
    return Reply(response.status_code, response.headers, b"".join(chunks))


__all__ = ["MAX_BODY", "DeadlineAdapter", "Failure", "Reply", "exchange", "pooled_session"]
