"""The ``plurality`` blueprint: login, logout, session, and the demo token route."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Request, Response, current_app, redirect, request, session
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse
from werkzeug.wsgi import get_input_stream

from . import signals, throttle
from .config import config, missing_credentials, not_configured
from .exceptions import CredentialsRejected, InvalidToken, SessionStoreUnavailable, TokenRevoked, UpstreamUnavailable
from .flask_context import request_context
from .logins import check_login, end_login, login_refusal, start_login, stored_login
from .profile import Profile
from .responses import (
    CHALLENGE,
    DEFAULT_RETRY_AFTER,
    json_error,
    json_response,
    store_unavailable,
    too_many_attempts,
    upstream_unavailable,
)
from .revocation import refuse_revoked_token
from .security import origin_allowed, safe_next
from .state import get_extension, get_state
from .stores import get_store
from .tokens import read_claims
from .user_sessions import TooManySessions, end, end_all, list_sessions

log = logging.getLogger("flask_plurality")

#: Largest body /login and /logout read; a pluralityToken is about 300 bytes.
MAX_BODY: int = 16 * 1024

blueprint = Blueprint("plurality", __name__)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _limit_stream(limit: int) -> None:
    """Read the body through a limit of this view's own, whatever the app's
    ``MAX_CONTENT_LENGTH``, on every Flask 3: ``request.max_content_length`` can be set per
    request only from Flask 3.1 on, but ``request.stream`` is werkzeug's cached property,
    which may be given the stream it would have built with that limit. A stream that
    something read before this view is left as it is (another wrapper round the same
    input would wait for bytes already read).

    The limit is one byte over ``MAX_BODY``: werkzeug stops a streamed (chunked) body at
    the limit, and only that extra byte tells one that is too large from one of exactly
    ``MAX_BODY`` bytes."""
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    if "stream" not in vars(current):
        current.stream = get_input_stream(current.environ, max_content_length=limit)


def _read_post(*, logout: bool = False) -> tuple[str | None, str | None]:
    """(token, next) of a login or logout post, after the origin rule and the body limit (docs/endpoints.rst);
    raise :class:`_Refused` with the answer otherwise.

    A logout may also come with neither ``Origin`` nor ``Referer`` when nothing at all is
    sent (no ``Content-Type``, no body: a cross-site form always sends a Content-Type),
    and a JSON logout may have an empty body."""
    headers = request.headers
    bare = logout and not any(name in headers for name in ("Origin", "Referer", "Content-Type"))
    if not bare and not origin_allowed(config.trusted_origins):
        raise _Refused(json_error(403, "forbidden_origin"))
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _Refused(json_error(413, "payload_too_large"))
    _limit_stream(MAX_BODY + 1)
    try:
        body = request.get_data(cache=True)
        if len(body) > MAX_BODY:
            raise _Refused(json_error(413, "payload_too_large"))
        if bare and body:  # something was sent after all (a chunked body): the origin rule applies
            raise _Refused(json_error(403, "forbidden_origin"))
        if request.mimetype == "application/json":
            data: Any = {} if logout and not body else request.get_json(silent=False)
            if not isinstance(data, dict):
                raise _Refused(json_error(400, "invalid_request"))
            token, next_ = data.get("token"), request.args.get("next")
        elif request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            token = request.form.get("token")
            next_ = request.form.get("next") or request.args.get("next")
        elif body:
            raise _Refused(json_error(400, "invalid_request"))
        else:
            token, next_ = None, request.args.get("next")
    except RequestEntityTooLarge:
        raise _Refused(json_error(413, "payload_too_large")) from None
    except (BadRequest, RecursionError):  # RecursionError: 16 KiB of "[" nests too deep for json
        raise _Refused(json_error(400, "invalid_request")) from None
    if token is not None and not isinstance(token, str):
        raise _Refused(json_error(400, "invalid_request"))
    return token, next_ if isinstance(next_, str) else None


def _done(body: dict[str, Any], next_: str | None) -> BaseResponse:
    """JSON for scripts; for a form post with a safe ``next``, a 303 to it."""
    target = safe_next(next_)
    if target is not None and request.mimetype != "application/json":
        return redirect(target, 303)
    return json_response(body)


def _failed(reason: str) -> None:
    signals.login_failed.send(current_app._get_current_object(), profile=None, reason=reason)  # type: ignore[attr-defined]


@blueprint.after_request
def _not_cached(response: BaseResponse) -> BaseResponse:
    """Answers here carry a profile or set the session cookie: no shared cache may keep them."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@blueprint.post("/login")
