"""``@plurality_required``, the check behind it, and ``current_profile``."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, overload
from urllib.parse import quote

from flask import Flask, Request, current_app, g, redirect, request, session
from flask.sessions import SessionMixin
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .bearer import authenticate, bearer_token, default_interval
from .config import ConfigView, config, parse_interval
from .exceptions import InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .flask_context import request_context, request_globals
from .logins import PROFILE_ATTR, forget_profile, request_profile
from .profile import ANONYMOUS, AnonymousProfile, Profile
from .responses import BEARER_CHALLENGE, CHALLENGE, DEFAULT_RETRY_AFTER, INVALID_BEARER, json_error, store_unavailable
from .revocation import is_revoked
from .sessiondata import SESSION_KEY, forget_parsed, stored_login
from .sessions import detach_session, is_detached
from .state import EXTENSION_KEY, get_extension
from .users import forbidden, load_user

if TYPE_CHECKING:
    from flask.ctx import _AppCtxGlobals

    from .extension import Plurality

log = logging.getLogger("flask_plurality")

F = TypeVar("F", bound=Callable[..., Any])
#: ``revalidate`` not given: the app's ``PLURALITY_REVALIDATE`` decides.
APP_DEFAULT: Final = object()
#: ``g`` attribute: the ``WWW-Authenticate`` a later 401 of this request names.
_CHALLENGE_ATTR: Final = "_plurality_challenge"


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
    checked after the login check: ``False`` answers 403 ``forbidden``.
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
        app, req, sess, g_ = request_context()
        if req.method != "OPTIONS":
            extension = app.extensions.get(EXTENSION_KEY) or get_extension()  # the latter raises clearly
            outcome = _authorize(extension, policy, app, bearer, req, sess, g_)
            if not isinstance(outcome, Profile):
                return outcome
            if extension.user_callback is not None or allow is not None:
                refusal = _admit(extension, outcome, allow)
                if refusal is not None:
                    return refusal
        if is_async:
            return app.ensure_sync(view)(*args, **kwargs)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _admit(extension: Plurality, profile: Profile, allow: Predicate | None) -> BaseResponse | None:
    """After the login check: the app's own user must exist, and ``allow`` must say yes."""
    if extension.user_callback is not None and load_user() is None:
        log.info("The user loader found no user for %s; logged out", profile.id)
        if is_detached(session._get_current_object()):  # type: ignore[attr-defined]
            forget_profile()
            return json_error(401, "login_required", headers=INVALID_BEARER)
        return unauthorized(extension, clear=True, challenge=g.get(_CHALLENGE_ATTR, CHALLENGE))
    if allow is not None and not current_app.ensure_sync(allow)(profile):
        return forbidden(extension)
    return None


def authorize(
    extension: Plurality, revalidate: Any, app: Flask, *, bearer: bool | None = None
) -> Profile | BaseResponse:
    """The check behind ``@plurality_required``: a profile, or the answer to send.

    ``revalidate``: seconds, ``None`` (never) or :data:`APP_DEFAULT`; ``bearer`` as
    ``@plurality_required``'s.
    """
    _, req, sess, g_ = request_context()
    return _authorize(extension, revalidate, app, bearer, req, sess, g_)


