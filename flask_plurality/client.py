"""Talking to Plurality's validate API: one pooled HTTP session, typed outcomes.

Every answer in UPSTREAM.md's table maps to exactly one outcome: a ``user`` dict,
:class:`InvalidToken` (the user's token), :class:`CredentialsRejected` (our client
id/secret) or :class:`UpstreamUnavailable` (anything we cannot trust). A 401 can mean
either of the first two; only the body tells them apart, and only Plurality's own
``403 Invalid token`` is a verdict on the token (a gateway's 403 is an outage).

Whatever the server does, a call ends by its deadline (:class:`_Watchdog`), reads at
most :data:`MAX_BODY` bytes, and never inflates a compressed body: a hostile or broken
proxy costs a worker at most ``PLURALITY_TIMEOUT`` seconds and a few KiB.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import json
import logging
import math
import os
import random
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
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, NewConnectionError
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from .exceptions import CredentialsRejected, InvalidToken, UpstreamUnavailable

log = logging.getLogger("flask_plurality")

VALIDATE_PATH: Final = "/user/validate"
#: Longest we honour a ``Retry-After``; a proxy's "come back tomorrow" is not obeyed.
MAX_RETRY_AFTER: Final = 300
#: Largest answer body read; Plurality's answers are a few hundred bytes. Anything
#: larger is a proxy's page or an attack, and is an outage (``reason="oversized"``).
MAX_BODY: Final = 8 * 1024
_INVALID_TOKEN: Final = b"Invalid token"  # Plurality's own refusal, plain text (UPSTREAM.md row 2)
_TOKEN_MISSING: Final = b"Token is missing"
# Bodies of the 401s that are about *our* credentials (UPSTREAM.md rows 3-6).
_CREDENTIAL_ERRORS: Final = frozenset({"Unauthorized", "Invalid Client ID", "Invalid Client Secret"})
_WRONG_CLIENT: Final = "user does not belong to the given client"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where and how to call; built from the app's config for each call."""

    api_url: str
    client_id: str
    client_secret: str
    method: str  # "AUTO", "POST" or "GET"
    timeout: float  # PLURALITY_TIMEOUT: what one call may take, connect to last byte
    verify_tls: bool = True
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    #: Less than ``timeout`` when the caller already spent part of it (waiting on another
    #: worker's call): this call ends sooner, and its timing out blames nobody.
    budget: float | None = None

    @property
    def limit(self) -> float:
        """Seconds this call may take in all."""
        return self.timeout if self.budget is None else max(0.0, min(self.budget, self.timeout))

    def __repr__(self) -> str:  # the secret never reaches a repr
        return f"Upstream(api_url={self.api_url!r}, client_id={self.client_id!r}, method={self.method!r})"