def login() -> BaseResponse:
    extension = get_extension()
    missing = missing_credentials(current_app.config)
    if missing:  # before anything else: the throttle below counts attempts, and this is none
        raise not_configured(missing)  # answered 503 not_configured by init_app's handler
    try:
        token, next_ = _read_post()
    except _Refused as refused:
        return refused.response
    if not token:
        return json_error(400, "invalid_request")
    if getattr(session, "store_error", False):
        return store_unavailable()
    # Failed logins are counted per client and per token, in the shared store, before
    # anything else: a throttled request never costs an upstream call. The attempt is
    # counted before asking and taken back unless it failed (see throttle.Attempt).
    try:
        try:
            with throttle.attempt(token):
                claims = read_claims(token, max_length=config.max_token_length)
                answer = extension.answers.lookup(token, claims["exp"])
                profile = Profile.from_upstream(answer.user, claims)
                # Plurality accepts a token until its exp, whatever revoke_user said:
                # the one that a revoked session began with must not start a new one.
                refuse_revoked_token(profile.id, claims, current_app)  # a refusal stays counted
        except throttle.TooManyAttempts as exc:
            _failed(exc.reason)
            return too_many_attempts(exc.retry_after)
        except TokenRevoked as exc:  # logged by the check
            _failed(exc.reason)
            return json_error(401, "token_revoked")
        except InvalidToken as exc:
            log.info("Plurality login refused: %s", exc.reason)
            _failed(exc.reason)  # stays counted
            return json_error(401, "invalid_token")
        except UpstreamUnavailable as exc:
            _failed(exc.reason)
            if not isinstance(exc, CredentialsRejected):
                log.warning("Plurality login could not be checked: %s", exc.reason)
            return upstream_unavailable(exc.retry_after)
        refusal = login_refusal(extension, profile)
        if refusal is not None:
            log.info("Plurality login of user %s refused by the app", profile.id)
            return refusal
        start_login(profile, token, int(claims["exp"]))
    except TooManySessions:
        log.info("Plurality login of user %s refused: PLURALITY_MAX_SESSIONS_PER_USER reached", profile.id)
        _failed("too_many_sessions")
        return json_error(403, "too_many_sessions")
    except SessionStoreUnavailable:
        return store_unavailable()
    log.info("Plurality login for user %s", profile.id)
    signals.logged_in.send(current_app._get_current_object(), profile=profile)  # type: ignore[attr-defined]
    return _done({"authenticated": True, "profile": profile.to_json()}, next_)


@blueprint.post("/logout")
def logout() -> BaseResponse:
    try:
        _, next_ = _read_post(logout=True)
    except _Refused as refused:
        return refused.response
    if getattr(session, "store_error", False):
        return store_unavailable()
    get_extension().logout()
    return _done({"authenticated": False}, next_)


@blueprint.get("/session")
def current_session() -> Response:
    found = _own_login()
    if isinstance(found, Response):
        return found
    return json_response({"authenticated": True, "profile": found[1].to_json()})


# -- the current user's sessions (docs/sessions.rst) ----------------------------------------


def _own_login() -> tuple[Any, Any, str | None] | Response:
    """(app, profile, this session's handle) of the request's login, or the answer: 401
    without one, 503 when the store cannot tell. The check of a protected route (expiry,
    revoke_user), without asking Plurality."""
    app, req, sess = request_context()
    try:
        profile = check_login(get_extension(app), app, sess, req.__dict__)
    except SessionStoreUnavailable:
        return store_unavailable()
    if profile is None:
        return json_error(401, "login_required", headers=CHALLENGE)
    login = stored_login(sess)
    return app, profile, login.handle if login is not None else None


@blueprint.get("/sessions")
def list_own_sessions() -> Response:
    found = _own_login()
    if isinstance(found, Response):
        return found
    app, profile, handle = found
    try:
        listed = list_sessions(app, get_store(app), profile.id, handle)
    except SessionStoreUnavailable:
        return store_unavailable()
    return json_response({"sessions": [info.to_json() for info in listed]})


def _ending() -> tuple[Any, Any, str | None] | Response:
    """The origin rule of a logout (docs/endpoints.rst), then the request's login."""
    try:
        _read_post(logout=True)
    except _Refused as refused:
        return refused.response
    return _own_login()


