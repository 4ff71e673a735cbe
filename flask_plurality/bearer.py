"""``Authorization: Bearer <pluralityToken>``: clients that hold no session cookie (SPEC section 8).

A mobile app, a CLI or a frontend on another site sends the widget's token with every
request. Each such request is judged on its own, like a login that stores nothing: the
token is read locally (junk and expired tokens never reach Plurality), Plurality's
answer comes through the shared answer cache (``PLURALITY_BEARER_REVALIDATE``, single
flight, breaker), failures count in the login throttle (a call to Plurality is counted
before it is made, by the one request that makes it: see :class:`_Attempt`),
``revoke_user`` refuses tokens issued before it, and the request's session is
detached: empty, never saved, no cookie.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, Request
from werkzeug.wrappers import Response as BaseResponse

from . import signals, throttle
from .answers import Answer
from .config import ConfigView, config
from .exceptions import InvalidToken, PluralityError, SessionStoreUnavailable, UpstreamUnavailable
from .logins import login_refusal
from .profile import Profile
from .responses import DEFAULT_RETRY_AFTER, INVALID_BEARER, json_error, store_unavailable
from .revocation import epoch_since, stamp_of
from .security import client_bucket
from .sessions import detach_session
from .state import get_state
from .store import get_store
from .tokens import read_claims, token_hash

if TYPE_CHECKING:
    from .extension import Plurality

log = logging.getLogger("flask_plurality")

#: Bearer tokens remembered per app and process (see :class:`Seen`); past this, forget all.
_MAX_REMEMBERED: Final = 10_000


def bearer_token(request: Request) -> str | None:
    """The credentials of ``Authorization: Bearer ...`` (the scheme in any case), or
    ``None`` when the request brings none (no header, another scheme, nothing after it)."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def authenticate(
    extension: Plurality, token: str, interval: int, app: Flask, cfg: ConfigView
) -> Profile | BaseResponse:
    """The profile ``token`` stands for, or the answer to send (401, 429, 503).

    ``interval``: how old a cached "yes" may be (0: ask Plurality now).
    """
    detach_session()
    attempt: _Attempt | None = None  # made once Plurality's answer is needed
    try:
        try:
            seen = _read(token, app, cfg)
            claims = seen.claims
            answer = extension.answers.cached(token, interval, digest=seen.digest) if interval else None
            if answer is None:
                # Whoever calls Plurality counts the call in the throttle first, as /login
                # does; the requests sharing that call (a page's twenty API calls with one
                # token) count once, so a burst is not refused for its size.
                attempt = _Attempt(token)
                keep = cfg.grace_period if cfg.on_upstream_error == "allow" else 0
                answer = extension.answers.lookup(token, seen.exp, interval, keep, attempt=attempt)
        except _Throttled as exc:
            return json_error(429, "too_many_attempts", retry_after=exc.retry_after)
        except InvalidToken as exc:
            return _refused(token, exc.reason, counted=attempt is not None and attempt.asked)
        except UpstreamUnavailable as exc:
            outcome = _outage(extension, token, exc, cfg, app)
            if isinstance(outcome, BaseResponse):
                return outcome
            answer = outcome
        if attempt is not None and not attempt.asked:
            # Answered by another request's call (its flight's leader, another process): a
            # client or token already over the limit is refused all the same. Looked at now,
            # not before the lookup: meanwhile that call's own count is in the counters.
            wait = _throttled(attempt.counters)
            if wait is not None:
                return json_error(429, "too_many_attempts", retry_after=wait)
        profile = Profile.from_upstream(answer.user, claims)
        if cfg.revocation_check and _revoked(profile.id, seen, app):
            log.info("Refused a bearer token of revoked user %s", profile.id)
            return json_error(401, "invalid_token", headers=INVALID_BEARER)
    except SessionStoreUnavailable:
        return store_unavailable()
    refusal = login_refusal(extension, profile)  # a gate must not be walked around through the API
    if refusal is not None:
        return refusal
    return profile


def _throttled(counters: dict[str, str]) -> int | None:
    """Seconds to wait when one of ``counters`` is at the limit; ``None`` to go on."""
    store = get_store()
    for name in counters.values():
        count, left = store.peek(name)
        if count >= config.login_max_failures:
            return max(1, left)
    return None


