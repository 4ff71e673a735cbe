"""Failed-login throttling, in the shared store: per client and per token.

One idea, :class:`Attempt`: a failed-login attempt that may reach Plurality. ``/login``
enters it around the whole check of the token; a bearer request hands it to
:meth:`.AnswerCache.lookup`, which enters it only around the one upstream call it
makes. Its counters are shared by every worker and machine that shares the sessions.

An attempt is counted *before* Plurality is asked (an atomic increment in the store),
then the count decides; an attempt that turns out not to be a failure (a good login,
an outage, a store failure) is taken back. So however many attempts run at once, on
however many workers, at most ``PLURALITY_LOGIN_MAX_FAILURES`` of them per window can
be failures that reached Plurality: reading the count first and adding to it after the
answer would let every concurrent attempt through.

Every read and write of the counters is in this module.
"""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType
from typing import Final

from flask import current_app

from . import signals
from .config import config
from .exceptions import InvalidToken, PluralityError, SessionStoreUnavailable
from .security import client_bucket
from .stores import get_store, key
from .tokens import token_hash

log = logging.getLogger("flask_plurality")

#: Seconds to wait when the store cannot say how long the window has left.
_MIN_WAIT: Final = 1


class TooManyAttempts(PluralityError):
    """Over the limit: Plurality was not asked. Answered 429 ``too_many_attempts`` with
    ``Retry-After: retry_after`` (what is left of the window, in seconds).

    Raised inside the single flight by the request that would have made the call, so
    every request sharing that call is refused with it."""

    reason = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed logins.")
        self.retry_after = max(_MIN_WAIT, retry_after)


def buckets(client: str, token: str) -> dict[str, str]:
    """The counters a login attempt is checked against: {who, for the log: store key}."""
    return {
        f"client {client}": key("fail-ip", client),
        "this token": key("fail-token", token_hash(token)),
    }


class Attempt:
    """A failed-login attempt about ``token`` that may reach Plurality.

    ``with attempt:`` counts it on every counter first, or raises :class:`TooManyAttempts`
    (nothing counted, nobody asked) when that takes one over the limit. On the way out
    a "no" (:class:`.InvalidToken`) stays counted; a "yes", an outage or any other error
    (a store failure) is taken back. Calling it returns itself, so it is also the
    ``attempt=`` of :meth:`.AnswerCache.lookup`. Enter it at most once.
    """

    __slots__ = ("asked", "counters", "kept")

    def __init__(self, token: str, client: str | None = None) -> None:
        #: {who, for the log: store key}: :func:`buckets` of the client and the token.
        self.counters = buckets(client_bucket() if client is None else client, token)
        #: Entered: this attempt went on to Plurality, counted.
        self.asked = False
        #: Its count stays: Plurality (or the token itself) said no.
        self.kept = False

    def __call__(self) -> Attempt:
        return self

    def __enter__(self) -> Attempt:
        wait = _reserve(self.counters)
        if wait is not None:
            raise TooManyAttempts(wait)
        self.asked = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            _release(self.counters)
        elif issubclass(kind, InvalidToken):
            self.kept = True  # a failure: it stays counted
        else:
            with contextlib.suppress(SessionStoreUnavailable):  # the error in flight is the answer
                _release(self.counters)

    def refused(self) -> None:
        """Count a refusal this attempt did not count itself (a junk or expired token, a
        remembered "no", another request's "no"); :class:`TooManyAttempts` when that
        takes the client or the token over the limit. Nothing more once counted."""
        if self.kept:
            return
        wait = _reserve(self.counters)
        if wait is not None:
            raise TooManyAttempts(wait)
        self.kept = True

    def check(self) -> None:
        """For an attempt answered by another request's call: :class:`TooManyAttempts`
        when the client or the token is at the limit already, counting nothing."""
        store = get_store()
        for who, name in self.counters.items():
            count, left = store.peek(name)
            if count >= config.login_max_failures:
                raise TooManyAttempts(_refusing(who, left))


def attempt(token: str, client: str | None = None) -> Attempt:
    """A failed-login attempt about ``token`` from ``client`` (default: this request's
    :func:`.client_bucket`). Building it touches no store; entering it does."""
    return Attempt(token, client)


def _reserve(counters: dict[str, str]) -> int | None:
    """Count this attempt on every counter first; seconds to wait (and nothing counted)
    when that takes one of them over the limit, ``None`` to go on and ask."""
    store = get_store()
    limit, window = config.login_max_failures, config.login_failure_window
    taken: list[str] = []
    for who, name in counters.items():
        count, left = store.incr(name, window)
        taken.append(name)
        if count > limit:
            for counted in taken:  # a refused attempt is no failure of its own
                store.decr(counted)
            return _refusing(who, left)
    return None


def _refusing(who: str, left: int) -> int:
    """Log and signal a refusal over the limit of ``who``'s counter; the seconds to wait."""
    log.warning("Too many failed Plurality logins from %s; refusing for %d s", who, left)
    scope = "client" if who.startswith("client") else "token"
    signals.throttled.send(current_app._get_current_object(), scope=scope)  # type: ignore[attr-defined]
    return max(_MIN_WAIT, left)


def _release(counters: dict[str, str]) -> None:
    """Take back an attempt counted by :func:`_reserve` that was not a failure."""
    store = get_store()
    for name in counters.values():
        store.decr(name)
