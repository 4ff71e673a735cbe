"""The shared answer cache: ask Plurality about a token as rarely as possible.

Answers live in the session store, so every worker and machine sees them: a "no" is
reused until the token's ``exp`` (a revoked token is not asked about again and again);
a "yes" is written only for interval revalidation, lives min(interval, exp), and is
reused while younger than the interval. Entries are keyed by the client id and a hash
of the token, never the token.

Concurrent askers in one process share one upstream call (:class:`.SingleFlight`);
across processes, an interval revalidation first takes an **ask lock** in the store,
and a process that finds it taken waits for the holder's answer instead of asking too.
The caller's ``attempt`` is entered only around that one call, by whoever makes it:
bearer requests count it in the failed-login throttle there (a :class:`.throttle.Attempt`),
once per call, not once per request sharing it.

A token with no session behind it (a bearer token) is also *read* here
(:meth:`AnswerCache.read`), decoded again until Plurality confirmed it and then kept in
a bounded memory of this process (:meth:`AnswerCache.remember`), and under ``PLURALITY_ON_UPSTREAM_ERROR = "allow"`` the
cache's last "yes" is its evidence during an outage (:meth:`AnswerCache.lookup_or_last`).

Freshness is judged when a request *arrives*: it accepts an answer that was at most
``interval`` old then, or asked after it, however old that answer is by the time it
lands. When Plurality answers slower than the interval, judging at landing would
make every waiter refuse the answer it waited for and ask again, chaining calls past
``PLURALITY_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import wraps
from typing import Any, Final, NamedTuple, TypeVar, cast

from flask import Flask, current_app

from . import signals
from .client import PluralityClient, Upstream, observe
from .config import ConfigView, config
from .exceptions import InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .lru import size_of
from .profile import Profile
from .singleflight import SingleFlight
from .state import get_state
from .stores import Store, get_store, key
from .tokens import read_claims, token_hash
from .tracing import observed_answer, validate_upstream

log = logging.getLogger("flask_plurality")

#: Seconds between two looks at the answer cache while another process asks (jittered).
_POLL: Final = (0.02, 0.05)
#: Longest a "no" is remembered, whatever the token's ``exp`` says (a forged ``exp`` may be far off).
NO_ANSWER_TTL: Final = 86400
#: Below this much time left, asking upstream is not worth starting: it is an outage.
_MIN_ASK_BUDGET: Final = 0.1


class Answer(NamedTuple):
    """Plurality's ``user`` for a token, when Plurality gave it, and whether it came from the cache."""

    user: dict[str, Any]
    at: float
    cached: bool

    def profile(self, claims: dict[str, Any]) -> Profile:
        """The profile this answer stands for, with the token's ``claims`` (its expiry)."""
        return Profile.from_upstream(self.user, claims)


class Seen:
    """What this process knows of a token it read before: its claims (decoded once, not
    on every request), its hash, and the revocation epoch it was last found not revoked
    under (:func:`.revocation.token_revoked`)."""

    __slots__ = ("claims", "digest", "epoch", "exp")

    def __init__(self, claims: dict[str, Any], digest: str) -> None:
        self.claims = claims
        self.exp = int(claims["exp"])
        self.digest = digest
        self.epoch: str | None = None


def upstream_settings(cfg: ConfigView = config) -> Upstream:
    """Where and how to call Plurality, from the app's config."""
    return Upstream(
        api_url=cfg.api_url,
        client_id=cfg.client_id,
        client_secret=cfg.client_secret,
        method=cfg.validate_method,
        timeout=cfg.timeout,
        verify_tls=cfg.verify_tls,
        breaker_threshold=cfg.breaker_threshold,
        breaker_cooldown=cfg.breaker_cooldown,
    )


F = TypeVar("F", bound=Callable[..., Any])


def _served(produce: F) -> F:
    """Send :data:`.signals.answer_served` for each answer ``produce`` gives (a "yes" or
    a "no", from the cache or not, or an outage); a failure that is no answer at all
    (the store down, no credentials) is not one."""

    def served(outcome: str, reason: str | None, cached: bool) -> None:
        if outcome != "error":
            signals.answer_served.send(current_app._get_current_object(), cached=cached, outcome=outcome)  # type: ignore[attr-defined]

    @wraps(produce)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return observe(lambda: produce(*args, **kwargs), served)

    return cast(F, wrapper)


