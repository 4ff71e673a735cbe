"""``@plurality_required``, the check behind it, and ``current_profile``."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, overload
from urllib.parse import quote

from flask import Flask, current_app, g, has_request_context, redirect, request, session
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .config import ConfigView, config, parse_interval
from .exceptions import InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .logins import PROFILE_ATTR, current_login_profile
from .profile import ANONYMOUS, AnonymousProfile, Profile
from .responses import CHALLENGE, DEFAULT_RETRY_AFTER, json_error, store_unavailable
from .revocation import is_revoked
from .sessiondata import SESSION_KEY, Login
from .state import EXTENSION_KEY, get_extension

if TYPE_CHECKING:
    from .extension import Plurality

log = logging.getLogger("flask_plurality")

F = TypeVar("F", bound=Callable[..., Any])
#: ``revalidate`` not given: the app's ``PLURALITY_REVALIDATE`` decides.
APP_DEFAULT: Final = object()


@overload
def plurality_required(view: F) -> F: ...


@overload
def plurality_required(*, revalidate: bool | int | None = ...) -> Callable[[F], F]: ...


def plurality_required(view: F | None = None, *, revalidate: bool | int | None = None) -> F | Callable[[F], F]:
    """Let the view run only for a logged-in Plurality user.

    ``revalidate`` overrides ``PLURALITY_REVALIDATE`` for this view: ``True`` or ``0``
    asks Plurality on every request, ``N`` when the last good answer is older than N
    seconds, ``False`` never; ``None`` (the default) keeps the app's setting. Works bare
    or called, on sync and async views and in ``MethodView.decorators``; ``OPTIONS``
    (CORS preflight) always passes.
    """
    if view is None:
        return lambda f: _guard(f, revalidate)
    return _guard(view, revalidate)


def _guard(view: F, revalidate: bool | int | None) -> F:
    # Resolved once here, not per request; a bad value fails at import time.
    policy: Any = APP_DEFAULT if revalidate is None else parse_interval(revalidate, "revalidate")
    is_async = inspect.iscoroutinefunction(view)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method != "OPTIONS":
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            extension = app.extensions.get(EXTENSION_KEY) or get_extension()  # the latter raises clearly
            outcome = authorize(extension, policy, app)
            if not isinstance(outcome, Profile):
                return outcome
        if is_async:
            return current_app.ensure_sync(view)(*args, **kwargs)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def authorize(extension: Plurality, revalidate: Any, app: Flask) -> Profile | BaseResponse:
    """The check behind ``@plurality_required``: a profile, or the answer to send.

    On the hot path (no revalidation due) this costs a few dictionary reads and, when
    someone was revoked since this session was last checked, one store read.
    """
    sess = session._get_current_object()  # type: ignore[attr-defined]
    if getattr(sess, "store_error", False):
        return store_unavailable()
    now = time.time()
    login = Login.load(sess.get(SESSION_KEY))
    if login is None:
        return unauthorized(extension)
    if login.exp <= now:
        return unauthorized(extension, clear=True)
    cfg = ConfigView(app.config)
    try:
        if is_revoked(login, cfg, sess, app):
            return unauthorized(extension, clear=True)
        interval = cfg.revalidate if revalidate is APP_DEFAULT else revalidate
        if interval is None or now - login.validated_at < interval:
            setattr(g, PROFILE_ATTR, login.profile)
            return login.profile
        try:
            answer = extension.answers.lookup(login.token, login.exp, interval)
        except InvalidToken as exc:
            log.info("Revalidation refused user %s (%s); session cleared", login.profile.id, exc.reason)
            signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=False)
            return unauthorized(extension, clear=True)
        except UpstreamUnavailable as exc:
            # Grace counts from the last *good* answer, which a failure never moves.
            allowed = cfg.on_upstream_error == "allow" and now - login.validated_at < cfg.grace_period
            signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=allowed)
            if allowed:
                log.info("Revalidation of user %s failed (%s); let in (grace period)", login.profile.id, exc.reason)
                setattr(g, PROFILE_ATTR, login.profile)
                return login.profile
            log.info("Revalidation of user %s failed (%s); answered 503", login.profile.id, exc.reason)
            return json_error(503, "upstream_unavailable", retry_after=exc.retry_after or DEFAULT_RETRY_AFTER)
    except SessionStoreUnavailable:
        return store_unavailable()
    claims = {"exp": login.exp, "uniqueSessionId": login.profile.unique_session_id}
    profile = Profile.from_upstream(answer.user, claims)
    login.profile, login.validated_at = profile, max(login.validated_at, answer.at)
    session[SESSION_KEY] = login.dump()
    signals.revalidated.send(app, profile=profile, cached=answer.cached)
    setattr(g, PROFILE_ATTR, profile)
    return profile


def unauthorized(extension: Plurality, *, clear: bool = False) -> BaseResponse:
    """The answer to a request that is not (or no longer) logged in."""
    if clear:
        session.clear()
    g.pop(PROFILE_ATTR, None)
    if extension.unauthorized_callback is not None:
        return current_app.make_response(current_app.ensure_sync(extension.unauthorized_callback)())
    login_url = config.login_url
    if login_url and _prefers_html():
        target = request.full_path.rstrip("?") if request.query_string else request.path
        joiner = "&" if "?" in login_url else "?"
        return redirect(f"{login_url}{joiner}next={quote(target, safe='/')}", 302)
    return json_error(401, "login_required", headers=CHALLENGE)


def _prefers_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def _load_profile() -> Profile | AnonymousProfile:
    if not has_request_context():
        return ANONYMOUS
    profile = g.get(PROFILE_ATTR)
    if profile is None:
        profile = current_login_profile() if EXTENSION_KEY in current_app.extensions else None
        setattr(g, PROFILE_ATTR, profile)
    return profile or ANONYMOUS


#: The logged-in user's :class:`Profile`; falsy (an :class:`AnonymousProfile`) otherwise.
current_profile: Profile = cast(Profile, LocalProxy(_load_profile))
