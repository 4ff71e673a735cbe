"""memcached through pymemcache (``Client``, ``PooledClient``, ``HashClient``).

Atomic by memcached's own commands: ``add`` for markers and new counters, ``incr`` and
``decr``, ``replace`` to write a session only while it exists. Every command is sent
with ``noreply=False`` whatever the client's default (pymemcache's is ``noreply``: the
call returns before memcached has the value, and fails silently), so a login is stored
before it answers, and a refused write is an error. ``TCP_NODELAY`` is turned on for the
client's new connections, so a write is not held back by Nagle's algorithm.
"""

from __future__ import annotations

import time
from typing import Any

from .base import ClientStore, PlainRarelyWritten, bounded, dumps, loads, store_errors_as_unavailable, unavailable_error

#: memcached reads a TTL above 30 days as a Unix time.
_RELATIVE_LIMIT = 30 * 86400


def is_pymemcache(client: Any) -> bool:
    return type(client).__module__.startswith("pymemcache")


def prefer_nodelay(client: Any) -> None:
    """Set ``no_delay`` on a pymemcache client for the connections it opens from now on."""
    if hasattr(client, "default_kwargs"):  # HashClient
        client.default_kwargs["no_delay"] = True
        for inner in getattr(client, "clients", {}).values():
            prefer_nodelay(inner)
    elif hasattr(client, "no_delay") and not client.no_delay:
        client.no_delay = True
        if getattr(client, "sock", None) is not None:
            client.close()  # reconnects with TCP_NODELAY on the next command


def _expire(ttl: int) -> int:
    return ttl if ttl <= _RELATIVE_LIMIT else int(time.time()) + ttl


class MemcachedStore(ClientStore, PlainRarelyWritten):
    """The extension's keys in memcached; with ``encode``, Flask-Session's sessions too."""

    shared = True

    def __init__(self, client: Any, **options: Any) -> None:
        super().__init__(client, **options)
        prefer_nodelay(client)

    def set(self, key: str, value: Any, ttl: float) -> None:
        with store_errors_as_unavailable():
            done = self.client.set(self.key_prefix + key, dumps(value), expire=bounded(ttl), noreply=False)
        if not done:
            raise unavailable_error("memcached refused a set")

    def delete(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.client.delete(self.key_prefix + key, noreply=False)  # False: it was not there

    def add(self, key: str, value: Any, ttl: float) -> bool:
        with store_errors_as_unavailable():
            return bool(self.client.add(self.key_prefix + key, dumps(value), expire=bounded(ttl), noreply=False))

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        name, window = self.key_prefix + key, bounded(ttl)
        with store_errors_as_unavailable():
            count = self.client.incr(name, 1, noreply=False)
            if count is None:  # no counter yet: start one (one process wins the add)
                until = time.time() + window
                if self.client.add(name, b"1", expire=window, noreply=False):
                    self.client.set(name + ":until", str(until).encode(), expire=window, noreply=False)
                    return 1, window
                count = self.client.incr(name, 1, noreply=False)
                if count is None:
                    raise unavailable_error("memcached lost a counter it had just created")
            until_raw = self.client.get(name + ":until")
        left = _seconds_left(until_raw, window)
        return int(count), left

    def decr(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.client.decr(self.key_prefix + key, 1, noreply=False)  # floors at 0; None if gone

    def peek(self, key: str) -> tuple[int, int]:
        name = self.key_prefix + key
        with store_errors_as_unavailable():
            values = self.client.get_many([name, name + ":until"])
        raw = values.get(name)
        if raw is None:
            return 0, 0
        try:
            count = int(raw)
        except (TypeError, ValueError):
            return 0, 0
        return count, _seconds_left(values.get(name + ":until"), 1)

    # -- Flask-Session's entries --------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """(session data or ``None``, the epoch's value): one ``get`` for both."""
        assert self._decode is not None
        names = [self.key_prefix + store_id] + ([self.key_prefix + epoch_key] if epoch_key else [])
        with store_errors_as_unavailable():
            values = self.client.get_many(names)
        raw = values.get(names[0])
        epoch = values.get(names[1]) if epoch_key else None
        return (self._decode(raw) if raw else None), loads(epoch)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        assert self._encode is not None
        data, name = self._encode(session), self.key_prefix + store_id
        with store_errors_as_unavailable():
            if only_if_present:  # NOT_STORED when it is gone: a logout won, nothing to do
                self.client.replace(name, data, expire=_expire(max(1, ttl)), noreply=False)
                return
            done = self.client.set(name, data, expire=_expire(max(1, ttl)), noreply=False)
        if not done:
            raise unavailable_error("memcached refused a session write")

    def delete_session(self, store_id: str) -> None:
        with store_errors_as_unavailable():
            self.client.delete(self.key_prefix + store_id, noreply=False)

    def sweep(self) -> None:
        """Nothing to do: every entry was written with an expiry, and memcached drops it."""


def _seconds_left(until_raw: Any, default: int) -> int:
    try:
        until = float(until_raw.decode() if isinstance(until_raw, bytes) else until_raw)
    except (AttributeError, TypeError, ValueError):
        return default
    return max(1, int(until - time.time() + 0.999))
