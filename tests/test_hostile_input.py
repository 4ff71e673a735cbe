"""Property tests: whatever arrives at the blueprint and a protected route, only the
documented statuses come back (never a 500, a trace, the token or the secret), and
Plurality is asked only about JWT-shaped, unexpired tokens."""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, build_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import BadHost
from werkzeug.test import TestResponse

from flask_plurality.testing import FakePlurality

MAX_TOKEN = 4096  # PLURALITY_MAX_TOKEN_LENGTH's default
ERRORS = {
    "invalid_request",
    "invalid_token",
    "payload_too_large",
    "forbidden_origin",
    "too_many_attempts",
    "upstream_unavailable",
    "login_required",
    "session_store_unavailable",
}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class World:
    fake: FakePlurality
    lenient: Flask  # no throttling in the way
    strict: Flask  # throttles after 3 failures
    pool: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with FakePlurality() as fake:
        fake.add_client("other-app", "other-secret")
        lenient = build_app(fake, str(tmp_path_factory.mktemp("lenient")), PLURALITY_LOGIN_MAX_FAILURES=10**9)
        strict = build_app(fake, str(tmp_path_factory.mktemp("strict")), PLURALITY_LOGIN_MAX_FAILURES=3)
        revoked = [fake.issue_token() for _ in range(2)]
        for token in revoked:
            fake.revoke(token)
        future = int(time.time()) + 3600
        pool = {
            "valid": [fake.issue_token() for _ in range(6)],
            "expired": [fake.issue_token(ttl=-10) for _ in range(3)],
            "revoked": revoked,
            "other_app": [fake.issue_token(client_id="other-app") for _ in range(2)],
            "forged": [jwt.encode({"id": "x", "exp": future}, "k" * 32, algorithm="HS256") for _ in range(2)],
        }
        yield World(fake, lenient, strict, pool)


