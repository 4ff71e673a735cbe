"""Collapse concurrent identical upstream calls in one process into one.

When a burst of requests of one session all find it due for revalidation (a page
that loads twenty API calls at once), only the first asks Plurality; the others wait
for that answer instead of sending nineteen identical calls.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .exceptions import UpstreamUnavailable

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """The first caller for a key runs ``fn``; callers arriving meanwhile wait for its
    outcome (at most ``wait`` seconds) and share it, result or exception."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call[T]] = {}

    def do(self, key: str, fn: Callable[[], T], wait: float) -> T:
        """``fn()``'s result, computed once for all the callers that overlap.

        A waiter that gives up after ``wait`` seconds raises
        :class:`UpstreamUnavailable` (``reason="timeout"``); the leader carries on.
        """
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if leader:
            try:
                call.result = fn()
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                with self._lock:
                    del self._calls[key]
                call.done.set()
            return call.result
        if not call.done.wait(wait):
            raise UpstreamUnavailable("Plurality is slow to answer.", reason="timeout")
        if call.error is not None:
            # Each waiter raises its own copy: one exception object raised in many
            # threads at once would collect all their tracebacks.
            try:
                error = copy.copy(call.error)
            except Exception:  # an exception type copy cannot rebuild
                error = call.error
            raise error from None
        return call.result  # type: ignore[return-value]
