"""The app's own users, and who may enter (SPEC section 9).

Like Flask-Login's ``user_loader`` and flask-jwt-extended's ``user_lookup_loader``: the
app registers ``@plurality.user_loader`` (profile -> its own user row, or ``None``), and
``current_user`` is a ``LocalProxy`` over the result, kept in ``g`` so the loader runs at
most once per request, however often the view and its templates look. The gates:
``@plurality.before_login`` (may this login happen?) and ``allow=`` (may this user open
this route?) answer here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flask import current_app, g, has_request_context
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .exceptions import ConfigurationError
from .logins import USER_ATTR, request_profile
from .profile import Profile
from .responses import json_error
from .state import EXTENSION_KEY

if TYPE_CHECKING:
    from .extension import Plurality


def load_user() -> Any:
    """The current login's user, from the app's ``user_loader``; ``None`` if nobody is logged in."""
    if not has_request_context():
        return None
    try:
        return g.__dict__[USER_ATTR]
    except KeyError:
        pass
    extension = current_app.extensions.get(EXTENSION_KEY)
    loader = extension.user_callback if extension is not None else None
    if loader is None:
        raise ConfigurationError(
            "flask_plurality.current_user needs a user loader: register one with @plurality.user_loader."
        )
    profile = request_profile()
    user = current_app.ensure_sync(loader)(profile) if profile else None
    setattr(g, USER_ATTR, user)
    return user


def login_refusal(extension: Plurality, profile: Profile) -> BaseResponse | None:
    """What ``before_login`` says of ``profile``: ``None`` to let the login happen, else
    the answer to send (a string becomes 403 ``login_refused`` with it as the message)."""
    gate = extension.before_login_callback
    if gate is None:
        return None
    verdict = current_app.ensure_sync(gate)(profile)
    if verdict is None:
        return None
    signals.login_failed.send(current_app._get_current_object(), profile=None, reason="refused")  # type: ignore[attr-defined]
    if isinstance(verdict, str):
        return json_error(403, "login_refused", message=verdict)
    return current_app.make_response(verdict)


def forbidden(extension: Plurality) -> BaseResponse:
    """The answer when ``allow=`` said no: the app's ``forbidden_handler``, or a JSON 403."""
    if extension.forbidden_callback is not None:
        return current_app.make_response(current_app.ensure_sync(extension.forbidden_callback)())
    return json_error(403, "forbidden")


#: The app's own user for the current login (what ``@plurality.user_loader`` returned),
#: or ``None`` when nobody is logged in. A ``LocalProxy``: test it with ``if current_user:``.
current_user: Any = cast(Any, LocalProxy(load_user))