class _Throttled(PluralityError):
    """Plurality was not asked: the call would have taken the client or the token over
    the limit. Raised inside the single flight, so every request sharing it answers 429."""

    reason = "too_many_attempts"

    def __init__(self, message: str = "Too many failed logins.", *, retry_after: int = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Attempt:
    """A request's call to Plurality about a bearer token, counted as a failed login
    before it is made (:func:`.throttle.reserve`), so that however many run at once, at
    most ``PLURALITY_LOGIN_MAX_FAILURES`` per window reach Plurality (SPEC 7.4).

    :meth:`.AnswerCache.lookup` enters it only around the call it makes, so the requests
    that share one call (the single flight, the ask lock) count once. A "no" stays
    counted; a "yes" or an outage is taken back.
    """

    __slots__ = ("asked", "counters")

    def __init__(self, token: str) -> None:
        self.counters = throttle.buckets(client_bucket(), token)
        self.asked = False  # this request made the call, counted

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        wait = throttle.reserve(self.counters)
        if wait is not None:
            raise _Throttled(retry_after=wait)
        self.asked = True
        try:
            yield
        except InvalidToken:
            raise  # a failure that reached Plurality: it stays counted
        except BaseException:
            throttle.release(self.counters)
            raise
        throttle.release(self.counters)


def _refused(token: str, reason: str, *, counted: bool = False) -> BaseResponse:
    """401 ``invalid_token``, counted as a failed login (429 once over the limit);
    ``counted``: this request's own call to Plurality was counted already."""
    log.info("Bearer token refused: %s", reason)
    if counted:
        return json_error(401, "invalid_token", headers=INVALID_BEARER)
    counters = throttle.buckets(client_bucket(), token)
    wait = _throttled(counters)
    if wait is not None:
        return json_error(429, "too_many_attempts", retry_after=wait)
    store = get_store()
    for name in counters.values():
        store.incr(name, config.login_failure_window)
    return json_error(401, "invalid_token", headers=INVALID_BEARER)


def _outage(
    extension: Plurality, token: str, exc: UpstreamUnavailable, cfg: ConfigView, app: Flask
) -> Answer | BaseResponse:
    """``PLURALITY_ON_UPSTREAM_ERROR``: under ``"allow"``, Plurality's last "yes" for this
    token if younger than the grace period; otherwise 503."""
    last: Answer | None = None
    if cfg.on_upstream_error == "allow":
        try:
            last = extension.answers.cached(token, cfg.grace_period)
        except InvalidToken as refused:  # a "no" landed meanwhile
            return _refused(token, refused.reason)
    user_id = last.user.get("id") if last is not None else None
    signals.revalidation_failed.send(app, profile=None, reason=exc.reason, allowed=last is not None)
    if last is not None:
        log.info("Bearer token of user %s not confirmed (%s); let in (grace period)", user_id, exc.reason)
        return last
    log.info("Bearer token could not be checked (%s); answered 503", exc.reason)
    return json_error(503, "upstream_unavailable", retry_after=exc.retry_after or DEFAULT_RETRY_AFTER)


class Seen:
    """What this process knows of a bearer token it accepted before: its claims (decoded
    once, not on every request), its hash, and the revocation epoch it was last found
    not revoked under."""

    __slots__ = ("claims", "digest", "epoch", "exp")

    def __init__(self, claims: dict[str, Any], digest: str) -> None:
        self.claims = claims
        self.exp = int(claims["exp"])
        self.digest = digest
        self.epoch: str | None = None


def _read(token: str, app: Flask, cfg: ConfigView) -> Seen:
    """The token's claims, from this process's memory or decoded (never verified: only
    Plurality can); raise :class:`InvalidToken` for junk or an expired token."""
    remembered = get_state(app).bearer_tokens
    seen = remembered.get(token)
    if seen is None:
        seen = Seen(read_claims(token, max_length=cfg.max_token_length), token_hash(token))
        if len(remembered) >= _MAX_REMEMBERED:
            remembered.clear()
        remembered[token] = seen
    elif seen.exp <= time.time():
        del remembered[token]
        raise InvalidToken("The token has expired.", reason="expired")
    return seen


def _revoked(user_id: str, seen: Seen, app: Flask) -> bool:
    """Was ``revoke_user`` called for ``user_id`` at or after the token was issued?

    A bearer token has no session to remember a stamp in, so its ``iat`` is compared
    with the time in the user's stamp (a token issued in the second of the revocation is
    refused too). While the store-wide epoch is the one this token was last found good
    under, no stamp is read: an ``access`` on files, one read on Redis.
    """
    raw = epoch_since(seen.epoch, app)
    if raw is None or raw == seen.epoch:
        return False  # nobody revoked (in the last REVOCATION_TTL), or nobody since
    stamp = stamp_of(user_id, app)
    if stamp is not None and _issued_before(seen.claims, stamp):
        return True
    seen.epoch = raw  # the stamp was read after the epoch: see revocation.is_revoked
    return False


def _issued_before(claims: dict[str, Any], stamp: str) -> bool:
    revoked_at, _, _ = stamp.partition("-")
    iat = claims.get("iat")
    if not revoked_at.isdigit() or not isinstance(iat, int | float) or isinstance(iat, bool):
        return True  # cannot tell: refuse rather than let a revoked user in
    return iat <= int(revoked_at)


def default_interval(revalidate: Any, cfg: ConfigView) -> int:
    """``PLURALITY_BEARER_REVALIDATE``, or the route's ``revalidate=`` if that is stricter."""
    interval = cfg.bearer_revalidate
    if isinstance(revalidate, int) and not isinstance(revalidate, bool):
        return min(interval, revalidate)
    return interval