class _Breaker:
    """Stop waiting a full timeout per request while Plurality is down.

    Hand-written on purpose: pybreaker holds one lock across the whole upstream call,
    which would serialise every login of a threaded server behind the slowest one.
    Opens after ``threshold`` consecutive failures; after ``cooldown`` one probe goes
    through while the others still fail fast; the probe's result closes or reopens it.
    A ``Retry-After`` (429, 503) holds every call back until it has passed, whatever
    the count. One per process and per (API URL, client id): workers do not share it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.open_until = 0.0  # monotonic; no call before this
        self.held_by_upstream = False  # open_until came from a Retry-After
        self.probe_until = 0.0  # a probe is in flight until then (it may never report back)
        self.is_open = False  # holding calls back since the last call (for metrics)
        self.openings = 0  # times it went from not holding to holding calls back

    def before_call(self, threshold: int, timeout: float) -> None:
        """Raise :class:`UpstreamUnavailable` instead of calling; or let this call through."""
        with self._lock:
            now = time.monotonic()
            if now < self.open_until or now < self.probe_until:
                raise UpstreamUnavailable(
                    "Plurality is not answering; not asking again yet.",
                    reason="rate_limited" if self.held_by_upstream and now < self.open_until else "circuit_open",
                    retry_after=self._wait(now),
                )
            if self.failures >= threshold:
                # This caller is the probe; the others fail fast until it reports back.
                self.probe_until = now + timeout + 1

    def _wait(self, now: float) -> int:
        # Rounded first: (now + 60) - now can be 60.000000001, which must not say 61.
        return max(1, math.ceil(round(max(self.open_until, self.probe_until) - now, 3)))

    def succeeded(self) -> None:
        with self._lock:
            if self.failures:
                log.info("Plurality answers again after %d failed calls", self.failures)
            self.failures = 0
            self.open_until = self.probe_until = 0.0
            self.held_by_upstream = self.is_open = False

    def released(self) -> None:
        """Neither a success nor a failure (a call cut short by its caller): if it was the
        probe, let the next caller probe instead of waiting for the probe's time to pass."""
        with self._lock:
            self.probe_until = 0.0

    def failed(self, threshold: int, cooldown: float, retry_after: int | None) -> int | None:
        """Count a failure; return the seconds calls are now held back, if they are."""
        with self._lock:
            self.failures += 1
            self.probe_until = 0.0
            now = time.monotonic()
            if retry_after:
                self.held_by_upstream = now + retry_after >= self.open_until
                self.open_until = max(self.open_until, now + retry_after)
            if self.failures >= threshold:
                if now + cooldown > self.open_until:
                    self.open_until, self.held_by_upstream = now + cooldown, False
                log.warning(
                    "Plurality failed %d times in a row; not calling it for %.0f s",
                    self.failures,
                    self.open_until - now,
                )
            held = now < self.open_until
            if held and not self.is_open:
                self.openings += 1
            self.is_open = held
            return self._wait(now) if held else None


_RETRY: Final = Retry(0)


