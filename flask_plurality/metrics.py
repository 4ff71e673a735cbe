"""Prometheus metrics, counted from the package's signals (``pip install flask-plurality[metrics]``).

Turned on with ``PLURALITY_METRICS = True`` (prometheus_client's default registry) or
``plurality.init_metrics(app, registry=...)``. Every name starts with ``plurality_``;
every label value comes from a fixed set (outcomes, reason codes, the configured API
host), never from a request: no token, user id, email or IP can reach a label.

Nothing here runs on the hot path: a protected request that does not ask Plurality
sends no signal, so it costs the same with metrics on or off. Under gunicorn with
several workers, prometheus_client's multiprocess mode aggregates the workers (see
docs/metrics.rst): set ``PROMETHEUS_MULTIPROC_DIR`` and use :func:`child_exit` and
:func:`on_starting` as gunicorn hooks.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import Flask, Response

from . import signals
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: Reason codes a label may carry; anything else is counted as ``"other"``.
REASONS: Final = frozenset(
    {
        "none",
        # about the token (InvalidToken)
        "malformed",
        "expired",
        "rejected",
        "wrong_client",
        "invalid_token",
        "revoked",
        # Plurality could not give an answer (UpstreamUnavailable)
        "timeout",
        "connection_error",
        "bad_response",
        "oversized",
        "token_not_received",
        "route_not_found",
        "rate_limited",
        "circuit_open",
        "credentials_rejected",
        "upstream_unavailable",
        # about the login itself
        "not_configured",
        "too_many_attempts",
        "refused",
        "callback_error",
        "session_store_unavailable",
        "too_many_sessions",
    }
)
_HTTP_STATUS: Final = re.compile(r"http_[1-5][0-9][0-9]\Z")  # "http_503": 500 values at most
#: ``outcome`` of ``plurality_upstream_calls_total`` (see :data:`signals.upstream_called`).
UPSTREAM_OUTCOMES: Final = ("valid", "invalid", "unavailable", "credentials_rejected", "error")
#: ``where`` of ``plurality_store_failures_total``.
STORE_PLACES: Final = ("session_load", "session_save", "extension")
#: ``reason`` of ``plurality_sessions_ended_total`` (see :data:`signals.session_ended`).
SESSION_END_REASONS: Final = ("logout", "ended", "limit", "revoked", "expired")
#: ``scope`` of ``plurality_throttled_total``.
THROTTLE_SCOPES: Final = ("client", "token")
#: Histogram buckets (seconds) around ``PLURALITY_TIMEOUT``'s default of 5.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def reason_label(reason: Any) -> str:
    """A reason code fit for a label: a known code, ``http_NNN``, or ``"other"``."""
    if reason is None:
        return "none"
    text = str(reason)
    return text if text in REASONS or _HTTP_STATUS.match(text) else "other"


def upstream_label(api_url: Any) -> str:
    """The configured API's ``host[:port]`` (never credentials in the URL, never a path)."""
    try:
        parts = urlsplit(str(api_url))
        host = parts.hostname or "unknown"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "unknown"


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "PLURALITY_METRICS needs prometheus_client: pip install 'flask-plurality[metrics]'."
        ) from None
    return prometheus_client


