"""The blueprint's endpoints as an OpenAPI 3.1 document, for frontend teams that
generate their clients from one.

It lives next to ``views.py``, which it describes: statuses, bodies, headers and error
codes. ``tests/test_openapi.py`` keeps the two in step (every route documented, nothing
documented that is not a route) and schemathesis checks every answer against it, in
the test suite and in CI against a live server. Served at ``{prefix}/openapi.json``
only when ``PLURALITY_OPENAPI`` is on.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

OPENAPI_VERSION: Final = "3.1.0"

_NULLABLE_STRING: Final = {"type": ["string", "null"]}

#: An empty token is no token: 400 ``invalid_request``, as a missing one.
_TOKEN: Final = {"type": "string", "minLength": 1}

_SCHEMAS: Final[dict[str, Any]] = {
    "Profile": {
        "type": "object",
        "description": "The signed-in Plurality user. Missing upstream fields are null.",
        "properties": {
            "id": {"type": "string", "description": "Plurality's user id (a UUID)."},
            "email": {**_NULLABLE_STRING, "description": "Null for a wallet-only user."},
            "auth_address": {**_NULLABLE_STRING, "description": "The user's wallet address."},
            "proxy_address": {**_NULLABLE_STRING, "description": "The proxy wallet address."},
            "unique_session_id": {**_NULLABLE_STRING, "description": "The token's link to this client app."},
            "expires_at": {"type": ["integer", "null"], "description": "The token's exp, epoch seconds."},
        },
        "required": ["id", "email", "auth_address", "proxy_address", "unique_session_id", "expires_at"],
        "additionalProperties": False,
    },
    "LoggedIn": {
        "type": "object",
        "properties": {"authenticated": {"const": True}, "profile": {"$ref": "#/components/schemas/Profile"}},
        "required": ["authenticated", "profile"],
        "additionalProperties": False,
    },
    "LoggedOut": {
        "type": "object",
        "properties": {"authenticated": {"const": False}},
        "required": ["authenticated"],
        "additionalProperties": False,
    },
    "Error": {
        "type": "object",
        "description": "Every error: a stable code for programs, a sentence for people.",
        "properties": {
            "error": {
                "type": "string",
                "description": "A short stable code (the ones each answer lists), never a trace.",
                "examples": ["invalid_token"],
            },
            "message": {"type": "string", "minLength": 1},
        },
        "required": ["error", "message"],
        "additionalProperties": False,
    },
    "LoginRequest": {
        "type": "object",
        "properties": {"token": {**_TOKEN, "description": "The widget's pluralityToken."}},
        "required": ["token"],
    },
    "LoginForm": {
        "type": "object",
        "properties": {
            "token": _TOKEN,
            "next": {"type": "string", "description": "Where to send the browser after: a path on this site."},
        },
        "required": ["token"],
    },
    "SessionInfo": {
        "type": "object",
        "description": "One of the user's sessions (a browser or device signed in).",
        "properties": {
            "handle": {"type": "string", "description": "Names this session to DELETE; never its id."},
            "created_at": {"type": "integer", "description": "When the login began, epoch seconds."},
            "last_seen": {
                "type": "integer",
                "description": "Its last request, epoch seconds (to PLURALITY_LAST_SEEN_INTERVAL).",
            },
            "user_agent": {**_NULLABLE_STRING, "description": "The browser's User-Agent at login, cut to 200."},
            "ip": {**_NULLABLE_STRING, "description": "The address at login, as PLURALITY_SESSION_IP keeps it."},
            "current": {"type": "boolean", "description": "This request's own session."},
            "expires_at": {"type": "integer", "description": "When it expires (the token's exp), epoch seconds."},
        },
        "required": ["handle", "created_at", "last_seen", "user_agent", "ip", "current", "expires_at"],
        "additionalProperties": False,
    },
    "Sessions": {
        "type": "object",
        "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionInfo"}}},
        "required": ["sessions"],
        "additionalProperties": False,
    },
    "SessionEnded": {
        "type": "object",
        "properties": {
            "ended": {"const": 1},
            "authenticated": {"type": "boolean", "description": "False when it was this request's own session."},
        },
        "required": ["ended", "authenticated"],
        "additionalProperties": False,
    },
    "OthersEnded": {
        "type": "object",
        "properties": {"ended": {"type": "integer", "minimum": 0, "description": "How many sessions ended."}},
        "required": ["ended"],
        "additionalProperties": False,
    },
    "FakeTokenRequest": {
        "type": "object",
        "properties": {"email": {"type": "string", "description": "Empty or left out: demo@example.com."}},
    },
    "FakeToken": {
        "type": "object",
        "description": "Shaped like the widget's getLoginInfo().data.",
        "properties": {"status": {"const": True}, "pluralityToken": {"type": "string"}},
        "required": ["status", "pluralityToken"],
        "additionalProperties": False,
    },
}

_HEADERS: Final[dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
    },
    "WWW-Authenticate": {"description": "The login scheme.", "required": True, "schema": {"const": "Plurality"}},
    "Allow": {"description": "The methods the route accepts.", "required": True, "schema": {"type": "string"}},
    "Location": {"description": "The safe `next` given.", "required": True, "schema": {"type": "string"}},
    "Cache-Control": {
        "description": "Answers carry a profile or a session cookie: never stored.",
        "schema": {"const": "no-store"},
    },
}


def _error(
    description: str, *codes: str, headers: tuple[str, ...] = (), sometimes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A documented error answer: which codes it may carry, and its headers (``sometimes``:
    sent with some of the codes only)."""
    listed = ", ".join(f"`{c}`" for c in codes)
    answer: dict[str, Any] = {
        "description": f"{description} (`error`: {listed})",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        "headers": {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}},
    }
    for name in headers:
        answer["headers"][name] = {"$ref": f"#/components/headers/{name}"}
    for name in sometimes:
        answer["headers"][name] = {**_HEADERS[name], "required": False}
    return answer


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        "headers": {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}},
    }


