"""Failed-login throttling, in the shared store: per client and per token.

Counted before anything else at ``/login``, so that a throttled request never costs an
upstream call, and shared by every worker and machine that shares the sessions.

An attempt is counted *before* Plurality is asked (an atomic increment in the store),
then the count decides; an attempt that turns out not to be a failure (a good login,
an outage) is taken back. So however many attempts run at once, on however many
workers, at most ``PLURALITY_LOGIN_MAX_FAILURES`` of them per window can be failures
that reached Plurality: reading the count first and adding to it after the answer
would let every concurrent attempt through.
"""

from __future__ import annotations

import logging

from flask import current_app

from . import signals
from .config import config
from .stores import get_store, key
from .tokens import token_hash

log = logging.getLogger("flask_plurality")


def buckets(client: str, token: str) -> dict[str, str]:
    """The counters a login attempt is checked against: {who, for the log: store key}."""
    return {
        f"client {client}": key("fail-ip", client),
        "this token": key("fail-token", token_hash(token)),
    }


def reserve(counters: dict[str, str]) -> int | None:
    """Count this attempt on every counter first; seconds to wait (and nothing counted)
    when that takes one of them over the limit, ``None`` to go on and ask."""
    store = get_store()
    taken: list[str] = []
    for who, name in counters.items():
        count, left = store.incr(name, config.login_failure_window)
        taken.append(name)
        if count > config.login_max_failures:
            for counted in taken:  # a refused attempt is no failure of its own
                store.decr(counted)
            log.warning("Too many failed Plurality logins from %s; refusing for %d s", who, left)
            scope = "client" if who.startswith("client") else "token"
            signals.throttled.send(current_app._get_current_object(), scope=scope)  # type: ignore[attr-defined]
            return left
    return None


def release(counters: dict[str, str]) -> None:
    """Take back an attempt counted by :func:`reserve` that was not a failure."""
    store = get_store()
    for name in counters.values():
        store.decr(name)
