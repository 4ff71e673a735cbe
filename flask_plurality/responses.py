"""Every answer the extension writes itself: JSON, one shape for errors, and each
refusal (log in first, forbidden, login refused, bearer token refused, unavailable).

Callers decide *whether* to refuse; this module only builds the answer, the app's own
handlers (``unauthorized_handler``, ``forbidden_handler``) included. It takes the
extension object as an argument and never imports ``extension.py`` (see :mod:`.state`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Response, current_app, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from .config import config

if TYPE_CHECKING:
    from .extension import Plurality

#: Seconds a client is told to wait when nobody knows better.
DEFAULT_RETRY_AFTER = 10

_MESSAGES = {
    "invalid_request": "Send the Plurality token as JSON {\"token\": ...} or a form field 'token'.",
    "invalid_token": "The Plurality token is invalid or has expired. Sign in again.",
    "token_revoked": (
        "This sign-in was revoked, and the token was issued before that. Sign out of Plurality, then sign in again."
    ),
    "payload_too_large": "The request body is larger than 16 KiB.",
    "forbidden_origin": (
        "This request did not come from a page this site trusts. Post the login from this site's own "
        "page, or as JSON (Content-Type: application/json) from a script or an API client."
    ),
    "too_many_attempts": "Too many failed sign-ins. Wait before trying again.",
    "upstream_unavailable": "Plurality cannot confirm the sign-in right now. Try again shortly.",
    "login_required": "Sign in with Plurality to continue.",
    "session_store_unavailable": "Sessions are unavailable right now. Try again shortly.",
    "not_found": "Not found.",
    "method_not_allowed": "Use another method.",
    "login_refused": "This account may not sign in here.",
    "forbidden": "This account may not open this page.",
    "callback_error": "This site's sign-in check failed. This is not your fault; try again later.",
    "too_many_sessions": "This account is signed in on too many devices. Sign out on one of them first.",
}


#: The header every "log in first" answer carries.
CHALLENGE = {"WWW-Authenticate": "Plurality"}
#: ... on a route that also takes ``Authorization: Bearer`` (RFC 6750).
BEARER_CHALLENGE = {"WWW-Authenticate": "Plurality, Bearer"}
#: The answer to a bearer token that is no good (RFC 6750 section 3.1).
INVALID_BEARER = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return current_app.response_class(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def json_error(
    status: int,
    code: str,
    *,
    message: str | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after)))
    return json_response({"error": code, "message": message or _MESSAGES[code]}, status, headers)


def store_unavailable() -> Response:
    """The answer while the session store cannot be reached."""
    return json_error(503, "session_store_unavailable", retry_after=DEFAULT_RETRY_AFTER)


def upstream_unavailable(retry_after: int | None = None) -> Response:
    """503 ``upstream_unavailable``: Plurality could not be asked (and no grace applies)."""
    return json_error(503, "upstream_unavailable", retry_after=retry_after or DEFAULT_RETRY_AFTER)


def too_many_attempts(retry_after: int) -> Response:
    """429 ``too_many_attempts``: the failed-login throttle refused, without asking Plurality."""
    return json_error(429, "too_many_attempts", retry_after=retry_after)


def login_required(extension: Plurality, challenge: dict[str, str] = CHALLENGE) -> BaseResponse:
    """The answer to a request that is not (or no longer) logged in: the app's
    ``unauthorized_handler``; else, for a browser asking for HTML, a redirect to
    ``PLURALITY_LOGIN_URL`` that comes back here; else 401 ``login_required``."""
    if extension.unauthorized_callback is not None:
        return current_app.make_response(current_app.ensure_sync(extension.unauthorized_callback)())
    login_url = config.login_url
    if login_url and request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        target = request.full_path.rstrip("?") if request.query_string else request.path
        joiner = "&" if "?" in login_url else "?"
        return redirect(f"{login_url}{joiner}next={quote(target, safe='/')}", 302)
    return json_error(401, "login_required", headers=challenge)


def bearer_refused(code: str = "invalid_token") -> Response:
    """401 to a bearer token that is no good: ``WWW-Authenticate`` says so (no login
    page can help a client that sends its own token)."""
    return json_error(401, code, headers=INVALID_BEARER)


def forbidden(extension: Plurality) -> BaseResponse:
    """The answer when ``allow=`` said no: the app's ``forbidden_handler``, or a JSON 403."""
    if extension.forbidden_callback is not None:
        return current_app.make_response(current_app.ensure_sync(extension.forbidden_callback)())
    return json_error(403, "forbidden")


def login_refused(verdict: Any) -> BaseResponse:
    """``before_login``'s "no": a 403 ``login_refused``, with ``verdict`` as its message
    when that is a string (``None``: the default one); any other value is the app's own
    answer, sent as it is."""
    if verdict is None or isinstance(verdict, str):
        return json_error(403, "login_refused", message=verdict or None)
    return current_app.make_response(verdict)


def store_unavailable_into(response: Response) -> None:
    """Turn an already built response into the store-outage 503 (used at save time)."""
    response.status_code = 503
    code = "session_store_unavailable"
    response.set_data(json.dumps({"error": code, "message": _MESSAGES[code]}))
    response.mimetype = "application/json"
    response.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    response.headers.pop("Location", None)
    response.headers.pop("Set-Cookie", None)