def _retry_after(headers: Mapping[str, str]) -> int | None:
    """Seconds from a ``Retry-After`` header (delta or HTTP date, read by urllib3), capped
    at :data:`MAX_RETRY_AFTER`; ``None`` if absent, in the past, or unparsable (``²``,
    ``-1``, ``1e9``, garbage: a header from a proxy must never cost a 500)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = _RETRY.parse_retry_after(value)
    except (InvalidHeader, ValueError, TypeError, OverflowError, IndexError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(math.ceil(seconds), MAX_RETRY_AFTER)


def _connect_failed(exc: requests.RequestException) -> bool:
    """True when nothing was sent: the only failure that is always safe to retry."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; 8 KiB of "["
        return None


# -- one deadline per call, whatever the server does ---------------------------------


class _Deadline:
    """One call's wall-clock deadline and the sockets it uses.

    ``PLURALITY_TIMEOUT`` as a socket timeout bounds each read, not the call: a server
    sending a byte every second would hold a worker forever. The watchdog shuts the
    call's socket down when the deadline passes; the blocked read then fails at once.
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


class _Adapter(HTTPAdapter):
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


@dataclass(frozen=True, slots=True)
class _Reply:
    """A whole answer, read within the deadline and the size cap."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class _Failure:
    """Why a call gave no usable answer; raised only after the ``except`` block has
    ended, so that no exception we raise keeps requests' (which holds the request,
    its ``Authorization`` header and the token) on its ``__context__``."""

    reason: str
    message: str
    retry_after: int | None = None
    connect_failed: bool = field(default=False)


class PluralityClient:
    """One per :class:`~flask_plurality.Plurality`, shared by all its apps and threads."""

    def __init__(self) -> None:
        self.http = requests.Session()
        adapter = _Adapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)
        self._lock = threading.Lock()
        self._methods: dict[str, str] = {}  # api_url -> the method that worked, for "auto"
        self._breakers: dict[tuple[str, str], _Breaker] = {}

    def __repr__(self) -> str:
        return f"<PluralityClient {sorted(self._methods.items())}>"

    def close(self) -> None:
        self.http.close()

    def _breaker(self, upstream: Upstream) -> _Breaker:
        # Per client id too: one app's rejected credentials must not hold back another's calls.
        with self._lock:
            return self._breakers.setdefault((upstream.api_url, upstream.client_id), _Breaker())

    def validate(self, token: str, upstream: Upstream) -> dict[str, Any]:
        """Ask Plurality about ``token``; return its ``user`` object or raise.

        Every call counts toward the breaker, logins and revalidations alike: an answer
        about the token (yes or no) is a success, anything else a failure, except a
        timeout of a call that had less than ``PLURALITY_TIMEOUT`` (``upstream.budget``):
        its caller's deadline, not Plurality's slowness, cut it short, and the call that
        had the whole timeout (another worker's) tells the breaker what it found.
        """
        breaker = self._breaker(upstream)
        limit = upstream.limit
        breaker.before_call(upstream.breaker_threshold, limit)
        deadline = time.monotonic() + limit
        try:
            user = self._validate(token, upstream, deadline)
        except InvalidToken:
            breaker.succeeded()  # Plurality answered; the token is what failed
            raise
        except UpstreamUnavailable as exc:
            if exc.reason == "timeout" and limit < upstream.timeout:
                breaker.released()
                raise
            held = breaker.failed(upstream.breaker_threshold, upstream.breaker_cooldown, exc.retry_after)
            if held is not None:  # tell the client how long nothing will be asked
                exc.retry_after = max(exc.retry_after or 0, held)
            raise
        except BaseException:
            breaker.failed(upstream.breaker_threshold, upstream.breaker_cooldown, None)
            raise
        breaker.succeeded()
        return user

    def _validate(self, token: str, upstream: Upstream, deadline: float) -> dict[str, Any]:
        auto = upstream.method == "AUTO"
        method = self._methods.get(upstream.api_url, "POST") if auto else upstream.method
        reply = self._send(method, token, upstream, deadline)
        if auto and reply.status in (404, 405):
            method = "GET" if method == "POST" else "POST"
            reply = self._send(method, token, upstream, deadline)  # within the same deadline
            if reply.status not in (404, 405):
                log.info("Plurality's validate route answers %s; using it from now on", method)
                with self._lock:
                    self._methods[upstream.api_url] = method
        return self._interpret(reply, method, upstream)

    def _send(self, method: str, token: str, upstream: Upstream, deadline: float) -> _Reply:
        """One exchange by ``deadline`` in all, retried once (with jitter) if nothing was sent."""
        body = json.dumps({"token": token})
        url = upstream.api_url + VALIDATE_PATH
        for attempt in (1, 2):
            reply, failure = self._exchange(method, url, body, upstream, deadline, attempt)
            if failure is None:
                assert reply is not None
                return reply
            pause = random.uniform(0.02, 0.1)
            if attempt == 1 and failure.connect_failed and deadline - time.monotonic() > pause + 0.05:
                log.info("Could not connect to Plurality; retrying once")
                time.sleep(pause)
                continue
            log.warning("Plurality validate call failed: %s", failure.reason)
            # Raised here, outside any except block: nothing of requests' exception (the
            # request, its Authorization header, the token) hangs on our exception's chain.
            raise UpstreamUnavailable(failure.message, reason=failure.reason, retry_after=failure.retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self, method: str, url: str, body: str, upstream: Upstream, deadline: float, attempt: int
    ) -> tuple[_Reply | None, _Failure | None]:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, _Failure("timeout", "Plurality could not be reached in time.")
        watch = _Deadline(deadline)
        _current.deadline = watch
        _watchdog.watch(watch)
        try:
            response = self.http.request(
                method,
                url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",  # a compressed answer is refused, never inflated
                },
                auth=(upstream.client_id, upstream.client_secret),
                # Leave room for the retry when the connection itself fails. The watchdog
                # ends the whole exchange at the deadline; these bound each socket wait.
                timeout=Timeout(connect=left / 2 if attempt == 1 else left, read=left),  # type: ignore[arg-type]
                allow_redirects=False,
                verify=upstream.verify_tls,
                stream=True,
            )
            try:
                return _read(response, deadline), None
            finally:
                response.close()
        except _TooMuch as refused:
            return None, refused.failure
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            if watch.expired or time.monotonic() >= deadline or isinstance(exc, requests.Timeout):
                return None, _Failure("timeout", "Plurality did not answer in time.")
            connect_failed = isinstance(exc, requests.RequestException) and _connect_failed(exc)
            return None, _Failure("connection_error", "Plurality could not be reached.", connect_failed=connect_failed)
        finally:
            _finish(watch)
            _current.deadline = None

    def _interpret(self, reply: _Reply, method: str, upstream: Upstream) -> dict[str, Any]:
        status = reply.status
        body = _json(reply.body)
        error = body.get("error") or body.get("message") if isinstance(body, dict) else None
        if not isinstance(error, str):  # a gateway's {"error": {...}} is not Plurality's answer
            error = None
        if status == 200:
            user = body.get("user") if isinstance(body, dict) else None
            if isinstance(body, dict) and body.get("success", True) is True and isinstance(user, dict):
                if isinstance(user.get("id"), str) and user["id"]:
                    return user
                if "id" not in user or not user["id"]:
                    log.error("Plurality answered 200 without a user id (it has no record of this user)")
                    raise UpstreamUnavailable("Plurality has no record of this user.", reason="no_user")
            log.error("Plurality answered 200 with a body we do not understand")
            raise UpstreamUnavailable("Plurality's answer was not understood.", reason="bad_response")
        if status == 403 and reply.body.strip() == _INVALID_TOKEN:
            raise InvalidToken("Plurality refused the token.", reason="rejected")
        if status == 403:
            log.warning(
                "Plurality's URL answered 403 with a body that is not Plurality's refusal "
                "(a proxy or firewall?); not taken as a verdict on the token"
            )
            raise UpstreamUnavailable(
                "Plurality answered HTTP 403.", reason="http_403", retry_after=_retry_after(reply.headers)
            )
        if status == 401 and error == _WRONG_CLIENT:
            raise InvalidToken("The token was issued for another application.", reason="wrong_client")
        if status == 401 and error in _CREDENTIAL_ERRORS:
            log.error(
                "Plurality rejected this app's credentials (client id %r): %s. "
                "Check PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET.",
                upstream.client_id,
                error,
            )
            raise CredentialsRejected(f"Plurality rejected the client credentials: {error}")
        if status == 401 and reply.body.strip() == _TOKEN_MISSING:
            log.error(
                "Plurality did not receive the token (method %s). A proxy may drop GET bodies; "
                "set PLURALITY_VALIDATE_METHOD to POST.",
                method,
            )
            raise UpstreamUnavailable("Plurality did not receive the token.", reason="token_not_received")
        if status in (404, 405):
            log.error("Plurality has no %s %s%s; check PLURALITY_API_URL", method, upstream.api_url, VALIDATE_PATH)
            raise UpstreamUnavailable("Plurality's validate route was not found.", reason="route_not_found")
        if 300 <= status < 400:
            log.error("Plurality's URL answered a redirect (HTTP %d), never followed; check PLURALITY_API_URL", status)
            raise UpstreamUnavailable(f"Plurality answered HTTP {status}.", reason="redirect")
        retry_after = _retry_after(reply.headers)
        reason = "rate_limited" if status == 429 else f"http_{status}"
        log.warning("Plurality answered HTTP %d", status)
        raise UpstreamUnavailable(f"Plurality answered HTTP {status}.", reason=reason, retry_after=retry_after)


class _TooMuch(Exception):
    """An answer refused before or while reading it (compressed, oversized, too slow)."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _read(response: requests.Response, deadline: float) -> _Reply:
    """The whole body, at most :data:`MAX_BODY` bytes, as sent (never inflated)."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        log.error("Plurality's URL answered a %r-encoded body, which is never inflated", encoding[:20])
        raise _TooMuch(_Failure("encoded", "Plurality's answer was compressed."))
    length = response.headers.get("Content-Length", "").strip()
    if length.isdecimal() and int(length) > MAX_BODY:
        log.error("Plurality's URL answered %s bytes; at most %d are read", length, MAX_BODY)
        raise _TooMuch(_Failure("oversized", "Plurality's answer was too large."))
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() >= deadline:
            raise _TooMuch(_Failure("timeout", "Plurality did not answer in time."))
        chunk = response.raw.read(min(4096, MAX_BODY + 1 - size), decode_content=False)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            log.error("Plurality's URL answered more than %d bytes; not read further", MAX_BODY)
            raise _TooMuch(_Failure("oversized", "Plurality's answer was too large."))
    return _Reply(response.status_code, response.headers, b"".join(chunks))
