"""OpenTelemetry spans for the answers about a token.

When ``opentelemetry-api`` can be imported, each answer a login or revalidation needs is
a client span ``plurality.validate`` with the HTTP method and status code of the call
to Plurality (when one was made), the outcome, the reason code, and whether the answer
came from the shared answer cache. No attribute, event or status ever carries the
token, the client secret or an email: only codes, numbers and the configured API host.
Without opentelemetry nothing is imported and no span is made.

Two wrappers, used by the answer cache:

- :func:`observed_answer` decorates the function that produces an answer (cache,
  single flight, upstream call): the span around it.
- :func:`validate_upstream` makes the one real call to Plurality: the HTTP method and
  status of its last exchange go on the span.

Spans only: the signals that metrics count are sent where things happen (the answer
cache, the client, the breaker). Without opentelemetry both wrappers are the plain
functions. None of this runs on the hot path (a protected request that does not ask
Plurality).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from functools import wraps
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast
from urllib.parse import urlsplit

from .client import observe
from .config import config
from .metrics import reason_label

if TYPE_CHECKING:
    import requests

    from .client import PluralityClient, Upstream

try:
    from opentelemetry import trace as _otel
except ImportError:  # optional: nothing is needed, and nothing is slower, without it
    _otel = None  # type: ignore[assignment]

#: The span's name.
SPAN_NAME: Final = "plurality.validate"

F = TypeVar("F", bound=Callable[..., Any])


def _tracer() -> Any:
    # A ProxyTracer: spans go to whatever TracerProvider the app sets up, even later.
    return _otel.get_tracer("flask_plurality") if _otel is not None else None


_TRACER: Final = _tracer()


class _Call:
    """What one answer saw: the HTTP exchanges of its upstream call, if it made one."""

    __slots__ = ("method", "status")

    def __init__(self) -> None:
        self.method: str | None = None
        self.status: int | None = None


#: The answer being produced in this thread, for the response hook to report to.
_current: ContextVar[_Call | None] = ContextVar("plurality_answer", default=None)
#: HTTP responses received by the upstream call running in this thread.
_responses: ContextVar[list[tuple[str, int]] | None] = ContextVar("plurality_responses", default=None)


def _server(api_url: str) -> dict[str, Any]:
    try:
        parts = urlsplit(api_url)
        attributes: dict[str, Any] = {"server.address": parts.hostname or ""}
        if parts.port:
            attributes["server.port"] = parts.port
        return attributes
    except ValueError:
        return {}


def observed_answer(produce: F) -> F:
    """Decorate the answer function: a span around it (without opentelemetry, nothing).

    The answer is ``cached`` when it has a true ``.cached`` attribute, or when the
    exception raised has one (a refusal remembered by the answer cache).
    """
    if _TRACER is None:
        return produce

    @wraps(produce)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _Call()
        reset = _current.set(call)
        span_context = _TRACER.start_as_current_span(
            SPAN_NAME,
            kind=_otel.SpanKind.CLIENT,
            attributes=_server(config.api_url),
            record_exception=False,  # an exception event would carry its message
            set_status_on_exception=False,
        )
        span = span_context.__enter__()

        def done(outcome: str, reason: str | None, cached: bool) -> None:
            _current.reset(reset)
            _finish(span, call, outcome, reason, cached)
            span_context.__exit__(None, None, None)

        return observe(lambda: produce(*args, **kwargs), done)

    return cast(F, wrapper)


def _finish(span: Any, call: _Call, outcome: str, reason: str | None, cached: bool) -> None:
    span.set_attribute("plurality.outcome", outcome)
    span.set_attribute("plurality.cached", cached)
    if reason is not None:
        span.set_attribute("plurality.reason", reason_label(reason))
    if call.method is not None:
        span.set_attribute("http.request.method", call.method)
    if call.status is not None:
        span.set_attribute("http.response.status_code", call.status)
    if outcome in ("unavailable", "credentials_rejected", "error"):
        span.set_attribute("error.type", reason_label(reason))
        span.set_status(_otel.StatusCode.ERROR, reason_label(reason))


def _on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """requests' response hook on the client's session: note method and status."""
    seen = _responses.get()
    if seen is not None:
        seen.append((str(response.request.method), int(response.status_code)))


_hook_lock = threading.Lock()


def validate_upstream(client: PluralityClient, token: str, upstream: Upstream) -> dict[str, Any]:
    """``client.validate(token, upstream)``: the one real call of an answer, its HTTP
    method and status noted for the span."""
    if _TRACER is None:
        return client.validate(token, upstream)
    hooks = client.http.hooks["response"]
    if _on_response not in hooks:
        with _hook_lock:
            if _on_response not in hooks:
                hooks.append(_on_response)
    seen: list[tuple[str, int]] = []
    reset = _responses.set(seen)
    try:
        return client.validate(token, upstream)
    finally:
        _responses.reset(reset)
        call = _current.get()
        if call is not None and seen:
            call.method, call.status = seen[-1]


__all__ = ["SPAN_NAME", "observed_answer", "validate_upstream"]
