"""A least-recently-used map bounded in bytes, safe to share between threads.

What a process keeps in memory about sessions and tokens (the parse cache of stored
logins, the bearer tokens Plurality confirmed) must stay small whatever clients send:
a bound in entries alone lets an entry's size (claims, profiles) grow memory without
limit. Each entry is charged its :func:`size_of`; past the budget the least recently
used entries leave, one at a time, never the whole map at once. Every change holds
one lock and a read takes single steps of the ``OrderedDict``, so threads (gthread
workers, a threaded dev server) never see the map change under an eviction.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any, Final, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: What an entry costs beyond its value: the map's node, the key's share, the tuple.
ENTRY_OVERHEAD: Final = 200


def size_of(value: Any, _depth: int = 0) -> int:
    """The bytes ``value`` holds, counting what its dicts, lists and tuples contain (plain
    JSON types and objects with ``__slots__``), each object as often as it is reached."""
    size = sys.getsizeof(value)
    if _depth > 32:
        return size
    if isinstance(value, dict):
        return size + sum(size_of(k, _depth + 1) + size_of(v, _depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return size + sum(size_of(item, _depth + 1) for item in value)
    slots = getattr(type(value), "__slots__", None)
    if isinstance(slots, tuple) and not isinstance(value, str | bytes | int | float):
        return size + sum(size_of(getattr(value, name, None), _depth + 1) for name in slots)
    return size


class BoundedLRU(Generic[K, V]):
    """``key -> value``, at most ``max_bytes`` in all (each entry as charged by :meth:`put`),
    the least recently used evicted first."""

    __slots__ = ("_data", "_lock", "max_bytes", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: Bytes charged for the entries held now.
        self.size = 0
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or ``None``.

        Without the lock (it is on every protected request): each ``OrderedDict`` call
        is one step under the interpreter lock for keys hashed in C (strings), and an
        entry evicted between the two is simply not moved."""
        entry = self._data.get(key)
        if entry is None:
            return None
        try:  # noqa: SIM105 - contextlib.suppress costs a context manager per request
            self._data.move_to_end(key)
        except KeyError:
            pass  # evicted or popped meanwhile: what was read is still the value
        return entry[0]

    def holds(self, key: K, value: V) -> bool:
        """Is ``value`` itself what is kept under ``key``? (A dict lookup, no size counted.)"""
        entry = self._data.get(key)
        return entry is not None and entry[0] is value

    def put(self, key: K, value: V, cost: int) -> None:
        """Keep ``value`` under ``key``, charged ``cost`` bytes (plus :data:`ENTRY_OVERHEAD`),
        evicting the least recently used until the map fits; a value that alone is over
        the budget is not kept."""
        cost += ENTRY_OVERHEAD
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.size -= old[1]
            if cost > self.max_bytes:
                return
            self._data[key] = (value, cost)
            self.size += cost
            while self.size > self.max_bytes:
                _, (_, freed) = self._data.popitem(last=False)
                self.size -= freed

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, or ``None`` if it was not kept."""
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return None
            self.size -= entry[1]
            return entry[0]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.size = 0

    def values(self) -> list[V]:
        """The values held now, least recently used first (a copy)."""
        with self._lock:
            return [value for value, _ in self._data.values()]

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