# -- an oracle written apart from flask_plurality.tokens ----------------------------


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def may_reach_plurality(token: str) -> bool:
    """JWT-shaped (three base64url JSON parts, HS256, a real signature part), unexpired,
    and not expiring implausibly far away (README's Security section)."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN or len(parts) != 3:
        return False
    if not all(re.fullmatch(r"[A-Za-z0-9_-]{2,}", p) for p in parts):
        return False
    try:
        header, payload = _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(payload, dict):
        return False
    exp = payload.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        return False
    return time.time() < exp <= time.time() + 366 * 86400  # README: a year at most


# -- strategies -----------------------------------------------------------------------

HEADER_TEXT = st.text(
    st.characters(codec="latin-1", exclude_characters="\r\n\x00"),
    max_size=60,
)
B64URL = st.text(st.sampled_from(string.ascii_letters + string.digits + "-_"), max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _segment(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@st.composite
def tokens(draw: st.DrawFn, world: World) -> Any:
    kind = draw(st.sampled_from(["valid", "pool", "mangled", "crafted", "shaped", "text", "valid", "not_a_string"]))
    if kind == "valid":
        return draw(st.sampled_from(world.pool["valid"]))
    if kind == "pool":
        group = draw(st.sampled_from(["valid", "expired", "revoked", "other_app", "forged"]))
        return draw(st.sampled_from(world.pool[group]))
    if kind == "mangled":
        base = draw(st.sampled_from(world.pool["valid"] + world.pool["expired"]))
        at = draw(st.integers(0, len(base)))
        how = draw(st.sampled_from(["flip", "cut", "insert", "dots", "pad"]))
        char = draw(st.sampled_from("A_-.=+/ \t\x00é"))
        if how == "flip":
            return base[:at] + char + base[at + 1 :]
        if how == "cut":
            return base[:at]
        if how == "insert":
            return base[:at] + char + base[at:]
        if how == "dots":
            return base.replace(".", draw(st.sampled_from(["..", ". ", "", ".x."])), 1)
        return base + "A" * draw(st.sampled_from([1, 100, MAX_TOKEN]))
    if kind == "crafted":  # real JSON inside, odd values: exp of every type, other algs
        header = {"alg": draw(st.sampled_from(["HS256", "none", "RS256", "hs256"])), "typ": "JWT"}
        exp = draw(
            st.one_of(
                # Around now; drawn as an offset so that the draws do not depend on the clock.
                st.integers(-(10**6), 10**6).map(lambda offset: int(time.time()) + offset),
                st.floats(allow_nan=True, allow_infinity=True),
                JSON_VALUES,
            )
        )
        payload = draw(st.sampled_from([{"exp": exp}, {"exp": exp, "id": "u"}, {}, exp]))
        return f"{_segment(header)}.{_segment(payload)}.{draw(B64URL)}"
    if kind == "shaped":
        return f"{draw(B64URL)}.{draw(B64URL)}.{draw(B64URL)}"
    if kind == "text":
        return draw(st.text(max_size=300))
    return draw(JSON_VALUES)


@dataclass
class Attempt:
    path: str
    method: str
    body: bytes
    headers: dict[str, str]
    environ: dict[str, Any]
    token: Any
    cookie: str  # "none", "junk" or "logged_in"
    strict: bool


ORIGINS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "http://localhost",
            "http://localhost:80",
            "http://localhost:8080",
            "https://localhost",
            "null",
            "",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://[::1]",
            "http://localhost/path",
        ]
    ),
    HEADER_TEXT,
)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "application/jwt",
            "application/json-patch+json",
            "",
        ]
    ),
    HEADER_TEXT,
)


@st.composite
def bodies(draw: st.DrawFn, token: Any) -> bytes:
    kind = draw(st.sampled_from(["json", "json", "form", "any_json", "binary", "large", "nested", "empty"]))
    if kind == "json":
        extra = draw(st.dictionaries(st.sampled_from(["next", "pad", "token2", "user"]), JSON_VALUES, max_size=2))
        return json.dumps({**extra, "token": token}).encode()
    if kind == "form":
        fields = {"token": token if isinstance(token, str) else json.dumps(token)}
        if draw(st.booleans()):
            fields["next"] = draw(st.text(max_size=40))
        return urlencode(fields).encode()
    if kind == "any_json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=400))
    if kind == "large":
        size = draw(st.sampled_from([16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 40_000]))
        prefix = json.dumps({"token": token, "pad": ""}).encode()[:-2]
        return prefix + b"x" * max(0, size - len(prefix) - 2) + b'"}'
    if kind == "nested":
        depth = draw(st.integers(100, 16_000))
        return draw(st.sampled_from([b"[", b'{"a":', b'{"token":['])) * depth
    return b""


_HOST_ORACLE = Flask("host-oracle")


def flask_routes_host(host: str) -> bool:
    """Flask refuses a Host its URL map cannot bind (werkzeug's ``BadHost``, e.g. "." or
    "a..b": an HTML 400 from every Flask app, raised before any blueprint or view runs).
    Such a request never arrives at the routes these tests are about."""
    with _HOST_ORACLE.test_request_context("/", headers={"Host": host}):
        return not isinstance(request.routing_exception, BadHost)


HOST_TEXT = HEADER_TEXT.filter(flask_routes_host)


@st.composite
def attempts(draw: st.DrawFn, world: World, paths: list[tuple[str, str]]) -> Attempt:
    path, method = draw(st.sampled_from(paths))
    token = draw(tokens(world))
    environ: dict[str, Any] = {"REMOTE_ADDR": draw(st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", ""]))}
    cookie = draw(st.sampled_from(["none", "junk", "logged_in"]))
    if draw(st.booleans()):
        # Half the time a well-formed request (JSON or a form with next), so that the
        # fuzz also reaches what lies behind the origin rule and the body checks.
        if draw(st.booleans()):
            body = json.dumps({"token": token}).encode()
            headers = {"Origin": "http://localhost", "Content-Type": "application/json"}
        else:
            next_ = draw(st.sampled_from(["/dashboard", "//evil.com", "/\\evil.com", "%2F%2Fevil.com"]) | st.text())
            fields = {"token": token if isinstance(token, str) else "", "next": next_}
            body = urlencode(fields).encode()
            headers = {"Referer": "http://localhost/page", "Content-Type": "application/x-www-form-urlencoded"}
        return Attempt(path, method, body, headers, environ, token, cookie, draw(st.booleans()))
    body = draw(bodies(token))
    headers = {}
    for name, values in (
        ("Origin", ORIGINS),
        ("Referer", ORIGINS),
        ("Content-Type", CONTENT_TYPES),
        ("Accept", st.none() | st.sampled_from(["text/html", "application/json", "*/*"]) | HEADER_TEXT),
        ("X-Forwarded-For", st.none() | HEADER_TEXT),
        ("Host", st.none() | st.sampled_from(["localhost", "localhost:8080", "evil.example", "[::1]"]) | HOST_TEXT),
    ):
        value = draw(values)
        if value is not None:
            headers[name] = value
    length = draw(st.sampled_from(["exact", "exact", "exact", "none", "short", "long", "huge", "junk", "chunked"]))
    if length == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        environ["wsgi.input_terminated"] = True
    elif length != "exact":
        environ["CONTENT_LENGTH"] = {
            "none": "",
            "short": str(max(0, len(body) - 5)),
            "long": str(len(body) + 5),
            "huge": "99999999999999999999",
            "junk": draw(HEADER_TEXT),
        }[length]
    return Attempt(path, method, body, headers, environ, token, cookie, draw(st.booleans()))


def send(world: World, attempt: Attempt) -> tuple[TestResponse, list[Any], str | None]:
    """Send it; return the answer, the upstream calls it caused, and the session's token."""
    app = world.strict if attempt.strict else world.lenient
    client: FlaskClient = app.test_client()
    session_token = None
    if attempt.cookie == "logged_in":
        session_token = world.fake.issue_token()
        assert client.post("/plurality/login", json={"token": session_token}).status_code == 200
    elif attempt.cookie == "junk":
        client.set_cookie("session", "not-a-session-anyone-has")
    before = len(world.fake.calls)
    content_type = attempt.headers.pop("Content-Type", None)
    response = client.open(
        attempt.path,
        method=attempt.method,
        input_stream=io.BytesIO(attempt.body),
        content_type=content_type,
        headers=attempt.headers,
        environ_overrides=attempt.environ,
    )
    attempt.headers["Content-Type"] = content_type or ""
    return response, world.fake.calls[before:], session_token


