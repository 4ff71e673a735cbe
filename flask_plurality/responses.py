"""Every answer the extension writes itself: JSON, one shape for errors."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app

#: Seconds a client is told to wait when nobody knows better.
DEFAULT_RETRY_AFTER = 10

_MESSAGES = {
    "invalid_request": "Send the Plurality token as JSON {\"token\": ...} or a form field 'token'.",
    "invalid_token": "The Plurality token is invalid or has expired. Sign in again.",
    "payload_too_large": "The request body is larger than 16 KiB.",
    "forbidden_origin": "This request did not come from a page this site trusts.",
    "too_many_attempts": "Too many failed sign-ins. Wait before trying again.",
    "upstream_unavailable": "Plurality cannot confirm the sign-in right now. Try again shortly.",
    "login_required": "Sign in with Plurality to continue.",
    "session_store_unavailable": "Sessions are unavailable right now. Try again shortly.",
    "not_found": "Not found.",
    "method_not_allowed": "Use POST.",
    "login_refused": "This account may not sign in here.",
    "forbidden": "This account may not open this page.",
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


def store_unavailable_into(response: Response) -> None:
    """Turn an already built response into the store-outage 503 (used at save time)."""
    response.status_code = 503
    code = "session_store_unavailable"
    response.set_data(json.dumps({"error": code, "message": _MESSAGES[code]}))
    response.mimetype = "application/json"
    response.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    response.headers.pop("Location", None)
    response.headers.pop("Set-Cookie", None)
