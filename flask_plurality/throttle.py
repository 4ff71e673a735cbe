"""Failed-login throttling, in the shared store: per client and per token.

Counted before anything else at ``/login``, so that a throttled request never costs an
upstream call, and shared by every worker and machine that shares the sessions.
"""

from __future__ import annotations

import logging

from .config import config
from .store import get_store, key
from .tokens import token_hash

log = logging.getLogger("flask_plurality")


def buckets(client: str, token: str) -> dict[str, str]:
    """The counters a login attempt is checked against: {who, for the log: store key}."""
    return {
        f"client {client}": key("fail-ip", client),
        "this token": key("fail-token", token_hash(token)),
    }


def refused_for(counters: dict[str, str]) -> int | None:
    """Seconds to wait when one of ``counters`` is at the limit; ``None`` to go on."""
    store = get_store()
    for who, name in counters.items():
        count, left = store.peek(name)
        if count >= config.login_max_failures:
            log.warning("Too many failed Plurality logins from %s; refusing for %d s", who, left)
            return left
    return None


def count_failure(counters: dict[str, str]) -> None:
    """One more failed login on each of ``counters``."""
    store = get_store()
    for name in counters.values():
        store.incr(name, config.login_failure_window)