_SEE_OTHER: Final = {
    "description": "A form post with a safe `next`: the browser is sent there.",
    "headers": {"Location": {"$ref": "#/components/headers/Location"}},
}
_BAD_REQUEST: Final = _error("The body is not a JSON object or a form, or the token is missing", "invalid_request")
_FORBIDDEN_ORIGIN: Final = _error(
    "Cross-origin post: Origin (else Referer) is not this site's or a trusted one; or neither "
    "header and not a JSON body",
    "forbidden_origin",
)
_TOO_LARGE: Final = _error("The body is over 16 KiB", "payload_too_large")
_STORE_DOWN: Final = "the session store cannot be reached"
_NEXT: Final = {
    "name": "next",
    "in": "query",
    "required": False,
    "description": "For form posts: where to send the browser after (a path on this site).",
    "schema": {"type": "string"},
}


def _sessions_paths() -> dict[str, Any]:
    """The current user's sessions (docs/sessions.rst)."""
    ending_body = {
        "required": False,
        "description": "Nothing, or an empty JSON object: the origin rule of /logout applies.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    login_required = _error("Nobody is logged in", "login_required", headers=("WWW-Authenticate",))
    store_down = _error(f"Unknown: {_STORE_DOWN}", "session_store_unavailable", headers=("Retry-After",))
    return {
        "/sessions": {
            "get": {
                "operationId": "sessions",
                "summary": "Where the current user is signed in",
                "description": "Every live session of the logged-in user, the most recently seen first.",
                "responses": {"200": _ok("The user's sessions.", "Sessions"), "401": login_required, "503": store_down},
            },
        },
        "/sessions/{handle}": {
            "parameters": [
                {
                    "name": "handle",
                    "in": "path",
                    "required": True,
                    "description": "A `handle` from GET /sessions.",
                    "schema": {"type": "string"},
                }
            ],
            "delete": {
                "operationId": "end_session",
                "summary": "Sign out one of the user's sessions (this one too: a logout)",
                "description": "As final as a logout, on every worker: the session's requests are refused.",
                "requestBody": ending_body,
                "responses": {
                    "200": _ok("That session ended.", "SessionEnded"),
                    "400": _error("A body that is neither JSON nor a form", "invalid_request"),
                    "401": login_required,
                    "403": _FORBIDDEN_ORIGIN,
                    "404": _error("The user has no session with this handle", "not_found"),
                    "413": _TOO_LARGE,
                    "503": store_down,
                },
            },
        },
        "/sessions/end-others": {
            "post": {
                "operationId": "end_other_sessions",
                "summary": "Sign out everywhere else",
                "description": "Ends every session of the user but this request's own.",
                "requestBody": ending_body,
                "responses": {
                    "200": _ok("How many ended.", "OthersEnded"),
                    "400": _error("A body that is neither JSON nor a form", "invalid_request"),
                    "401": login_required,
                    "403": _FORBIDDEN_ORIGIN,
                    "413": _TOO_LARGE,
                    "503": store_down,
                },
            },
        },
    }


def _paths() -> dict[str, Any]:
    login_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LoginRequest"}},
            "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/LoginForm"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/LoginForm"}},
        },
    }
    logout_body = {
        "required": False,
        "description": "Optional; a JSON logout may be empty, a form may carry `next`.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {"next": {"type": "string"}}}
            },
        },
    }
    return {
        "/login": {
            "post": {
                "operationId": "login",
                "summary": "Log in with the widget's pluralityToken",
                "description": (
                    "Checks the token with Plurality, then stores the login in a server-side session "
                    "under a new session id (the cookie). A token that is not JWT-shaped or has expired "
                    "is refused without asking Plurality."
                ),
                "parameters": [_NEXT],
                "requestBody": login_body,
                "responses": {
                    "200": _ok("Logged in; the session cookie is set.", "LoggedIn"),
                    "303": _SEE_OTHER,
                    "400": _BAD_REQUEST,
                    "401": _error(
                        "The token is invalid, expired, or for another app; or it was issued before its user "
                        "was revoked (revoke_user): sign out of the widget and sign in again for a new one",
                        "invalid_token",
                        "token_revoked",
                    ),
                    "403": _error(
                        "A cross-origin post, the app refused this user, or the user is signed in on "
                        "PLURALITY_MAX_SESSIONS_PER_USER devices already (PLURALITY_SESSION_LIMIT = 'refuse')",
                        "forbidden_origin",
                        "login_refused",
                        "too_many_sessions",
                    ),
                    "413": _TOO_LARGE,
                    "429": _error(
                        "Too many failed logins from this client or with this token; Plurality was not asked",
                        "too_many_attempts",
                        headers=("Retry-After",),
                    ),
                    "500": _error(
                        "The app's before_login check answered what it may not (a bug of the app, in its log)",
                        "callback_error",
                    ),
                    "503": _error(
                        f"Plurality cannot confirm the login right now, or {_STORE_DOWN} (both with "
                        "`Retry-After`); or this server has no Plurality client id or secret set, "
                        "which waiting does not mend (no `Retry-After`)",
                        "upstream_unavailable",
                        "session_store_unavailable",
                        "not_configured",
                        sometimes=("Retry-After",),
                    ),
                },
            },
        },
        "/logout": {
            "post": {
                "operationId": "logout",
                "summary": "End the login and delete its server-side session",
                "description": "Answers the same whether or not anyone was logged in.",
                "parameters": [_NEXT],
                "requestBody": logout_body,
                "responses": {
                    "200": _ok("Logged out.", "LoggedOut"),
                    "303": _SEE_OTHER,
                    "400": _error("A body that is neither JSON nor a form", "invalid_request"),
                    "403": _FORBIDDEN_ORIGIN,
                    "413": _TOO_LARGE,
                    "503": _error(
                        f"The logout cannot be made final: {_STORE_DOWN}",
                        "session_store_unavailable",
                        headers=("Retry-After",),
                    ),
                },
            },
        },
        "/session": {
            "get": {
                "operationId": "session",
                "summary": "Who is logged in (without asking Plurality)",
                "responses": {
                    "200": _ok("A login.", "LoggedIn"),
                    "401": _error("Nobody is logged in", "login_required", headers=("WWW-Authenticate",)),
                    "503": _error(f"Unknown: {_STORE_DOWN}", "session_store_unavailable", headers=("Retry-After",)),
                },
            }
        },
        **_sessions_paths(),
        "/fake/token": {
            "post": {
                "operationId": "fake_token",
                "summary": "Demo mode only: a token minted by the built-in stand-in",
                "description": "Answers 404 unless PLURALITY_FAKE is on. Post the token to /login.",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FakeTokenRequest"}}},
                },
                "responses": {
                    "200": {
                        **_ok("A fresh token for a demo user.", "FakeToken"),
                        "links": {
                            "LogIn": {
                                "operationId": "login",
                                "requestBody": {"token": "$response.body#/pluralityToken"},
                            }
                        },
                    },
                    "400": _error("The body is not a JSON object, or `email` is not a string", "invalid_request"),
                    "404": _error("Not in demo mode", "not_found"),
                    "503": _error(
                        "The stand-in's state file (in the instance folder) cannot be written",
                        "upstream_unavailable",
                        headers=("Retry-After",),
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (when PLURALITY_OPENAPI is on)",
                "responses": {
                    "200": {
                        "description": "The OpenAPI description of these endpoints.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "404": _error("PLURALITY_OPENAPI is off", "not_found"),
                },
            }
        },
    }


def _version() -> str:
    try:
        return version("flask-plurality")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0"


def document(server_url: str = "/plurality") -> dict[str, Any]:
    """The OpenAPI document, with the blueprint mounted at ``server_url``."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "flask-plurality",
            "version": _version(),
            "summary": "Log in with Plurality Network's widget; a server-side session holds the login.",
            "description": (
                'Every answer is JSON (`application/json`); errors are `{"error", "message"}` and never '
                "carry a trace, the token or the client secret. The session is a cookie: send requests "
                "with credentials. Cross-origin posts are refused unless the origin is trusted. A method "
                "that a path does not list is answered 405 `method_not_allowed`, with `Allow`."
            ),
        },
        "servers": [{"url": server_url or "/", "description": "where the blueprint is mounted"}],
        "paths": _paths(),
        "components": {"schemas": _SCHEMAS, "headers": _HEADERS},
    }
