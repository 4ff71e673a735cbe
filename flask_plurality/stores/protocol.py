"""The backend protocol: everything the extension and the session guard ask of a store.

One class per backend family implements all of it (:mod:`flask_plurality.stores`);
nothing in the package asks a store whether it has a method. A backend with nothing
cheaper than the plain way still writes that plain way down (``retrieve_session`` reads
the session, then the epoch; ``sweep`` does nothing where the backend expires keys
itself), so a reader sees in one class what each operation costs on that backend.
"""

from __future__ import annotations

from typing import Any, Final, Protocol


class _Unread:
    """The type of :data:`UNREAD`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNREAD"


#: ``retrieve_session``'s epoch when the store did not read it with the session, because
#: it has a cheaper check for the request to make later (:meth:`Store.still_current`).
UNREAD: Final = _Unread()


class Store(Protocol):
    """What the extension needs from a store; keys arrive already prefixed.

    Every write and delete either happens or raises :class:`~flask_plurality.SessionStoreUnavailable`
    (a backend call that *reports* failure is a failure too), and every key gets a TTL
    of at most :data:`~flask_plurality.stores.MAX_TTL`. Values of the extension's own
    keys are plain JSON types.
    """

    #: ``True`` when every worker and machine sees the same store.
    shared: bool

    # -- the extension's own keys (answers, ask locks, throttles, revocations) ----------

    def get(self, key: str) -> Any:
        """The value of ``key``; ``None`` when it is absent, expired or unreadable."""
        ...

    def set(self, key: str, value: Any, ttl: float) -> None:
        """Write ``key`` for ``ttl`` seconds (at most :data:`~flask_plurality.stores.MAX_TTL`)."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; nothing to delete is no error."""
        ...

    def set_lasting(self, key: str, value: Any, ttl: float) -> None:
        """:meth:`set` for a write that a failover must not undo (a revocation's stamp):
        where the backend replicates asynchronously (Redis with replicas), it returns once
        a replica has it, and raises when none acknowledges in time."""
        ...

    def add(self, key: str, value: Any, ttl: float) -> bool:
        """Set ``key`` only if it is absent (or expired), atomically across every process
        sharing the store; ``True`` if this call set it (the cross-process ask lock)."""
        ...

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        """Add one to a counter, atomically; its window of ``ttl`` seconds starts at its
        first count. Return (count after this call, seconds left in the window)."""
        ...

    def decr(self, key: str) -> None:
        """Take one back from a counter (an attempt counted in advance that did not fail)."""
        ...

    def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of a counter, (0, 0) when there is none."""
        ...

    # -- the rarely written: the revocation epoch, read on every protected request -----

    def get_rarely_written(self, key: str) -> Any:
        """:meth:`get` for a key read on every protected request and written rarely:
        backends may answer it from a cheaper check."""
        ...

    def still_current(self, key: str, value: Any) -> bool:
        """Does ``key`` (written by :meth:`set_rarely_written`) still hold ``value``
        (``None``: nothing)? ``False`` when unsure; never ``True`` after a
        :meth:`set_rarely_written` of another value has returned, in any process."""
        ...

    def set_rarely_written(self, key: str, value: Any, ttl: float) -> None:
        """:meth:`set` for such a key (a :meth:`set_lasting` where the backend has one:
        the revocation epoch must survive a failover)."""
        ...

    # -- Flask-Session's entries ----------------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """(the session's data or ``None``, the value of ``epoch_key``): in one round
        trip where the backend allows it. The epoch is ``None`` when ``epoch_key`` is,
        and :data:`UNREAD` when the store leaves it to :meth:`still_current`."""
        ...

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        """Write the session; with ``only_if_present``, only over an entry that is still
        stored (atomically: a concurrent delete wins), silently doing nothing otherwise."""
        ...

    def delete_session(self, store_id: str) -> None:
        """Delete the session (a logout, an ended session); a delete the backend reports
        failed raises, and so does one that a failover could undo (as :meth:`set_lasting`)."""
        ...

    def sweep(self) -> None:
        """Delete expired entries, where the backend does not expire them itself (run
        off the request's path, about once an hour per process)."""
        ...
