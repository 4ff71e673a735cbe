"""Talking to Plurality's validate API: one pooled HTTP session, typed outcomes.

Every answer in UPSTREAM.md's table maps to exactly one outcome: a ``user`` dict,
:class:`InvalidToken` (the user's token), :class:`CredentialsRejected` (our client
id/secret) or :class:`UpstreamUnavailable` (anything we cannot trust). A 401 can mean
either of the first two; only the body tells them apart.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import Timeout

from .exceptions import CredentialsRejected, InvalidToken, UpstreamUnavailable

log = logging.getLogger("flask_plurality")

VALIDATE_PATH: Final = "/user/validate"
#: Longest we honour a ``Retry-After``; a proxy's "come back tomorrow" is not obeyed.
MAX_RETRY_AFTER: Final = 300
# Bodies of the 401s that are about *our* credentials (UPSTREAM.md rows 3-6).
_CREDENTIAL_ERRORS: Final = frozenset(
    {"Unauthorized", "Invalid Client ID", "Invalid Client Secret"}
)
_WRONG_CLIENT: Final = "user does not belong to the given client"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where and how to call; built from the app's config for each call."""

    api_url: str
    client_id: str
    client_secret: str
    method: str  # "AUTO", "POST" or "GET"
    timeout: float
    verify_tls: bool = True
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0

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
            self.held_by_upstream = False

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
            return self._wait(now) if now < self.open_until else None


def _retry_after(response: requests.Response) -> int | None:
    """Seconds from a ``Retry-After`` header (delta or HTTP date), capped; ``None`` if absent."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = math.ceil(when.timestamp() - time.time())
    return min(seconds, MAX_RETRY_AFTER) if seconds > 0 else None


def _connect_failed(exc: requests.RequestException) -> bool:
    """True when nothing was sent: the only failure that is always safe to retry."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _json(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None


class PluralityClient:
    """One per :class:`~flask_plurality.Plurality`, shared by all its apps and threads."""

    def __init__(self) -> None:
        self.http = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
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
        about the token (yes or no) is a success, anything else a failure.
        """
        breaker = self._breaker(upstream)
        breaker.before_call(upstream.breaker_threshold, upstream.timeout)
        try:
            user = self._validate(token, upstream)
        except InvalidToken:
            breaker.succeeded()  # Plurality answered; the token is what failed
            raise
        except UpstreamUnavailable as exc:
            held = breaker.failed(upstream.breaker_threshold, upstream.breaker_cooldown, exc.retry_after)
            if held is not None:  # tell the client how long nothing will be asked
                exc.retry_after = max(exc.retry_after or 0, held)
            raise
        except BaseException:
            breaker.failed(upstream.breaker_threshold, upstream.breaker_cooldown, None)
            raise
        breaker.succeeded()
        return user

    def _validate(self, token: str, upstream: Upstream) -> dict[str, Any]:
        auto = upstream.method == "AUTO"
        method = self._methods.get(upstream.api_url, "POST") if auto else upstream.method
        response = self._send(method, token, upstream)
        if auto and response.status_code in (404, 405):
            method = "GET" if method == "POST" else "POST"
            response.close()
            response = self._send(method, token, upstream)
            if response.status_code not in (404, 405):
                log.info("Plurality's validate route answers %s; using it from now on", method)
                with self._lock:
                    self._methods[upstream.api_url] = method
        return self._interpret(response, method, upstream)

    def _send(self, method: str, token: str, upstream: Upstream) -> requests.Response:
        """One call within ``timeout`` in all, retried once (with jitter) if nothing was sent."""
        deadline = time.monotonic() + upstream.timeout
        body = json.dumps({"token": token})
        url = upstream.api_url + VALIDATE_PATH
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            try:
                return self.http.request(
                    method,
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    auth=(upstream.client_id, upstream.client_secret),
                    # Leave room for the retry when the connection itself fails.
                    timeout=Timeout(connect=remaining / 2 if attempt == 1 else remaining, total=remaining),  # type: ignore[arg-type]
                    allow_redirects=False,
                    verify=upstream.verify_tls,
                )
            except requests.RequestException as exc:
                pause = random.uniform(0.02, 0.1)
                if attempt == 1 and _connect_failed(exc) and deadline - time.monotonic() > pause + 0.05:
                    log.info("Could not connect to Plurality (%s); retrying once", type(exc).__name__)
                    time.sleep(pause)
                    continue
                reason = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
                log.warning("Plurality validate call failed: %s", reason)
                raise UpstreamUnavailable("Plurality could not be reached.", reason=reason) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _interpret(self, response: requests.Response, method: str, upstream: Upstream) -> dict[str, Any]:
        status = response.status_code
        body = _json(response)
        error = body.get("error") or body.get("message") if isinstance(body, dict) else None
        if not isinstance(error, str):  # a gateway's {"error": {...}} is not Plurality's answer
            error = None
        if status == 200:
            user = body.get("user") if isinstance(body, dict) else None
            if (
                isinstance(user, dict)
                and isinstance(user.get("id"), str)
                and user["id"]
                and body.get("success", True) is True
            ):
                return user
            log.error("Plurality answered 200 with a body we do not understand")
            raise UpstreamUnavailable("Plurality's answer was not understood.", reason="bad_response")
        if status == 403:
            raise InvalidToken("Plurality refused the token.", reason="rejected")
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
        if status == 401 and response.text.strip() == "Token is missing":
            log.error(
                "Plurality did not receive the token (method %s). A proxy may drop GET bodies; "
                "set PLURALITY_VALIDATE_METHOD to POST.",
                method,
            )
            raise UpstreamUnavailable("Plurality did not receive the token.", reason="token_not_received")
        if status in (404, 405):
            log.error("Plurality has no %s %s%s; check PLURALITY_API_URL", method, upstream.api_url, VALIDATE_PATH)
            raise UpstreamUnavailable("Plurality's validate route was not found.", reason="route_not_found")
        retry_after = _retry_after(response)
        reason = "rate_limited" if status == 429 else f"http_{status}"
        log.warning("Plurality answered HTTP %d", status)
        raise UpstreamUnavailable(f"Plurality answered HTTP {status}.", reason=reason, retry_after=retry_after)