class AnswerCache:
    """One per extension object: its upstream client and its in-process single flight."""

    def __init__(self, client: PluralityClient) -> None:
        self.client = client
        self._flight: SingleFlight[Answer] = SingleFlight()

    def cached(self, token: str, interval: int, *, digest: str | None = None) -> Answer | None:
        """The cached "yes" for ``token`` if younger than ``interval`` seconds, without
        asking anyone; raises :class:`InvalidToken` for a remembered "no". ``digest``:
        the token's :func:`.token_hash`, when the caller has it already."""
        return _usable(get_store().get(key("answer", answer_name(token, digest))), interval)

    def read(self, token: str, app: Flask, max_length: int) -> Seen:
        """The token's claims, from this process's memory or decoded (never verified: only
        Plurality can); raise :class:`InvalidToken` for junk or an expired token. A token
        read for the first time is not remembered here: see :meth:`remember`."""
        remembered = get_state(app).bearer_tokens
        seen = remembered.get(token)
        if seen is None:
            return Seen(read_claims(token, max_length=max_length), token_hash(token))
        if seen.exp <= time.time():
            remembered.pop(token)
            raise InvalidToken("The token has expired.", reason="expired")
        return seen

    def remember(self, token: str, seen: Seen, app: Flask) -> None:
        """Keep what :meth:`read` found of ``token`` once Plurality said yes to it (asked
        now or through the cache), so its next request decodes nothing. Only then: a
        client's junk, which Plurality never confirms, costs this process no memory, and
        what is remembered is bounded in bytes (:data:`.state.BEARER_MEMORY_BYTES`)."""
        remembered = get_state(app).bearer_tokens
        if not remembered.holds(token, seen):  # kept already (read found it): not sized again
            remembered.put(token, seen, size_of(token) + size_of(seen))

    def forget(self, token: str, app: Flask) -> None:
        """Plurality (or the cache) refused ``token`` now: keep nothing of it."""
        get_state(app).bearer_tokens.pop(token)

    def lookup_or_last(
        self,
        token: str,
        exp: int,
        interval: int,
        grace: int,
        *,
        app: Flask,
        attempt: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> Answer:
        """:meth:`lookup` for a token with no session behind it. ``grace`` > 0 (the grace
        period under ``"allow"``): a fresh "yes" stays in the cache that long, and when
        Plurality cannot answer, the cache's last "yes" younger than that is the answer.
        ``revalidation_failed`` tells the app of every outage either way."""
        try:
            return self.lookup(token, exp, interval, grace, attempt=attempt)
        except UpstreamUnavailable as exc:
            outage = exc
        last = self.cached(token, grace) if grace else None  # a "no" that landed meanwhile raises
        signals.revalidation_failed.send(app, profile=None, reason=outage.reason, allowed=last is not None)
        if last is None:
            log.info("Bearer token could not be checked (%s); answered 503", outage.reason)
            raise outage
        log.info(
            "Bearer token of user %s not confirmed (%s); let in (grace period)", last.user.get("id"), outage.reason
        )
        return last

    @_served
    @observed_answer
    def lookup(
        self,
        token: str,
        exp: int,
        interval: int = 0,
        keep: int = 0,
        *,
        attempt: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> Answer:
        """Plurality's answer for ``token`` (in an app context).

        ``interval`` 0 wants an answer asked for after this call began (a login, or
        "revalidate always"); ``N`` accepts a cached "yes" younger than N seconds.
        ``keep`` makes a fresh "yes" stay in the cache at least that long (bearer tokens
        under ``PLURALITY_ON_UPSTREAM_ERROR = "allow"``: the grace period's evidence).
        ``attempt()`` is entered around the call to Plurality, right before it, and only
        by the caller that makes it (the single flight's leader, the ask lock's holder);
        an answer from the cache or from another caller's call enters nothing. If
        entering it raises, no call is made and that exception is the outcome of every
        caller sharing the flight.
        Raises :class:`InvalidToken` for a "no", :class:`UpstreamUnavailable` when
        there is no answer to be had.
        """
        name = answer_name(token)
        answer_key = key("answer", name)
        store = get_store()
        since = time.time() - interval  # a "yes" asked after this is fresh enough for this request
        hit = _usable(store.get(answer_key), interval, since)
        if hit is not None:
            return hit
        upstream = upstream_settings()  # only now: a cache hit need not build it

        def ask(budget: Upstream) -> Answer:
            at = time.time()  # when we asked: the answer is no fresher than that
            try:
                with attempt():
                    user = validate_upstream(self.client, token, budget)
            except InvalidToken as exc:
                # Kept until the token's exp, but never more than a day: a forged token
                # with an exp a year away must not leave a year-long entry.
                ttl = min(math.ceil(exp - time.time()), NO_ANSWER_TTL)
                store.set(answer_key, {"ok": False, "reason": exc.reason}, ttl)
                raise
            if interval or keep:
                ttl = min(max(interval, keep), math.ceil(exp - at))
                store.set(answer_key, {"ok": True, "at": at, "user": user}, ttl)
            return Answer(user, at, cached=False)

        def call() -> Answer:
            # Checked again inside the flight: a caller that missed the cache just before
            # the previous flight landed must not start a second upstream call.
            hit = _usable(store.get(answer_key), interval, since)
            if hit is not None:
                return hit
            if not interval or not store.shared:
                # interval 0 ("always") wants an answer asked for after this request
                # arrived, and writes no "yes" for others to wait on.
                return ask(upstream)
            return _ask_once_across_processes(store, answer_key, key("asking", name), interval, since, upstream, ask)

        # "always" callers share only flights that asked upstream fresh, never one that may
        # return an interval caller's cached answer.
        flight = f"{upstream.api_url} {answer_key} {'fresh' if not interval else 'cached'}"
        return self._flight.do(flight, call, wait=upstream.timeout + 1)


def answer_name(token: str, digest: str | None = None) -> str:
    """The answer cache's name for ``token`` (in an app context): the client id, which
    Plurality deployment answered (a stand-in and the real API share the demo client id),
    and a hash of the token, never the token itself."""
    return f"{config.client_id}:{_deployment(config.api_url)}:{digest or token_hash(token)}"


@functools.lru_cache(maxsize=16)
def _deployment(api_url: str) -> str:
    """A short name for ``PLURALITY_API_URL`` in store keys."""
    return hashlib.sha256(api_url.encode()).hexdigest()[:8]


def _ask_once_across_processes(
    store: Store,
    answer_key: str,
    lock: str,
    interval: int,
    since: float,
    upstream: Upstream,
    ask: Callable[[Upstream], Answer],
) -> Answer:
    """Ask upstream only if no other process is asking about this token right now.

    The holder of the ask ``lock`` asks and stores the answer; the others poll the
    answer cache and take any answer asked after ``since``. If the holder gives up
    without one (an outage, or an answer too old for this request), one waiter takes
    the lock and asks with what is left of its own budget: a request never spends more
    than ``PLURALITY_TIMEOUT`` here in all, and when that is spent it is an outage (the
    outage policy decides), as for a waiter of the in-process single flight. Such a
    call, cut short by this request's deadline, does not count against the breaker
    when it times out (:attr:`.Upstream.budget`): the holder's call, which had the whole
    timeout, tells the breaker whether Plurality itself is slow.
    """
    deadline = time.monotonic() + upstream.timeout
    ttl = math.ceil(upstream.timeout) + 1  # outlives the holder's call; a crashed holder's expires
    floor = min(_MIN_ASK_BUDGET, upstream.timeout / 2)
    budget = upstream
    while True:
        if store.add(lock, 1, ttl):
            try:
                # The previous holder may have stored its answer and let go just now.
                hit = _usable(store.get(answer_key), interval, since)
                if hit is not None:
                    return hit
                return ask(budget)
            finally:
                with contextlib.suppress(SessionStoreUnavailable):  # logged; the lock expires anyway
                    store.delete(lock)
        hit = _wait_for_answer(store, answer_key, lock, interval, since, deadline)
        if hit is not None:
            return hit
        left = deadline - time.monotonic()
        budget = dataclasses.replace(upstream, budget=left)
        if left < floor:
            raise UpstreamUnavailable("Another worker's call to Plurality ran out of time.", reason="timeout")


def _usable(entry: Any, interval: int, since: float | None = None) -> Answer | None:
    """A usable answer-cache entry: raise for a remembered "no"; a "yes" asked after
    ``since`` (by default: younger than ``interval`` now), never one from the future."""
    if not isinstance(entry, dict):
        return None
    if entry.get("ok") is False:
        refusal = InvalidToken("Plurality refused the token.", reason=str(entry.get("reason") or "rejected"))
        refusal.cached = True
        raise refusal
    at, user = entry.get("at"), entry.get("user")
    if (
        interval
        and isinstance(at, int | float)
        and isinstance(user, dict)
        and isinstance(user.get("id"), str)
        and (time.time() - interval if since is None else since) < at <= time.time()
    ):
        return Answer(user, float(at), cached=True)
    return None


def _wait_for_answer(
    store: Store, answer_key: str, lock: str, interval: int, since: float, deadline: float
) -> Answer | None:
    """Poll the answer cache while another process holds ``lock``: its answer (a "no"
    raises), or ``None`` once the lock is gone without one or ``deadline`` passes."""
    while True:
        hit = _usable(store.get(answer_key), interval, since)
        if hit is not None:
            return hit
        left = deadline - time.monotonic()
        if left <= 0 or store.get(lock) is None:
            # Gone: the answer may have landed between the two reads.
            return _usable(store.get(answer_key), interval, since) if left > 0 else None
        time.sleep(min(left, random.uniform(*_POLL)))
