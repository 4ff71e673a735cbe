"""The circuit breaker: stop waiting a full timeout per request while Plurality is down.

Hand-written on purpose: pybreaker holds one lock across the whole upstream call,
which would serialise every login of a threaded server behind the slowest one.

Three states. **Closed**: calls go through; ``threshold`` consecutive failures open
it. **Open**: every call fails fast (:class:`.UpstreamUnavailable`, ``circuit_open``)
for ``cooldown`` seconds; a ``Retry-After`` (429, 503) also opens it, for as long as
it says, whatever the count (``rate_limited``). **Half-open**: once the hold has
passed, the next call goes through as a probe, while the others still fail fast until
it reports; its success closes the breaker, its failure opens it again. A probe that
never reports (its worker died) stops holding the others back after its timeout.

The breaker announces each change itself, as it happens: :data:`.signals.breaker_opened`,
:data:`.signals.breaker_half_opened`, :data:`.signals.breaker_closed`, sent by the app
making the call (``None`` outside an app context), after its lock is released.

One per process and per (API URL, client id): workers do not share it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Final, Literal

from flask import current_app, has_app_context

from . import signals
from .exceptions import UpstreamUnavailable

log = logging.getLogger("flask_plurality")

State = Literal["closed", "open", "half_open"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


def _sender() -> Any:
    """The app whose call changed the breaker: metrics count per app."""
    return current_app._get_current_object() if has_app_context() else None  # type: ignore[attr-defined]


class Breaker:
    """One upstream's breaker. ``upstream`` (the API URL) names it in its signals."""

    def __init__(self, upstream: str = "") -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self.state: State = CLOSED
        self.failures = 0  # consecutive
        self.open_until = 0.0  # monotonic; no call before this
        self.held_by_upstream = False  # open_until came from a Retry-After
        self.probe_until = 0.0  # a probe is in flight until then (it may never report back)
        self.openings = 0  # times it went from closed to open

    def __repr__(self) -> str:
        return f"<Breaker {self.upstream!r} {self.state}, {self.failures} failures>"

    @property
    def is_open(self) -> bool:
        """Holding calls back (open, or half-open with a probe out), as far as the last call knows."""
        return self.state != CLOSED

    def before_call(self, threshold: int, timeout: float) -> None:
        """Raise :class:`UpstreamUnavailable` instead of calling; or let this call through.

        ``timeout``: the longest this call may take, after which another caller may probe.
        """
        with self._lock:
            now = time.monotonic()
            if now < self.open_until or now < self.probe_until:
                raise UpstreamUnavailable(
                    "Plurality is not answering; not asking again yet.",
                    reason="rate_limited" if self.held_by_upstream and now < self.open_until else "circuit_open",
                    retry_after=self._wait(now),
                )
            if self.failures >= threshold:
                # This caller is the probe; the others fail fast until it reports back.
                self.probe_until = now + timeout + 1
            changed = self.state == OPEN
            if changed:  # the hold has passed: this call finds out whether Plurality is back
                self.state = HALF_OPEN
        if changed:
            signals.breaker_half_opened.send(_sender(), upstream=self.upstream)

    def _wait(self, now: float) -> int:
        # Rounded first: (now + 60) - now can be 60.000000001, which must not say 61.
        return max(1, math.ceil(round(max(self.open_until, self.probe_until) - now, 3)))

    def succeeded(self) -> None:
        """Plurality answered (about the token, yes or no)."""
        with self._lock:
            if self.failures:
                log.info("Plurality answers again after %d failed calls", self.failures)
            self.failures = 0
            self.open_until = self.probe_until = 0.0
            self.held_by_upstream = False
            changed = self.state != CLOSED
            self.state = CLOSED
        if changed:
            signals.breaker_closed.send(_sender(), upstream=self.upstream)

    def released(self) -> None:
        """Neither a success nor a failure (a call cut short by its caller): if it was the
        probe, let the next caller probe instead of waiting for the probe's time to pass."""
        with self._lock:
            self.probe_until = 0.0

    def failed(self, threshold: int, cooldown: float, retry_after: int | None) -> int | None:
        """Count a failure; return the seconds calls are now held back, if they are."""
        with self._lock:
            self.failures += 1
            self.probe_until = 0.0
            now = time.monotonic()
            if retry_after:
                self.held_by_upstream = now + retry_after >= self.open_until
                self.open_until = max(self.open_until, now + retry_after)
            if self.failures >= threshold:
                if now + cooldown > self.open_until:
                    self.open_until, self.held_by_upstream = now + cooldown, False
                log.warning(
                    "Plurality failed %d times in a row; not calling it for %.0f s",
                    self.failures,
                    self.open_until - now,
                )
            held = now < self.open_until
            before = self.state
            if held:
                self.state = OPEN
                if before == CLOSED:
                    self.openings += 1
            else:  # a failure that holds nothing back: calls go on as before
                self.state = CLOSED
            wait = self._wait(now) if held else None
        if held and before != OPEN:
            signals.breaker_opened.send(
                _sender(), upstream=self.upstream, retry_after=wait, reopened=before == HALF_OPEN
            )
        elif not held and before != CLOSED:
            signals.breaker_closed.send(_sender(), upstream=self.upstream)
        return wait


__all__ = ["Breaker"]
