"""``@plurality_required``: the wrapper, the choice between a bearer token and the
session, and ``allow=``.

Whether a stored login is still good is :func:`.logins.check_login`'s to say (the one
check ``current_profile`` and ``/plurality/session`` use too); what a refusal looks like
is :mod:`.responses`'.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from flask.sessions import SessionMixin
from werkzeug.wrappers import Response as BaseResponse

from .bearer import authenticate, bearer_token, default_interval
from .callbacks import ALLOW_ANSWERS, wrong_answer
from .config import ConfigView, flag, parse_interval
from .exceptions import SessionStoreUnavailable, UpstreamUnavailable
from .flask_context import PROFILE, USER, request_context
from .logins import APP_DEFAULT, check_login, end_login, load_user
from .profile import Profile
from .responses import (
    BEARER_CHALLENGE,
    CHALLENGE,
    bearer_refused,
    forbidden,
    login_required,
    store_unavailable,
    upstream_unavailable,
)
from .sessions import detach_session, is_detached
from .state import EXTENSION_KEY, get_extension

if TYPE_CHECKING:
    from flask import Flask

    from .extension import Plurality

log = logging.getLogger("flask_plurality")

F = TypeVar("F", bound=Callable[..., Any])


Predicate = Callable[[Profile], bool]


@overload
def plurality_required(view: F) -> F: ...


@overload
def plurality_required(
    *, revalidate: bool | int | None = ..., bearer: bool | None = ..., allow: Predicate | None = ...
) -> Callable[[F], F]: ...


def plurality_required(
    view: F | None = None,
    *,
    revalidate: bool | int | None = None,
    bearer: bool | None = None,
    allow: Predicate | None = None,
) -> F | Callable[[F], F]:
    """Let the view run only for a logged-in Plurality user.

    ``revalidate`` overrides ``PLURALITY_REVALIDATE`` for this view: ``True`` or ``0``
    asks Plurality on every request, ``N`` when the last good answer is older than N
    seconds, ``False`` never; ``None`` (the default) keeps the app's setting.
    ``bearer`` overrides ``PLURALITY_ACCEPT_BEARER``: ``True`` also accepts
    ``Authorization: Bearer <pluralityToken>`` (which then decides over any cookie),
    ``False`` only the session cookie. ``allow`` is ``predicate(profile) -> bool``,
    checked after the login check: ``False`` answers 403 ``forbidden``, and an answer
    that is not a bool 500 ``callback_error`` (the app's bug: see :mod:`.callbacks`).
    Works bare or called, on sync and async views and in ``MethodView.decorators``;
    ``OPTIONS`` (CORS preflight) always passes.
    """
    if allow is not None and not callable(allow):
        raise TypeError(f"allow= must be a function of the profile returning a bool, not {allow!r}")
    if bearer is not None and not isinstance(bearer, bool):
        raise TypeError(f"bearer= must be True, False or None, not {bearer!r}")
    if view is None:
        return lambda f: _guard(f, revalidate, bearer, allow)
    return _guard(view, revalidate, bearer, allow)


def _guard(view: F, revalidate: bool | int | None, bearer: bool | None, allow: Predicate | None) -> F:
    # Resolved once here, not per request; a bad value fails at import time.
    policy: Any = APP_DEFAULT if revalidate is None else parse_interval(revalidate, "revalidate")
    is_async = inspect.iscoroutinefunction(view)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app, req, sess = request_context()
        if req.method != "OPTIONS":
            extension = app.extensions.get(EXTENSION_KEY) or get_extension()  # the latter raises clearly
            scope = req.__dict__
            challenge = CHALLENGE
            profile: Profile | None = None
            accept = app.config["PLURALITY_ACCEPT_BEARER"] if bearer is None else bearer
            if accept is not False and (accept is True or flag(accept, "PLURALITY_ACCEPT_BEARER")):
                token = bearer_token(req)
                if token is None:
                    challenge = BEARER_CHALLENGE
                else:
                    detach_session()  # judged by the token alone: no session read, saved or sent
                    cfg = ConfigView(app.config)
                    outcome = authenticate(extension, token, default_interval(policy, cfg), app, cfg)
                    if not isinstance(outcome, Profile):
                        return outcome
                    scope[PROFILE] = profile = outcome
                    scope.pop(USER, None)
            if profile is None:
                try:
                    profile = check_login(extension, app, sess, scope, policy)
                except SessionStoreUnavailable:
                    return store_unavailable()
                except UpstreamUnavailable as exc:
                    return upstream_unavailable(exc.retry_after)
                if profile is None:
                    return login_required(extension, challenge)
            if extension.user_callback is not None or allow is not None:
                refusal = _admit(app, extension, profile, allow, sess, challenge)
                if refusal is not None:
                    return refusal
        if is_async:
            return app.ensure_sync(view)(*args, **kwargs)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _admit(
    app: Flask,
    extension: Plurality,
    profile: Profile,
    allow: Predicate | None,
    sess: SessionMixin,
    challenge: dict[str, str],
) -> BaseResponse | None:
    """After the login check: the app's own user must exist, and ``allow`` must say yes."""
    if extension.user_callback is not None and load_user() is None:
        log.info("The user loader found no user for %s; logged out", profile.id)
        end_login(sess, "ended")
        if is_detached(sess):  # a bearer request: no login page helps a client that sends a token
            return bearer_refused("login_required")
        return login_required(extension, challenge)
    if allow is not None:
        verdict = app.ensure_sync(allow)(profile)
        if verdict is not True:
            if verdict is False:
                return forbidden(extension)
            return wrong_answer("allow= predicate", allow, verdict, ALLOW_ANSWERS)
    return None
