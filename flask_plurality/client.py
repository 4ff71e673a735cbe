"""Plurality's validate protocol: the call to make, and what each answer means.

Every answer maps to exactly one outcome: a ``user`` dict, :class:`InvalidToken` (the
user's token), :class:`CredentialsRejected` (our client id/secret) or
:class:`UpstreamUnavailable` (anything we cannot trust). A 401 can mean either of the
first two; only the body tells them apart, and only Plurality's own ``403 Invalid
token`` is a verdict on the token (a gateway's 403 is an outage). docs/upstream.rst
lists the answers.

The rest has modules of its own: :mod:`.transport` carries one exchange within its
deadline and body cap, :mod:`.breaker` holds calls back while Plurality is down.
:meth:`PluralityClient.validate` sends :data:`.signals.upstream_called` for each call
it makes; a call it refuses to make (no credentials, the breaker open) is none.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from flask import current_app, has_app_context
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from . import signals
from .breaker import Breaker
from .config import require_credentials
from .exceptions import CredentialsRejected, InvalidToken, PluralityError, UpstreamUnavailable
from .transport import Reply, exchange, pooled_session

log = logging.getLogger("flask_plurality")

T = TypeVar("T")

VALIDATE_PATH: Final = "/user/validate"
#: Longest we honour a ``Retry-After``; a proxy's "come back tomorrow" is not obeyed.
MAX_RETRY_AFTER: Final = 300
_INVALID_TOKEN: Final = b"Invalid token"  # Plurality's own refusal of a token, plain text
_TOKEN_MISSING: Final = b"Token is missing"
# Bodies of the 401s that are about *our* credentials, not the user's token.
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


_RETRY: Final = Retry(0)
_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}


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


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; 8 KiB of "["
        return None


def outcome_of(exc: BaseException | None) -> tuple[str, str | None]:
    """(outcome, reason) of an answer or a call, as signals, metrics and spans name them:
    ``valid``, ``invalid``, ``credentials_rejected``, ``unavailable`` or ``error``."""
    if exc is None:
        return "valid", None
    if isinstance(exc, InvalidToken):
        return "invalid", exc.reason
    if isinstance(exc, CredentialsRejected):  # before its base class, UpstreamUnavailable
        return "credentials_rejected", exc.reason
    if isinstance(exc, UpstreamUnavailable):
        return "unavailable", exc.reason
    return "error", exc.reason if isinstance(exc, PluralityError) else "error"


def observe(produce: Callable[[], T], done: Callable[[str, str | None, bool], None]) -> T:
    """Run ``produce`` (an answer about a token) and tell ``done`` its outcome, its reason
    and whether it came from the answer cache, whether it returned or raised: what the
    ``answer_served`` signal and the tracing span both report. ``cached``: a true
    ``.cached`` on the answer, or on the exception (a refusal the cache remembered)."""
    error: BaseException | None = None
    cached = False
    try:
        answer = produce()
        cached = bool(getattr(answer, "cached", False))
        return answer
    except BaseException as exc:
        error = exc
        cached = bool(getattr(exc, "cached", False))
        raise
    finally:
        outcome, reason = outcome_of(error)
        done(outcome, reason, cached)


class PluralityClient:
    """One per :class:`~flask_plurality.Plurality`, shared by all its apps and threads."""

    def __init__(self) -> None:
        self.http = pooled_session()
        self._lock = threading.Lock()
        self._methods: dict[str, str] = {}  # api_url -> the method that worked, for "auto"
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def __repr__(self) -> str:
        return f"<PluralityClient {sorted(self._methods.items())}>"

    def close(self) -> None:
        self.http.close()

    def breaker(self, upstream: Upstream) -> Breaker:
        """The breaker of ``upstream``'s API URL and client id, made on first use."""
        # Per client id too: one app's rejected credentials must not hold back another's calls.
        key = (upstream.api_url, upstream.client_id)
        with self._lock:
            found = self._breakers.get(key)
            if found is None:
                found = self._breakers[key] = Breaker(upstream.api_url)
            return found

    def validate(self, token: str, upstream: Upstream) -> dict[str, Any]:
        """Ask Plurality about ``token``; return its ``user`` object or raise.

        Raises :class:`.NotConfigured` first, without a call, when the client id or
        secret is empty. Every call counts toward the breaker, logins and revalidations
        alike: an answer about the token (yes or no) is a success, anything else a
        failure, except a timeout of a call that had less than ``PLURALITY_TIMEOUT``
        (``upstream.budget``): its caller's deadline, not Plurality's slowness, cut it
        short, and the call that had the whole timeout (another worker's) tells the
        breaker what it found.
        """
        require_credentials(upstream.client_id, upstream.client_secret)
        breaker = self.breaker(upstream)
        limit = upstream.limit
        breaker.before_call(upstream.breaker_threshold, limit)  # a fail-fast is no call: not signalled
        deadline = time.monotonic() + limit
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            user = self._validate(token, upstream, deadline)
        except InvalidToken as exc:
            error = exc
            breaker.succeeded()  # Plurality answered; the token is what failed
            raise
        except UpstreamUnavailable as exc:
            error = exc
            if exc.reason == "timeout" and limit < upstream.timeout:
                breaker.released()
                raise
            held = breaker.failed(upstream.breaker_threshold, upstream.breaker_cooldown, exc.retry_after)
            if held is not None:  # tell the client how long nothing will be asked
                exc.retry_after = max(exc.retry_after or 0, held)
            raise
        except BaseException as exc:
            error = exc
            breaker.failed(upstream.breaker_threshold, upstream.breaker_cooldown, None)
            raise
        finally:
            _called(upstream, error, time.perf_counter() - start)
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

    def _send(self, method: str, token: str, upstream: Upstream, deadline: float) -> Reply:
        """One exchange by ``deadline`` in all, retried once (with jitter) if nothing was sent."""
        body = json.dumps({"token": token})
        url = upstream.api_url + VALIDATE_PATH
        for attempt in (1, 2):
            reply, failure = exchange(
                self.http,
                method,
                url,
                body=body,
                headers=_HEADERS,
                auth=(upstream.client_id, upstream.client_secret),
                deadline=deadline,
                verify=upstream.verify_tls,
                room_for_retry=attempt == 1,
            )
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

    def _interpret(self, reply: Reply, method: str, upstream: Upstream) -> dict[str, Any]:
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


def _called(upstream: Upstream, error: BaseException | None, duration: float) -> None:
    """:data:`.signals.upstream_called`, sent by the app making the call (``None`` outside one)."""
    outcome, reason = outcome_of(error)
    sender = current_app._get_current_object() if has_app_context() else None  # type: ignore[attr-defined]
    signals.upstream_called.send(sender, outcome=outcome, reason=reason, duration=duration, upstream=upstream.api_url)
