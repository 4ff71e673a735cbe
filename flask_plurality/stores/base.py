"""What every store implementation shares: TTL bounds, failure handling, the session writer."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Final, Protocol

from flask import current_app, has_app_context

from .. import signals
from ..exceptions import SessionStoreUnavailable

log = logging.getLogger("flask_plurality")

#: No key the extension writes lives longer than this (revocations, the longest-lived,
#: must outlive every session they concern; tokens live one day).
MAX_TTL: Final = 2 * 86400


def bounded(ttl: float) -> int:
    """A TTL in whole seconds, at least 1 and at most :data:`MAX_TTL`."""
    return max(1, min(int(ttl), MAX_TTL))


class SessionWriter(Protocol):
    """How a store writes Flask-Session's own entries, checking every outcome."""

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        """Write the session; with ``only_if_present``, only over an entry that is still
        stored (atomically: a concurrent delete wins), silently doing nothing otherwise."""
        ...

    def delete_session(self, store_id: str) -> None: ...


class RarelyWritten:
    """The revocation epoch's reads and writes where the backend has nothing cheaper than
    a plain ``get`` and ``set`` (every store but files). On Redis, memcached and SQL the
    epoch usually comes with the session anyway (``retrieve_session``)."""

    def get(self, key: str) -> Any:  # pragma: no cover - every store defines its own
        raise NotImplementedError

    def set(self, key: str, value: Any, ttl: float) -> None:  # pragma: no cover - as get
        raise NotImplementedError

    def get_rarely_written(self, key: str) -> Any:
        return self.get(key)

    def still_current(self, key: str, value: Any) -> bool:
        return False  # nothing cheaper than reading the value: the caller reads it

    def set_rarely_written(self, key: str, value: Any, ttl: float) -> None:
        self.set(key, value, ttl)


#: What the store is being used for, for ``store_failed``'s ``where``: the session
#: interface sets ``session_load`` / ``session_save`` while it loads or saves.
store_use: ContextVar[str] = ContextVar("plurality_store_use", default="extension")


def log_store_failure(exc: BaseException | str) -> None:
    """Log a store failure: its type and message (or what failed), never a value; and
    send ``store_failed`` (``where``: :data:`store_use`)."""
    if isinstance(exc, str):
        log.error("The session store failed: %s", exc)
    else:
        log.error("The session store failed: %s: %s", type(exc).__name__, exc)
    if has_app_context():
        signals.store_failed.send(current_app._get_current_object(), where=store_use.get())  # type: ignore[attr-defined]


def unavailable_error(exc: BaseException | str) -> SessionStoreUnavailable:
    """Log a store failure and build the error to raise for it."""
    log_store_failure(exc)
    return SessionStoreUnavailable("The session store is unavailable.")


@contextlib.contextmanager
def store_errors_as_unavailable() -> Iterator[None]:
    """Any failure of the store client becomes :class:`SessionStoreUnavailable` (a 503)."""
    try:
        yield
    except SessionStoreUnavailable:
        raise
    except Exception as exc:
        raise unavailable_error(exc) from None


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(raw: Any) -> Any:
    """A stored JSON value, ``None`` for nothing or junk."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None
