"""The current app, request, session and ``g`` in one context lookup.

``flask.current_app``, ``request``, ``session`` and ``g`` are proxies: every use looks the
context up again, through three Python calls. ``@plurality_required`` needs all four on
every request, so it reads them here, once. Flask 3.2 merges the request context into
the app context; this leaf module is the only one that knows, and
``tests/test_hot_path.py`` checks it against the proxies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, g, request, session
from flask.globals import _cv_app

if TYPE_CHECKING:
    from flask import Flask, Request
    from flask.ctx import _AppCtxGlobals
    from flask.sessions import SessionMixin

_request_var: Any
try:  # Flask 3.0 and 3.1: the request context holds the request and the session
    from flask.globals import _cv_request as _request_var
except ImportError:  # pragma: no cover - Flask 3.2: the app context holds them
    _request_var = _cv_app


def request_context() -> tuple[Flask, Request, SessionMixin, _AppCtxGlobals]:
    """(app, request, session, g) of the current request; outside one, Flask's own
    "Working outside of request context" error."""
    app_ctx = _cv_app.get(None)
    request_ctx = _request_var.get(None)
    if app_ctx is None or request_ctx is None:
        return (
            current_app._get_current_object(),  # type: ignore[attr-defined]
            request._get_current_object(),  # type: ignore[attr-defined]
            session._get_current_object(),  # type: ignore[attr-defined]
            g._get_current_object(),
        )
    return app_ctx.app, request_ctx.request, request_ctx.session, app_ctx.g


def request_globals() -> _AppCtxGlobals | None:
    """The current request's ``g``; ``None`` outside a request."""
    if _request_var.get(None) is None:
        return None
    app_ctx = _cv_app.get(None)
    return app_ctx.g if app_ctx is not None else None
