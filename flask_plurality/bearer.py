"""``Authorization: Bearer <pluralityToken>``: clients that hold no session cookie.

A mobile app, a CLI or a frontend on another site sends the widget's token with every
request. Each such request is judged on its own, like a login that stores nothing (the
decorator detaches its session first): the token is read locally (junk and expired
tokens never reach Plurality), Plurality's answer comes through the shared answer cache
(``PLURALITY_BEARER_REVALIDATE``, single flight, breaker, the grace period), failures
count in the login throttle (:class:`.throttle.Attempt`: a call to Plurality is counted
before it is made, by the one request that makes it), and ``revoke_user`` refuses tokens
issued before it (:func:`.revocation.token_revoked`). This module reads the header,
asks those, and turns their answer into the response.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Flask, Request
from werkzeug.wrappers import Response as BaseResponse

from . import throttle
from .exceptions import InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .logins import login_refusal
from .responses import bearer_refused, store_unavailable, too_many_attempts, upstream_unavailable
from .revocation import token_revoked

if TYPE_CHECKING:
    from .config import ConfigView
    from .extension import Plurality
    from .profile import Profile

log = logging.getLogger("flask_plurality")


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
    try:
        profile = _confirmed(extension, token, interval, app, cfg)
    except throttle.TooManyAttempts as exc:
        return too_many_attempts(exc.retry_after)
    except InvalidToken as exc:
        log.info("Bearer token refused: %s", exc.reason)
        return bearer_refused()
    except UpstreamUnavailable as exc:
        return upstream_unavailable(exc.retry_after)
    except SessionStoreUnavailable:
        return store_unavailable()
    if profile is None:  # revoked: the code tells a page to sign out of the widget, as /login's does
        return bearer_refused("token_revoked")
    refusal = login_refusal(extension, profile)  # a gate must not be walked around through the API
    if refusal is not None:
        return refusal
    return profile


def _confirmed(extension: Plurality, token: str, interval: int, app: Flask, cfg: ConfigView) -> Profile | None:
    """The profile, ``None`` for a revoked user; raises what :func:`authenticate` answers.

    Whoever calls Plurality counts the call in the throttle first, as ``/login`` does;
    the requests sharing that call (a page's twenty API calls with one token) count once,
    so a burst is not refused for its size. A request answered by another's call is
    still refused while its client or token is over the limit, and a refusal the call
    did not count (junk, expired, a remembered "no") counts now.
    """
    answers = extension.answers
    attempt: throttle.Attempt | None = None  # made once Plurality's answer is needed
    try:
        seen = answers.read(token, app, cfg.max_token_length)
        answer = answers.cached(token, interval, digest=seen.digest) if interval else None
        if answer is None:
            attempt = throttle.attempt(token)
            grace = cfg.grace_period if cfg.on_upstream_error == "allow" else 0
            answer = answers.lookup_or_last(token, seen.exp, interval, grace, app=app, attempt=attempt)
            if not attempt.asked:
                attempt.check()  # looked at now: meanwhile that call's own count is in the counters
    except InvalidToken as exc:
        refused = exc
        answers.forget(token, app)  # confirmed once, refused now (revoked upstream, expired)
    else:
        profile = answer.profile(seen.claims)
        if token_revoked(profile.id, seen, app):
            return None
        answers.remember(token, seen, app)  # Plurality said yes: only now kept in memory
        return profile
    (attempt or throttle.attempt(token)).refused()  # outside the except: no chained error
    raise refused


def default_interval(revalidate: Any, cfg: ConfigView) -> int:
    """``PLURALITY_BEARER_REVALIDATE``, or the route's ``revalidate=`` if that is stricter."""
    interval = cfg.bearer_revalidate
    if isinstance(revalidate, int) and not isinstance(revalidate, bool):
        return min(interval, revalidate)
    return interval
