"""The current app, request and session in one context lookup, and what the extension
keeps in them: its key in the session and its per-request answers on the request.

``flask.current_app``, ``request`` and ``session`` are proxies: every use looks the
context up again, through three Python calls. ``@plurality_required`` needs all three on
every request, so it reads them here, once. Flask 3.2 merges the request context into
the app context; this leaf module is the only one that knows, and
``tests/test_hot_path.py`` checks it against the proxies.

What a request found out (its profile, the app's user, the challenge a later 401
names) is kept on the :class:`~flask.Request` object, never in ``g``: ``g`` belongs to
the app context, which Flask reuses when one is already pushed (an app that pushes one
at import, a test that holds one across requests), so ``g`` can outlive a request and
hand one visitor's login to the next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from flask import current_app, request, session
from flask.globals import _cv_app

if TYPE_CHECKING:
    from flask import Flask, Request
    from flask.sessions import SessionMixin

_request_var: Any
try:  # Flask 3.0 and 3.1: the request context holds the request and the session
    from flask.globals import _cv_request as _request_var
except ImportError:  # pragma: no cover - Flask 3.2: the app context holds them
    _request_var = _cv_app

#: The one key the extension owns in ``flask.session``.
SESSION_KEY: Final = "_plurality"

#: Names in a request's ``__dict__``: the request's profile (``None``: nobody), the app's
#: user for it (``None`` is a loaded "nobody"), and the ``WWW-Authenticate`` a later 401
#: of this request names.
PROFILE: Final = "_plurality_profile"
USER: Final = "_plurality_user"
CHALLENGE: Final = "_plurality_challenge"


def request_context() -> tuple[Flask, Request, SessionMixin]:
    """(app, request, session) of the current request; outside one, Flask's own
    "Working outside of request context" error."""
    app_ctx = _cv_app.get(None)
    request_ctx = _request_var.get(None)
    if app_ctx is None or request_ctx is None:
        return (
            current_app._get_current_object(),  # type: ignore[attr-defined]
            request._get_current_object(),  # type: ignore[attr-defined]
            session._get_current_object(),  # type: ignore[attr-defined]
        )
    return app_ctx.app, request_ctx.request, request_ctx.session


def current_request() -> Request | None:
    """The current request; ``None`` outside one (an app context alone is no request)."""
    request_ctx = _request_var.get(None)
    return None if request_ctx is None else request_ctx.request


def request_scope() -> dict[str, Any] | None:
    """Where the current request keeps what it found out (its ``__dict__``); ``None``
    outside a request."""
    request_ctx = _request_var.get(None)
    return None if request_ctx is None else request_ctx.request.__dict__
