"""Redis (and what speaks its protocol: Valkey, KeyDB, clients from Redis Sentinel).

Atomic by the server's own commands: ``SET NX`` for markers, ``SET XX`` to write a
session only while it exists, ``INCR`` inside ``MULTI`` for counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import ClientStore, PlainRarelyWritten, bounded, dumps, loads, store_errors_as_unavailable, unavailable_error

if TYPE_CHECKING:
    from redis import Redis

# Take one back from a counter that still exists (a plain DECR would create a key
# without expiry when the window just ended); one that reaches zero is deleted.
_DECR = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
local left = redis.call('decr', KEYS[1])
if left <= 0 then redis.call('del', KEYS[1]) end
return left
"""


class RedisStore(ClientStore, PlainRarelyWritten):
    """The extension's keys in Redis; with ``encode``, Flask-Session's sessions too."""

    shared = True
    client: Redis

    def set(self, key: str, value: Any, ttl: float) -> None:
        with store_errors_as_unavailable():
            done = self.client.set(self.key_prefix + key, dumps(value), ex=bounded(ttl))
        if not done:
            raise unavailable_error("Redis did not confirm a SET")

    def delete(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.client.delete(self.key_prefix + key)

    def add(self, key: str, value: Any, ttl: float) -> bool:
        with store_errors_as_unavailable():
            return bool(self.client.set(self.key_prefix + key, dumps(value), nx=True, ex=bounded(ttl)))

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        name = self.key_prefix + key
        with store_errors_as_unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(name, 0, nx=True, ex=bounded(ttl))  # the window starts with the first count
            pipe.incr(name)
            pipe.ttl(name)
            _, count, left = pipe.execute()
        return int(count), max(1, int(left))

    def decr(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.client.eval(_DECR, 1, self.key_prefix + key)

    def peek(self, key: str) -> tuple[int, int]:
        name = self.key_prefix + key
        with store_errors_as_unavailable():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(name)
            pipe.ttl(name)
            raw, left = pipe.execute()
        if raw is None:
            return 0, 0
        try:
            return int(raw), max(int(left), 1)
        except ValueError:
            return 0, 0

    # -- Flask-Session's entries --------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """(session data or ``None``, the epoch's value): one MGET for both."""
        assert self._decode is not None
        with store_errors_as_unavailable():
            if epoch_key is None:
                raw, epoch = self.client.get(self.key_prefix + store_id), None
            else:
                raw, epoch = self.client.mget([self.key_prefix + store_id, self.key_prefix + epoch_key])
        return (self._decode(raw) if raw else None), loads(epoch)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        assert self._encode is not None
        data = self._encode(session)
        with store_errors_as_unavailable():
            done = self.client.set(self.key_prefix + store_id, data, ex=max(1, ttl), xx=only_if_present)
        if not done and not only_if_present:
            raise unavailable_error("Redis did not confirm a session write")

    def delete_session(self, store_id: str) -> None:
        with store_errors_as_unavailable():
            self.client.delete(self.key_prefix + store_id)

    def sweep(self) -> None:
        """Nothing to do: every key was written with an expiry, and Redis drops it."""


def refuse_cluster(client: Any) -> str | None:
    """Why ``client`` cannot hold the sessions, or ``None``: Flask-Session 0.8 replaces
    anything that is not a ``redis.Redis`` with ``Redis()`` on localhost, silently."""
    try:
        from redis import Redis
    except ImportError:  # pragma: no cover - the redis backend needs it anyway
        return None
    if client is None or isinstance(client, Redis):
        return None
    kind = f"{type(client).__module__}.{type(client).__qualname__}"
    if "cluster" in kind.lower():
        return (
            f"SESSION_REDIS is a {kind}: Redis Cluster is not supported (Flask-Session 0.8 would "
            "silently use Redis() on localhost instead). Use a redis.Redis client of one primary, "
            "or redis.sentinel.Sentinel(...).master_for(...) for failover."
        )
    return (
        f"SESSION_REDIS is a {kind}, not a redis.Redis client: Flask-Session 0.8 would silently "
        "use Redis() on localhost instead. Pass redis.Redis(...) or Sentinel(...).master_for(...)."
    )