@blueprint.delete("/sessions/<handle>")
def end_own_session(handle: str) -> Response:
    found = _ending()
    if isinstance(found, Response):
        return found
    app, profile, current = found
    try:
        if handle == current:  # this device: a logout, deleted as this answer is saved
            end_login(reason="ended")
        elif not end(app, get_store(app), profile.id, handle):
            return json_error(404, "not_found", message="You have no session with that handle.")
    except SessionStoreUnavailable:
        return store_unavailable()
    return json_response({"ended": 1, "authenticated": handle != current})


@blueprint.post("/sessions/end-others")
def end_own_other_sessions() -> Response:
    found = _ending()
    if isinstance(found, Response):
        return found
    app, profile, current = found
    try:
        ended = end_all(app, get_store(app), profile.id, keep=current)
    except SessionStoreUnavailable:
        return store_unavailable()
    return json_response({"ended": ended})


@blueprint.post("/fake/token")
def fake_token() -> Response:
    """Demo mode only: a token minted by the stand-in, shaped like the widget's answer."""
    fake = get_state().fake
    if fake is None:
        return json_error(404, "not_found")
    data: Any = request.get_json(silent=True) if request.get_data(cache=True) else {}
    if not isinstance(data, dict):
        return json_error(400, "invalid_request", message='Send nothing, or a JSON object {"email": ...}.')
    email = data.get("email", "")
    if not isinstance(email, str):  # null too: leave the key out for the default
        return json_error(400, "invalid_request", message="'email' must be a string.")
    email = email or "demo@example.com"
    try:
        # One user per email, as with a real account: an app's find-or-create by email works.
        token = fake.issue_token(fake.user_id_for(email), email)
    except OSError:  # the stand-in's state file (instance folder) is unusable: disk full, read-only
        return json_error(
            503,
            "upstream_unavailable",
            message="The demo stand-in cannot record the login.",
            retry_after=DEFAULT_RETRY_AFTER,
        )
    return json_response({"status": True, "pluralityToken": token})


#: Every path of the blueprint and the methods it takes: :func:`wrong_method` answers
#: every other one, and an ``OPTIONS`` lists these (:func:`allow`). A new route goes here too.
METHODS: dict[str, tuple[str, ...]] = {
    "/login": ("POST",),
    "/logout": ("POST",),
    "/session": ("GET",),
    "/fake/token": ("POST",),
    "/openapi.json": ("GET",),
    "/sessions": ("GET",),
    "/sessions/end-others": ("POST",),
    "/sessions/<handle>": ("DELETE",),
}
_ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allow(path: str) -> str:
    """The ``Allow`` header of ``path`` (one of :data:`METHODS`): Flask answers HEAD for a
    GET, and OPTIONS everywhere."""
    taken = METHODS[path]
    return ", ".join([*taken, *(["HEAD"] if "GET" in taken else []), "OPTIONS"])


def wrong_method(path: str, **_variables: str) -> BaseResponse:
    """A method ``path`` does not take: every answer here is JSON (docs/endpoints.rst),
    Flask's 405 too, with the ``Allow`` it would send."""
    return json_error(405, "method_not_allowed", message=f"Use {METHODS[path][0]}.", headers={"Allow": allow(path)})


for _path, _taken in METHODS.items():
    blueprint.add_url_rule(
        _path,
        # One endpoint per path: werkzeug redirects between rules of one endpoint that differ in defaults.
        "wrong_method_" + re.sub(r"\W", "_", _path.strip("/")),
        wrong_method,
        methods=[m for m in _ANY_METHOD if m not in _taken],
        defaults={"path": _path},
        provide_automatic_options=False,
    )


@blueprint.after_request
def _allow_what_is_taken(response: BaseResponse) -> BaseResponse:
    """Flask's own answer to OPTIONS lists every method some rule of the path has, so the
    ones :func:`wrong_method` refuses too: list only those the path takes."""
    rule = request.url_rule
    if request.method == "OPTIONS" and rule is not None and "Allow" in response.headers:
        path = rule.rule.removeprefix((current_app.config["PLURALITY_URL_PREFIX"] or "").rstrip("/"))
        if path in METHODS:
            response.headers["Allow"] = allow(path)
    return response


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    """These endpoints as an OpenAPI 3.1 document, when ``PLURALITY_OPENAPI`` is on."""
    if not config.openapi:
        return json_error(404, "not_found")
    from .openapi import document  # built only for the few apps that serve it

    prefix = current_app.config["PLURALITY_URL_PREFIX"] or ""
    return json_response(document(request.script_root + prefix.rstrip("/")))