def _authorize(
    extension: Plurality,
    revalidate: Any,
    app: Flask,
    bearer: bool | None,
    req: Request,
    sess: SessionMixin,
    g_: _AppCtxGlobals,
) -> Profile | BaseResponse:
    """:func:`authorize` with the request's context already looked up.

    On the hot path (no revalidation due, nobody revoked since this session was last
    checked) this costs a few dictionary reads: the stored login is parsed once per
    change (:func:`.sessiondata.stored_login`), the settings are read straight from
    ``app.config``, and the revocation epoch came with the session (on files: one
    ``access``). ``benchmarks/backends.py`` counts its instructions on every backend.
    """
    conf = app.config
    challenge = CHALLENGE
    if bearer or (bearer is None and conf["PLURALITY_ACCEPT_BEARER"]):
        cfg = ConfigView(conf)
        if bearer or cfg.accept_bearer:
            token = bearer_token(req)
            if token is not None:
                detach_session()  # judged by the token alone: no session read, saved or sent
                return authenticate(extension, token, default_interval(revalidate, cfg), app, cfg)
            challenge = BEARER_CHALLENGE
            g_.__dict__[_CHALLENGE_ATTR] = challenge  # for a later refusal in this request (user loader)
    if getattr(sess, "store_error", False):
        return store_unavailable()
    login = stored_login(sess)
    if login is None:
        return unauthorized(extension, challenge=challenge)
    now = time.time()
    if login.exp <= now:
        return unauthorized(extension, clear=True, challenge=challenge)
    try:
        if is_revoked(login, sess, app):
            return unauthorized(extension, clear=True, challenge=challenge)
        if revalidate is APP_DEFAULT:
            setting = conf["PLURALITY_REVALIDATE"]
            interval = None if setting is None else parse_interval(setting, "PLURALITY_REVALIDATE")
        else:
            interval = revalidate
        if interval is None or now - login.validated_at < interval:
            g_.__dict__[PROFILE_ATTR] = login.profile
            return login.profile
        cfg = ConfigView(conf)
        try:
            answer = extension.answers.lookup(login.token, login.exp, interval)
        except InvalidToken as exc:
            log.info("Revalidation refused user %s (%s); session cleared", login.profile.id, exc.reason)
            signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=False)
            return unauthorized(extension, clear=True, challenge=challenge)
        except UpstreamUnavailable as exc:
            # Grace counts from the last *good* answer, which a failure never moves.
            allowed = cfg.on_upstream_error == "allow" and now - login.validated_at < cfg.grace_period
            signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=allowed)
            if allowed:
                log.info("Revalidation of user %s failed (%s); let in (grace period)", login.profile.id, exc.reason)
                g_.__dict__[PROFILE_ATTR] = login.profile
                return login.profile
            log.info("Revalidation of user %s failed (%s); answered 503", login.profile.id, exc.reason)
            return json_error(503, "upstream_unavailable", retry_after=exc.retry_after or DEFAULT_RETRY_AFTER)
    except SessionStoreUnavailable:
        return store_unavailable()
    claims = {"exp": login.exp, "uniqueSessionId": login.profile.unique_session_id}
    profile = Profile.from_upstream(answer.user, claims)
    sess[SESSION_KEY] = login.replace(profile=profile, validated_at=max(login.validated_at, answer.at)).dump()
    signals.revalidated.send(app, profile=profile, cached=answer.cached)
    g_.__dict__[PROFILE_ATTR] = profile
    return profile


def unauthorized(extension: Plurality, *, clear: bool = False, challenge: dict[str, str] = CHALLENGE) -> BaseResponse:
    """The answer to a request that is not (or no longer) logged in."""
    if clear:
        forget_parsed(session)
        session.clear()
    forget_profile()
    if extension.unauthorized_callback is not None:
        return current_app.make_response(current_app.ensure_sync(extension.unauthorized_callback)())
    login_url = config.login_url
    if login_url and _prefers_html():
        target = request.full_path.rstrip("?") if request.query_string else request.path
        joiner = "&" if "?" in login_url else "?"
        return redirect(f"{login_url}{joiner}next={quote(target, safe='/')}", 302)
    return json_error(401, "login_required", headers=challenge)


def _prefers_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def _load_profile() -> Profile | AnonymousProfile:
    g_ = request_globals()
    profile = g_.__dict__.get(PROFILE_ATTR) if g_ is not None else None  # set by @plurality_required
    if profile is None:
        profile = request_profile()
    return profile if profile is not None else ANONYMOUS


class _ProfileProxy(LocalProxy):  # type: ignore[type-arg]
    """werkzeug's ``LocalProxy`` (``bool()``, ``==``, ``isinstance``, ``_get_current_object``
    all as usual), with the profile's attributes read directly: ``current_profile.id``
    costs a third of the generic proxy's read, which views and templates pay on every use."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        # Not __getattr__: that runs only after the normal lookup has raised (and
        # built) an AttributeError, which costs more than the rest of the read.
        if not name or name[0] == "_":  # the proxy's own (_get_current_object, __class__...)
            return object.__getattribute__(self, name)
        return getattr(_load_profile(), name)

    def __bool__(self) -> bool:  # "is someone logged in?", as often asked as .id
        return _load_profile() is not ANONYMOUS


#: The logged-in user's :class:`Profile`; falsy (an :class:`AnonymousProfile`) otherwise.
current_profile: Profile = cast(Profile, _ProfileProxy(_load_profile))