class PluralityMetrics:
    """The metric objects of one registry; shared by every app counted into it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        prom = _prometheus()
        self.registry = registry
        counter, histogram, gauge = prom.Counter, prom.Histogram, prom.Gauge
        self.logins = counter(
            "plurality_logins",
            "Logins at /login by outcome (success, failure) and reason code.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.logouts = counter("plurality_logouts", "Sessions logged out.", registry=registry)
        self.revalidations = counter(
            "plurality_revalidations",
            "Revalidations of a session by outcome (success, failure, grace: upstream "
            "failed and PLURALITY_ON_UPSTREAM_ERROR let the request in) and reason.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.upstream_calls = counter(
            "plurality_upstream_calls",
            "Calls to Plurality's validate API by outcome and reason (breaker fail-fasts are not calls).",
            ["outcome", "reason"],
            registry=registry,
        )
        self.upstream_latency = histogram(
            "plurality_upstream_latency_seconds",
            "Duration of the calls to Plurality's validate API, retries included, by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.answer_cache = counter(
            "plurality_answer_cache",
            "Answers about a token needed by a login or revalidation: result=hit when the "
            "shared answer cache had it, miss when it took an upstream call (this request's or a shared one).",
            ["result"],
            registry=registry,
        )
        self.breaker_open = gauge(
            "plurality_breaker_open",
            "1 while the circuit breaker holds calls to this upstream back (in any live worker), else 0.",
            ["upstream"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.breaker_openings = counter(
            "plurality_breaker_openings",
            "Times a circuit breaker to this upstream opened.",
            ["upstream"],
            registry=registry,
        )
        self.throttled = counter(
            "plurality_throttled",
            "Requests refused with 429 by the failed-login throttle, by scope (client, token).",
            ["scope"],
            registry=registry,
        )
        self.store_failures = counter(
            "plurality_store_failures",
            "Failed reads or writes of the session store (each answered 503), by where they happened.",
            ["where"],
            registry=registry,
        )
        self.revocations = counter("plurality_revocations", "Calls of revoke_user.", registry=registry)
        self.sessions_ended = counter(
            "plurality_sessions_ended",
            "Sessions that ended, by reason (logout, ended, limit, revoked, expired).",
            ["reason"],
            registry=registry,
        )
        for outcome in ("success", "failure"):  # a ratio needs both series from the start
            self.logins.labels(outcome, "none" if outcome == "success" else "other")
        for result in ("hit", "miss"):
            self.answer_cache.labels(result)
        self._apps: set[int] = set()
        self._receivers: list[Callable[..., None]] = []

    # -- receivers: one per signal; the sender filter keeps apps apart ---------------

    def connect(self, app: Flask) -> None:
        """Count ``app``'s signals into this registry (once per app)."""
        if id(app) in self._apps:
            return
        self._apps.add(id(app))
        self.breaker_open.labels(upstream_label(app.config.get("PLURALITY_API_URL"))).set(0)
        wiring: list[tuple[Any, Callable[..., None]]] = [
            (signals.logged_in, self._logged_in),
            (signals.login_failed, self._login_failed),
            (signals.logged_out, self._logged_out),
            (signals.revalidated, self._revalidated),
            (signals.revalidation_failed, self._revalidation_failed),
            (signals.upstream_called, self._upstream_called),
            (signals.answer_served, self._answer_served),
            (signals.breaker_opened, self._breaker_opened),
            (signals.breaker_closed, self._breaker_closed),
            (signals.throttled, self._throttled),
            (signals.store_failed, self._store_failed),
            (signals.user_revoked, self._user_revoked),
            (signals.session_ended, self._session_ended),
        ]
        for signal, receiver in wiring:
            signal.connect(receiver, sender=app, weak=False)

    def _logged_in(self, sender: Flask, **_: Any) -> None:
        self.logins.labels("success", "none").inc()

    def _login_failed(self, sender: Flask, reason: Any = None, **_: Any) -> None:
        self.logins.labels("failure", reason_label(reason)).inc()

    def _logged_out(self, sender: Flask, **_: Any) -> None:
        self.logouts.inc()

    def _revalidated(self, sender: Flask, **_: Any) -> None:
        self.revalidations.labels("success", "none").inc()

    def _revalidation_failed(self, sender: Flask, reason: Any = None, allowed: bool = False, **_: Any) -> None:
        self.revalidations.labels("grace" if allowed else "failure", reason_label(reason)).inc()

    def _upstream_called(
        self, sender: Flask, outcome: str = "error", reason: Any = None, duration: float = 0.0, **_: Any
    ) -> None:
        outcome = outcome if outcome in UPSTREAM_OUTCOMES else "error"
        self.upstream_calls.labels(outcome, reason_label(reason)).inc()
        self.upstream_latency.labels(outcome).observe(max(0.0, float(duration)))

    def _answer_served(self, sender: Flask, cached: bool = False, **_: Any) -> None:
        self.answer_cache.labels("hit" if cached else "miss").inc()

    def _breaker_opened(self, sender: Flask, upstream: Any = None, reopened: bool = False, **_: Any) -> None:
        label = upstream_label(upstream)
        if not reopened:  # a failed probe: still the same outage
            self.breaker_openings.labels(label).inc()
        self.breaker_open.labels(label).set(1)

    def _breaker_closed(self, sender: Flask, upstream: Any = None, **_: Any) -> None:
        self.breaker_open.labels(upstream_label(upstream)).set(0)

    def _throttled(self, sender: Flask, scope: Any = None, **_: Any) -> None:
        self.throttled.labels(scope if scope in THROTTLE_SCOPES else "client").inc()

    def _store_failed(self, sender: Flask, where: Any = None, **_: Any) -> None:
        self.store_failures.labels(where if where in STORE_PLACES else "extension").inc()

    def _user_revoked(self, sender: Flask, **_: Any) -> None:
        self.revocations.inc()

    def _session_ended(self, sender: Flask, reason: Any = None, **_: Any) -> None:
        self.sessions_ended.labels(reason if reason in SESSION_END_REASONS else "ended").inc()


