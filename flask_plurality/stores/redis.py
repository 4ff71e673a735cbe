"""Redis (and what speaks its protocol: Valkey, KeyDB, clients from Redis Sentinel, and
Redis Cluster through ``redis.cluster.RedisCluster``).

Atomic by the server's own commands: ``SET NX`` for markers, ``SET XX`` to write a
session only while it exists, a Lua script of one key for counters. Every command and
script touches one key, or keys of one hash slot, so a cluster never answers
``CROSSSLOT`` (the one read of two keys, the session with the revocation epoch, is one
``MGET`` on a single Redis and a pipeline of two ``GET``\\s on a cluster).

A logout and a revocation must survive a failover: Redis replicates asynchronously, so
a delete acknowledged by a primary that dies a moment later would come back on the
promoted replica. Where the deployment has replicas (``PLURALITY_REPLICA_ACKS``), such
a write is followed on the same connection by ``WAIT``, and fails (a 503) when no
replica acknowledges it within ``PLURALITY_REPLICA_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from .base import (
    ClientStore,
    PlainRarelyWritten,
    bounded,
    dumps,
    lasting_deletes,
    loads,
    store_errors_as_unavailable,
    unavailable_error,
)

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import ClusterNode, RedisCluster

# A counter's window starts with its first count; one round trip, one key.
_INCR = """
redis.call('set', KEYS[1], 0, 'NX', 'EX', ARGV[1])
local count = redis.call('incr', KEYS[1])
return {count, redis.call('ttl', KEYS[1])}
"""

# Take one back from a counter that still exists (a plain DECR would create a key
# without expiry when the window just ended); one that reaches zero is deleted.
_DECR = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
local left = redis.call('decr', KEYS[1])
if left <= 0 then redis.call('del', KEYS[1]) end
return left
"""

#: Redirections a lasting write follows on a cluster (a slot moving while it runs).
_REDIRECTS = 5


def is_cluster(client: Any) -> bool:
    """Is ``client`` a ``redis.cluster.RedisCluster``?"""
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - the redis backend needs it anyway
        return False
    return isinstance(client, RedisCluster)


def is_sentinel(client: Any) -> bool:
    """Is ``client`` one of ``Sentinel(...).master_for(...)``'s?"""
    from redis.sentinel import SentinelConnectionPool

    return isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool)


def replica_acks(setting: Any, client: Any) -> int:
    """How many replicas must acknowledge a logout or a revocation: the setting's number,
    or for ``"auto"`` one where the deployment is made for failover (a Sentinel client, a
    cluster client), none on a single Redis. Not guessed from the replicas a cluster
    lists: Redis leaves a replica out of ``CLUSTER SLOTS`` until it has replicated a
    first write, so a cluster just started would look like one without replicas."""
    if setting != "auto":
        return int(setting)
    return 1 if is_cluster(client) or is_sentinel(client) else 0