def check_answer(response: TestResponse, allowed: set[int], secrets_: list[str]) -> None:
    assert response.status_code in allowed, (response.status_code, response.get_data()[:200])
    text = response.get_data(as_text=True)
    for secret in secrets_:
        assert secret not in text
        assert secret not in str(response.headers)
    assert "Traceback" not in text
    if response.status_code == 303:
        location = response.headers["Location"]
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location
        return
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    if response.status_code >= 400:
        assert body["error"] in ERRORS and isinstance(body["message"], str)
    if response.status_code in (429, 503):
        assert int(response.headers["Retry-After"]) >= 1
    if response.status_code == 401 and body["error"] == "login_required":
        assert response.headers["WWW-Authenticate"] == "Plurality"


def secrets_of(world: World, *tokens_: Any) -> list[str]:
    found = [world.fake.client_secret]
    found += [t for t in tokens_ if isinstance(t, str) and len(t) >= 20]
    return found


# -- the properties -------------------------------------------------------------------
#
# The stand-in and the store are healthy here, so a 503 (documented for outages) would
# be our own failure: it is not accepted either.


@FUZZ
@given(data=st.data())
def test_login_and_logout_answer_only_documented_statuses(world: World, data: st.DataObject) -> None:
    attempt = data.draw(attempts(world, [("/plurality/login", "POST"), ("/plurality/logout", "POST")]))
    response, calls, session_token = send(world, attempt)
    check_answer(response, {200, 303, 400, 401, 403, 413, 429}, secrets_of(world, attempt.token, session_token))
    for call in calls:
        assert attempt.path == "/plurality/login"
        assert call.token == attempt.token
        assert may_reach_plurality(call.token), call.token
    if response.status_code == 200 and attempt.path == "/plurality/login":
        assert isinstance(attempt.token, str) and may_reach_plurality(attempt.token)
        assert response.get_json()["authenticated"] is True


@FUZZ
@given(data=st.data())
def test_session_and_protected_routes_answer_only_documented_statuses(world: World, data: st.DataObject) -> None:
    paths = [("/plurality/session", "GET"), ("/protected", "GET"), ("/protected", "POST"), ("/sensitive", "POST")]
    attempt = data.draw(attempts(world, paths))
    response, calls, session_token = send(world, attempt)
    allowed = {200, 401} if attempt.cookie == "logged_in" else {401}
    check_answer(response, allowed, secrets_of(world, attempt.token, session_token))
    if attempt.cookie != "logged_in":
        assert response.get_json()["error"] == "login_required"
    # Only a revalidating route asks Plurality, and only about the session's own token.
    assert all(call.token == session_token for call in calls)
    assert not calls or attempt.path == "/sensitive"


@FUZZ
@given(data=st.data())
def test_only_jwt_shaped_unexpired_tokens_reach_plurality(world: World, data: st.DataObject) -> None:
    """A clean same-origin JSON post, only the token varies."""
    token = data.draw(tokens(world))
    client = world.lenient.test_client()
    before = len(world.fake.calls)
    response = client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN)
    calls = world.fake.calls[before:]
    check_answer(response, {200, 400, 401}, secrets_of(world, token))
    if not isinstance(token, str) or not token:
        assert response.status_code == 400
    for call in calls:
        assert call.token == token and may_reach_plurality(token)
    if isinstance(token, str) and not may_reach_plurality(token):
        assert calls == [] and response.status_code in (400, 401)
    if token in world.pool["valid"]:
        assert response.status_code == 200
    if token in world.pool["expired"] + world.pool["revoked"] + world.pool["other_app"] + world.pool["forged"]:
        assert response.status_code == 401