_lock = threading.Lock()
_by_registry: dict[int, PluralityMetrics] = {}


def metrics_for(registry: CollectorRegistry | None = None) -> PluralityMetrics:
    """The metric objects in ``registry`` (the default one if ``None``), made once."""
    if registry is None:
        registry = _prometheus().REGISTRY
    with _lock:
        metrics = _by_registry.get(id(registry))
        if metrics is None or metrics.registry is not registry:
            metrics = _by_registry[id(registry)] = PluralityMetrics(registry)
        return metrics


def init_metrics(app: Flask, registry: CollectorRegistry | None = None) -> PluralityMetrics:
    """Count ``app``'s logins, upstream calls, breaker, throttle and store events into
    ``registry`` (prometheus_client's default registry if ``None``). Also serves them at
    ``PLURALITY_METRICS_PATH`` when that is set."""
    current = app.extensions.get("plurality.metrics")
    if current is not None:
        if registry is not None and current.registry is not registry:
            raise ConfigurationError("Metrics are already on for this app, counted into another registry.")
        return current  # type: ignore[no-any-return]
    metrics = metrics_for(registry)
    metrics.connect(app)
    app.extensions["plurality.metrics"] = metrics
    path = app.config.get("PLURALITY_METRICS_PATH")
    if path:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"PLURALITY_METRICS_PATH must be a path starting with '/', not {path!r}")
        app.add_url_rule(path, "plurality_metrics", lambda: exposition(metrics.registry), methods=["GET"])
    return metrics


def exposition(registry: CollectorRegistry | None = None) -> Response:
    """A response with the metrics in Prometheus' text format.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn with several workers), every
    worker's numbers, merged: any worker can answer the scrape.
    """
    prom = _prometheus()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    elif registry is None:
        registry = prom.REGISTRY
    body = prom.generate_latest(registry)
    return Response(body, headers={"Content-Type": prom.CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


# -- gunicorn hooks (multiprocess mode): ``from flask_plurality.metrics import child_exit, on_starting``


def on_starting(server: Any) -> None:
    """gunicorn ``on_starting`` hook: empty ``PROMETHEUS_MULTIPROC_DIR`` of the last run's files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        raise ConfigurationError("Set PROMETHEUS_MULTIPROC_DIR for gunicorn with several workers.")
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: a dead worker's gauges stop counting (``livemax``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


__all__ = ["PluralityMetrics", "child_exit", "exposition", "init_metrics", "metrics_for", "on_starting"]