class RedisStore(ClientStore, PlainRarelyWritten):
    """The extension's keys in Redis; with ``encode``, Flask-Session's sessions too."""

    shared = True
    client: Redis | RedisCluster

    def __init__(self, client: Any, *, acks: int = 0, acks_timeout: float = 0.5, **options: Any) -> None:
        super().__init__(client, **options)
        #: Replicas that must acknowledge a lasting write (0: none, no ``WAIT``).
        self.acks = acks
        #: Longest a lasting write waits for them, in seconds.
        self.acks_timeout = acks_timeout
        self.cluster = is_cluster(client)

    def set(self, key: str, value: Any, ttl: float) -> None:
        with store_errors_as_unavailable():
            done = self.client.set(self.key_prefix + key, dumps(value), ex=bounded(ttl))
        if not done:
            raise unavailable_error("Redis did not confirm a SET")

    def set_lasting(self, key: str, value: Any, ttl: float) -> None:
        name = self.key_prefix + key
        if not self._lasting(name, "SET", name, dumps(value), "EX", bounded(ttl)):
            raise unavailable_error("Redis did not confirm a SET")

    def set_rarely_written(self, key: str, value: Any, ttl: float) -> None:
        """The revocation epoch: written by ``revoke_user`` only, so a lasting write."""
        self.set_lasting(key, value, ttl)

    def delete(self, key: str) -> None:
        with store_errors_as_unavailable():
            self.client.delete(self.key_prefix + key)

    def add(self, key: str, value: Any, ttl: float) -> bool:
        with store_errors_as_unavailable():
            return bool(self.client.set(self.key_prefix + key, dumps(value), nx=True, ex=bounded(ttl)))

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        with store_errors_as_unavailable():
            count, left = self.client.eval(_INCR, 1, self.key_prefix + key, bounded(ttl))
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

    # -- writes a failover must not undo ------------------------------------------------

    def _lasting(self, name: str, *command: Any) -> Any:
        """Run ``command`` (a write of the one key ``name``) on the key's primary; with
        :attr:`acks`, then ``WAIT`` on the same connection (``WAIT`` counts the writes
        of its own connection). The command's answer; raises when too few replicas
        acknowledged in time."""
        client: Any = self.client  # redis-py's cluster client is untyped
        with store_errors_as_unavailable():
            if self.acks <= 0:
                return client.execute_command(*command)
            if self.cluster:
                result, acked = self._on_cluster_primary(name, command)
            else:
                pipe = self.client.pipeline(transaction=False)
                pipe.execute_command(*command)
                pipe.execute_command("WAIT", self.acks, self._wait_ms())
                result, acked = pipe.execute()
        if int(acked) < self.acks:
            raise unavailable_error(
                f"no replica acknowledged a logout or revocation within {self.acks_timeout:g} s (WAIT {self.acks}): "
                "answered 503 rather than keep what a failover could undo"
            )
        return result

    def _wait_ms(self) -> int:
        return max(1, int(self.acks_timeout * 1000))  # WAIT n 0 would wait forever

    def _on_cluster_primary(self, name: str, command: tuple[Any, ...]) -> tuple[Any, Any]:
        """``command`` and ``WAIT`` in one pipeline on the primary of ``name``'s slot,
        following MOVED (a slot that moved: the map is read again) and ASK (a slot being
        migrated: ``ASKING`` on the node that imports it)."""
        from redis.exceptions import AskError, ConnectionError, MovedError, TimeoutError, TryAgainError

        client: Any = self.client
        asking: ClusterNode | None = None
        for _ in range(_REDIRECTS):
            node = asking if asking is not None else client.get_node_from_key(name)
            pipe = client.get_redis_connection(node).pipeline(transaction=False)
            if asking is not None:
                pipe.execute_command("ASKING")
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", self.acks, self._wait_ms())
            asking = None
            try:
                *_, result, acked = pipe.execute()
            except MovedError:
                client.nodes_manager.initialize()
                continue
            except AskError as exc:
                asking = client.get_node(host=exc.host, port=exc.port)
                if asking is None:
                    client.nodes_manager.initialize()
                continue
            except TryAgainError:
                time.sleep(0.05)
                continue
            except (ConnectionError, TimeoutError):
                # The primary may be gone: read the map again for the next request.
                with contextlib.suppress(Exception):
                    client.nodes_manager.initialize()
                raise
            return result, acked
        raise unavailable_error("Redis Cluster kept redirecting a write (a slot migration that does not settle)")

    # -- Flask-Session's entries --------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """(session data or ``None``, the epoch's value): one MGET for both; on a
        cluster, where they live in different slots, one pipeline of two GETs."""
        assert self._decode is not None
        name = self.key_prefix + store_id
        with store_errors_as_unavailable():
            if epoch_key is None:
                raw, epoch = self.client.get(name), None
            elif self.cluster:
                pipe = self.client.pipeline(transaction=False)
                pipe.get(name)
                pipe.get(self.key_prefix + epoch_key)
                raw, epoch = pipe.execute()
            else:
                raw, epoch = self.client.mget([name, self.key_prefix + epoch_key])
        return (self._decode(raw) if raw else None), loads(epoch)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        assert self._encode is not None
        data = self._encode(session)
        with store_errors_as_unavailable():
            done = self.client.set(self.key_prefix + store_id, data, ex=max(1, ttl), xx=only_if_present)
        if not done and not only_if_present:
            raise unavailable_error("Redis did not confirm a session write")

    def delete_session(self, store_id: str) -> None:
        """A logout, an ended session, an id replaced: a lasting delete (but for the
        anonymous session a login replaces: :data:`.base.lasting_deletes`)."""
        name = self.key_prefix + store_id
        if lasting_deletes.get():
            self._lasting(name, "DEL", name)
            return
        with store_errors_as_unavailable():
            self.client.delete(name)

    def sweep(self) -> None:
        """Nothing to do: every key was written with an expiry, and Redis drops it."""


def refuse_client(client: Any) -> str | None:
    """Why ``client`` cannot hold the sessions, or ``None``: Flask-Session 0.8 replaces
    anything that is not a ``redis.Redis`` with ``Redis()`` on localhost, silently (the
    shim keeps a ``RedisCluster``: :meth:`.flask_session_shim._FlaskSessionShim.keep_client`)."""
    try:
        from redis import Redis
    except ImportError:  # pragma: no cover - the redis backend needs it anyway
        return None
    if client is None or isinstance(client, Redis) or is_cluster(client):
        return None
    kind = f"{type(client).__module__}.{type(client).__qualname__}"
    return (
        f"SESSION_REDIS is a {kind}, not a redis.Redis client: Flask-Session 0.8 would silently use "
        "Redis() on localhost instead. Pass redis.Redis(...), Sentinel(...).master_for(...) or "
        "redis.cluster.RedisCluster(...)."
    )
