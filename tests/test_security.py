"""Every refusal of README's "Security" section, one test each: fixation, replay,
foreign origins, open redirects, oversize bodies, junk tokens, cookie defaults, TLS."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory, error_of, login
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_plurality.answers import upstream_settings
from flask_plurality.testing import FakePlurality


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie is not None else None


def logged_in(client: FlaskClient) -> bool:
    return client.get("/protected").status_code == 200


def stored(app: Flask, sid: str) -> Any:
    """The session's entry in the (cachelib) store, or None."""
    interface: Any = app.session_interface
    return interface.cache.get(interface.key_prefix + sid)


# -- fixation and replay ------------------------------------------------------------


def test_login_gives_the_session_a_new_id(client: FlaskClient, fake: FakePlurality) -> None:
    with client.session_transaction() as sess:  # an anonymous session already stored
        sess["cart"] = ["apple"]
    before = session_cookie(client)
    assert before
    app = client.application
    assert stored(app, before) is not None

    assert login(client, fake.issue_token()).status_code == 200

    after = session_cookie(client)
    assert after and after != before
    assert stored(app, before) is None  # the old entry is gone, not just orphaned
    assert stored(app, after) is not None
    # Whoever knew (or planted) the old id holds nothing: no login, no anonymous data.
    old = app.test_client()
    old.set_cookie("session", before)
    assert old.get("/protected").status_code == 401
    assert old.get("/plurality/session").status_code == 401
    with old.session_transaction() as sess:
        assert "cart" not in sess


def test_a_planted_session_id_is_never_adopted(client: FlaskClient, fake: FakePlurality) -> None:
    client.set_cookie("session", "attacker-chose-this-id")
    assert login(client, fake.issue_token()).status_code == 200
    assert session_cookie(client) != "attacker-chose-this-id"
    assert stored(client.application, "attacker-chose-this-id") is None
    attacker = client.application.test_client()
    attacker.set_cookie("session", "attacker-chose-this-id")
    assert attacker.get("/protected").status_code == 401


def test_logging_in_as_another_user_drops_the_first_users_data(client: FlaskClient, fake: FakePlurality) -> None:
    assert login(client, fake.issue_token(email="a@example.com")).status_code == 200
    with client.session_transaction() as sess:
        sess["draft"] = "a's secret draft"
    assert login(client, fake.issue_token(email="b@example.com")).status_code == 200
    with client.session_transaction() as sess:
        assert "draft" not in sess
    assert client.get("/protected").get_json()["email"] == "b@example.com"


def test_a_cookie_replayed_after_logout_is_dead(client: FlaskClient, fake: FakePlurality) -> None:
    assert login(client, fake.issue_token()).status_code == 200
    stolen = session_cookie(client)
    assert stolen
    assert logged_in(client)
    response = client.post("/plurality/logout", json={}, headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert response.get_json() == {"authenticated": False}

    thief = client.application.test_client()
    thief.set_cookie("session", stolen)
    error_of(thief.get("/protected"), 401, "login_required")
    assert thief.get("/plurality/session").status_code == 401
    assert thief.post("/sensitive").status_code == 401
    assert thief.get("/async").status_code == 401
    assert thief.get("/items").status_code == 401


# -- the origin rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # sandboxed iframes, file: pages, some redirects
        {"Origin": ""},
        {"Origin": "http://localhost:8080"},  # same host, other port
        {"Origin": "https://localhost"},  # same host, other scheme
        {"Origin": "http://localhost.evil.example"},
        {"Referer": "https://evil.example/page"},
        {"Referer": "http://localhost:5000/page"},
        {"Referer": "not a url"},
        {"Origin": "https://evil.example", "Referer": "http://localhost/page"},  # Origin wins
    ],
    ids=lambda h: " ".join(f"{k}={v!r}" for k, v in h.items()),
)
def test_a_foreign_origin_cannot_log_in(client: FlaskClient, fake: FakePlurality, headers: dict[str, str]) -> None:
    token = fake.issue_token()
    as_json = client.post("/plurality/login", json={"token": token}, headers=headers)
    as_form = client.post("/plurality/login", data={"token": token}, headers=headers)
    for response in (as_json, as_form):
        error_of(response, 403, "forbidden_origin", token)
    assert fake.calls == []
    assert not logged_in(client)
    assert client.get("/plurality/session").status_code == 401


def test_a_form_post_without_origin_or_referer_is_refused(client: FlaskClient, fake: FakePlurality) -> None:
    """A cross-site HTML form can send these types; with no header to vouch for it, refuse."""
    token = fake.issue_token()
    form = client.post("/plurality/login", data={"token": token})
    multipart = client.post("/plurality/login", data={"token": token}, content_type="multipart/form-data")
    text = client.post("/plurality/login", data=json.dumps({"token": token}), content_type="text/plain")
    for response in (form, multipart, text):
        error_of(response, 403, "forbidden_origin", token)
        # What to do instead, for someone trying the endpoint with curl -d token=...
        assert "as JSON (Content-Type: application/json)" in response.json["message"]
    assert fake.calls == []


def test_a_json_post_without_origin_or_referer_is_allowed(client: FlaskClient, fake: FakePlurality) -> None:
    """A non-browser client (curl, a mobile app); a cross-site HTML form cannot send JSON."""
    response = client.post("/plurality/login", json={"token": fake.issue_token()})
    assert response.status_code == 200
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost"},
        {"Origin": "http://LOCALHOST:80"},  # same origin, spelled differently
        {"Referer": "http://localhost/some/page?x=1"},
    ],
)
def test_our_own_origin_is_allowed(client: FlaskClient, fake: FakePlurality, headers: dict[str, str]) -> None:
    response = client.post("/plurality/login", data={"token": fake.issue_token()}, headers=headers)
    assert response.status_code == 200
    assert logged_in(client)


def test_trusted_origins_are_allowed_and_only_those(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_TRUSTED_ORIGINS="https://app.example.com, http://127.0.0.1:3000")
    client = app.test_client()
    for origin in ("https://app.example.com", "https://APP.example.com:443", "http://127.0.0.1:3000"):
        response = client.post("/plurality/login", json={"token": fake.issue_token()}, headers={"Origin": origin})
        assert response.status_code == 200, origin
    for origin in ("http://app.example.com", "https://app.example.com:8443", "http://127.0.0.1:3001"):
        response = client.post("/plurality/login", json={"token": fake.issue_token()}, headers={"Origin": origin})
        assert response.status_code == 403, origin
    # The setting may also be a list.
    listed = make_app(PLURALITY_TRUSTED_ORIGINS=["https://shop.example"]).test_client()
    assert login(listed, fake.issue_token(), headers={"Origin": "https://shop.example:443"}).status_code == 200
    assert login(listed, fake.issue_token(), headers={"Origin": "https://evil.example"}).status_code == 403


def test_a_foreign_origin_cannot_log_the_user_out(client: FlaskClient, fake: FakePlurality) -> None:
    assert login(client, fake.issue_token()).status_code == 200
    attempts: list[tuple[dict[str, str] | None, dict[str, str]]] = [
        ({}, {"Origin": "https://evil.example"}),
        ({}, {"Origin": "null"}),
        ({"x": "1"}, {}),  # a form with neither Origin nor Referer (a bodyless one is allowed: test_login.py)
        (None, {"Origin": "https://evil.example"}),  # no body at all
    ]
    for data, headers in attempts:
        error_of(client.post("/plurality/logout", data=data, headers=headers), 403, "forbidden_origin")
    assert logged_in(client)
    assert client.get("/plurality/session").status_code == 200
    assert client.post("/plurality/logout", data={}, headers=SAME_ORIGIN).status_code == 200
    assert not logged_in(client)


# -- open redirects -----------------------------------------------------------------

HOSTILE_NEXT = [
    "//evil.com",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "https://evil.com",
    "HTTPS://evil.com/",
    "http:evil.com",
    "%2F%2Fevil.com",
    "/%2F/evil.com",
    "/%5Cevil.com",
    "/%255Cevil.com",  # encoded twice
    "/%25255C%25255Cevil.com",  # encoded more often than anyone decodes
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    "/%09/evil.com",
    "/%0d%0aSet-Cookie:x=1",
    "/\x00/evil.com",
    "/\u200b/evil.com",  # zero-width space
    " //evil.com",
    "evil.com",
    "/" + "a" * 5000,
]


@pytest.mark.parametrize("target", HOSTILE_NEXT, ids=repr)
def test_an_unsafe_next_is_ignored(client: FlaskClient, fake: FakePlurality, target: str) -> None:
    for response in (
        client.post("/plurality/login", data={"token": fake.issue_token(), "next": target}, headers=SAME_ORIGIN),
        client.post("/plurality/logout", data={"next": target}, headers=SAME_ORIGIN),
    ):
        assert response.status_code == 200
        assert "Location" not in response.headers
        assert response.mimetype == "application/json"


def test_an_unsafe_next_in_the_query_is_ignored(client: FlaskClient, fake: FakePlurality) -> None:
    response = client.post(
        "/plurality/login", query_string={"next": "//evil.com"}, data={"token": fake.issue_token()}, headers=SAME_ORIGIN
    )
    assert response.status_code == 200 and "Location" not in response.headers


@pytest.mark.parametrize("target", ["/dashboard", "/a/b?c=d#e", "/caf%C3%A9", "/javascript:alert(1)"])
def test_a_safe_next_redirects_form_posts(client: FlaskClient, fake: FakePlurality, target: str) -> None:
    response = client.post("/plurality/login", data={"token": fake.issue_token(), "next": target}, headers=SAME_ORIGIN)
    assert response.status_code == 303
    assert response.headers["Location"] == target
    # A script posting JSON gets JSON, whatever next says.
    response = client.post(
        "/plurality/login", query_string={"next": target}, json={"token": fake.issue_token()}, headers=SAME_ORIGIN
    )
    assert response.status_code == 200 and "Location" not in response.headers


# -- input limits, before any upstream call -----------------------------------------


@pytest.mark.parametrize("kind", ["json", "form", "text"])
def test_a_body_over_16_kib_is_refused_by_its_content_length(
    client: FlaskClient, fake: FakePlurality, kind: str
) -> None:
    token, pad = fake.issue_token(), "x" * (16 * 1024 + 1)
    if kind == "json":
        body = json.dumps({"token": token, "pad": pad})
        response = client.post("/plurality/login", data=body, content_type="application/json", headers=SAME_ORIGIN)
    elif kind == "form":
        response = client.post("/plurality/login", data={"token": token, "pad": pad}, headers=SAME_ORIGIN)
    else:
        response = client.post("/plurality/login", data=pad, content_type="text/plain", headers=SAME_ORIGIN)
    error_of(response, 413, "payload_too_large")
    assert fake.calls == []


@pytest.mark.parametrize("path", ["/plurality/login", "/plurality/logout"])
def test_a_streamed_body_over_16_kib_is_refused(client: FlaskClient, fake: FakePlurality, path: str) -> None:
    """Chunked transfer: no Content-Length, the server marks the stream terminated."""
    body = json.dumps({"token": fake.issue_token(), "pad": "x" * 40_000}).encode()
    response = client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={**SAME_ORIGIN, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    error_of(response, 413, "payload_too_large")
    assert fake.calls == []


def test_a_form_with_the_token_first_and_padding_after_is_still_too_large(
    client: FlaskClient, fake: FakePlurality
) -> None:
    """A truncated stream must not be parsed as if it were the whole body."""
    body = f"token={fake.issue_token()}&pad={'x' * 40_000}".encode()
    response = client.post(
        "/plurality/login",
        input_stream=io.BytesIO(body),
        content_type="application/x-www-form-urlencoded",
        headers={**SAME_ORIGIN, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert fake.calls == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_16_kib_is_read(client: FlaskClient, fake: FakePlurality, chunked: bool) -> None:
    token = fake.issue_token()
    skeleton = json.dumps({"token": token, "pad": ""})
    body = json.dumps({"token": token, "pad": "x" * (16 * 1024 - len(skeleton))})
    assert len(body) == 16 * 1024
    if chunked:
        response = client.post(
            "/plurality/login",
            input_stream=io.BytesIO(body.encode()),
            content_type="application/json",
            headers={**SAME_ORIGIN, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
    else:
        response = client.post("/plurality/login", data=body, content_type="application/json", headers=SAME_ORIGIN)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"token": 12345},
        {"token": ["a.b.c"]},
        {"token": {"token": "x"}},
        {"token": True},
        {"token": None},
        {"token": ""},
        {},
        ["token"],
        "token",
        None,
    ],
    ids=repr,
)
def test_a_token_that_is_not_a_string_is_a_bad_request(client: FlaskClient, fake: FakePlurality, body: Any) -> None:
    response = client.post(
        "/plurality/login", data=json.dumps(body), content_type="application/json", headers=SAME_ORIGIN
    )
    error_of(response, 400, "invalid_request")
    assert fake.calls == []


@pytest.mark.parametrize(
    "body",
    ["[" * 16_000, '{"t":' * 3000, "{", "\xff\xfe", '{"token": "a"} trailing'],
    ids=["deep-array", "deep-object", "truncated", "not-utf8", "trailing-junk"],
)
def test_broken_json_is_a_bad_request(client: FlaskClient, fake: FakePlurality, body: str) -> None:
    raw = body.encode("latin-1")
    response = client.post("/plurality/login", data=raw, content_type="application/json", headers=SAME_ORIGIN)
    assert response.status_code == 400
    assert fake.calls == []


def junk_tokens(fake: FakePlurality) -> list[str]:
    good = fake.issue_token()
    header, payload, signature = good.split(".")
    no_alg = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}

    def signed(**exp: Any) -> str:  # properly signed by the stand-in, but exp is missing or wrong
        claims = {"id": "u", "uniqueSessionId": "s", "iat": 1, **exp}
        return jwt.encode(claims, fake.signing_key, algorithm="HS256")

    return [
        "not-a-jwt",
        "a.b.c",
        "aa.bb.cc",
        "x" * 300,
        good + "=",
        good.replace(".", " "),
        "eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.",  # alg none, far exp, no signature
        jwt.encode({"exp": 9999999999}, "k" * 48, algorithm="HS384"),  # not how Plurality signs
        signed(),
        signed(exp="tomorrow"),
        signed(exp=True),
        good + "." + signature,
        f"{header}.{payload}.",  # alg none style: empty signature
        f"{no_alg}.{payload}.{signature}",
        f"{header}.{payload}",
        f"{header}..{signature}",
        good.replace(".", ". "),
        "x" * 5000,
        f"{header}.{'A' * 5000}.{signature}",  # longer than PLURALITY_MAX_TOKEN_LENGTH
        f"{header}.e30.{signature}",  # {}: no exp
        f"{header}.eyJleHAiOiJzb29uIn0.{signature}",  # {"exp":"soon"}
        f"{header}.eyJleHAiOnRydWV9.{signature}",  # {"exp":true}
        f"{header}.eyJleHAiOk5hTn0.{signature}",  # {"exp":NaN}: never "<= now"
        f"{header}.eyJleHAiOkluZmluaXR5fQ.{signature}",  # {"exp":Infinity}
        f"{header}.eyJleHAiOjFlMTJ9.{signature}",  # {"exp":1e12}: year 33658
        fake.issue_token(ttl=367 * 86400),  # a Plurality token lives a day, not over a year
        fake.issue_token(ttl=-10),  # expired
        fake.issue_token(ttl=0),  # expires now
    ]


def test_junk_and_expired_tokens_never_reach_plurality(client: FlaskClient, fake: FakePlurality) -> None:
    for i, token in enumerate(junk_tokens(fake)):
        # One client each: the point here is the shape check, not the throttle.
        client_ip = {"REMOTE_ADDR": f"192.0.2.{i}"}
        response = client.post("/plurality/login", json={"token": token}, headers=SAME_ORIGIN, environ_base=client_ip)
        error_of(response, 401, "invalid_token", token)
    assert fake.calls == []
    assert client.get("/plurality/session").status_code == 401


def test_max_token_length_is_configurable(make_app: AppFactory, fake: FakePlurality) -> None:
    token = fake.issue_token()
    short = make_app(PLURALITY_MAX_TOKEN_LENGTH=len(token) - 1).test_client()
    assert login(short, token).status_code == 401
    assert fake.calls == []
    exact = make_app(PLURALITY_MAX_TOKEN_LENGTH=len(token)).test_client()
    assert login(exact, token).status_code == 200


# -- cookies ------------------------------------------------------------------------


def test_the_session_cookie_is_httponly_lax_and_not_secure_on_http(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(ttl=3600)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert login(client, token).status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert cookie.path == "/"
    assert not cookie.secure
    assert cookie.expires is not None
    assert exp - 60 <= cookie.expires.timestamp() <= exp  # capped at the token, not far short of it


def test_the_session_cookie_is_secure_on_https(client: FlaskClient, fake: FakePlurality) -> None:
    response = client.post(
        "/plurality/login",
        json={"token": fake.issue_token()},
        headers={"Origin": "https://localhost"},
        base_url="https://localhost",
    )
    assert response.status_code == 200
    set_cookie = response.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


def test_behind_a_tls_proxy_proxyfix_makes_the_cookie_secure(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "Origin": "https://localhost"}
    plain = client.post("/plurality/login", json={"token": fake.issue_token()}, headers=forwarded)
    # Without ProxyFix the app sees http: its own origin is http://localhost, so the
    # https Origin is foreign, and no cookie would be Secure.
    assert plain.status_code == 403

    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1)  # type: ignore[method-assign]
    behind = client.post("/plurality/login", json={"token": fake.issue_token()}, headers=forwarded)
    assert behind.status_code == 200
    assert "Secure" in behind.headers["Set-Cookie"]


def test_the_apps_own_cookie_settings_win(make_app: AppFactory, fake: FakePlurality) -> None:
    client = make_app(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=True).test_client()
    response = login(client, fake.issue_token())
    assert "SameSite=Strict" in response.headers["Set-Cookie"]
    assert "Secure" in response.headers["Set-Cookie"]


def stored_expiry(app: Flask, sid: str) -> int:
    """When cachelib will drop this session (its file starts with the absolute expiry)."""
    interface: Any = app.session_interface
    path = os.path.join(interface.cache._path, interface.cache._get_filename(interface.key_prefix + sid))
    with open(path, "rb") as f:
        return int(struct.unpack("I", f.read(4))[0])


@pytest.mark.parametrize("ttl", [120, 7200])
def test_a_login_lasts_no_longer_than_its_token(make_app: AppFactory, fake: FakePlurality, ttl: int) -> None:
    """Permanent session, Flask's 31-day default lifetime: cookie and stored entry both end
    at the token's exp, and a session refreshed later never outlives it either."""
    app = make_app(SESSION_REFRESH_EACH_REQUEST=True)
    client = app.test_client()
    token = fake.issue_token(ttl=ttl)
    exp = int(time.time()) + ttl
    assert login(client, token).status_code == 200
    for _ in range(2):  # the login, then a refresh on a later request
        cookie = client.get_cookie("session")
        assert cookie is not None and cookie.expires is not None
        assert cookie.expires <= datetime.fromtimestamp(exp + 1, UTC)
        assert cookie.expires >= datetime.fromtimestamp(exp - 5, UTC)
        assert exp - 5 <= stored_expiry(app, cookie.value) <= exp + 1
        assert client.get("/protected").status_code == 200


@pytest.mark.parametrize("lifetime", [60, timedelta(minutes=1)], ids=["seconds", "timedelta"])
def test_a_shorter_app_lifetime_wins_over_the_token(
    make_app: AppFactory, fake: FakePlurality, lifetime: int | timedelta
) -> None:
    app = make_app(PERMANENT_SESSION_LIFETIME=lifetime)
    client = app.test_client()
    assert login(client, fake.issue_token(ttl=86400)).status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.expires is not None
    assert cookie.expires <= datetime.fromtimestamp(time.time() + 61, UTC)
    assert stored_expiry(app, cookie.value) <= time.time() + 61


@pytest.mark.redis
def test_a_redis_session_expires_with_its_token(make_app: AppFactory, fake: FakePlurality, redis_client: Any) -> None:
    """Stored in Redis (no session folder on disk) with the token's TTL, read back whole,
    and deleted at logout."""
    app = make_app(session_redis=redis_client)
    client = app.test_client()
    token = fake.issue_token(ttl=300, user_id="u-redis", email=None)
    assert login(client, token).status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    key = "session:" + cookie.value
    assert redis_client.exists(key) == 1
    ttl = redis_client.ttl(key)
    assert 290 <= ttl <= 300
    assert not os.path.exists(os.path.join(app.instance_path, "plurality_sessions"))
    assert client.get("/protected").get_json() == {"id": "u-redis", "email": None}
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert client.get("/plurality/session").get_json()["profile"]["expires_at"] == exp
    assert client.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert redis_client.exists(key) == 0
    assert client.get("/protected").status_code == 401


def test_answers_about_the_login_are_never_cached(client: FlaskClient, fake: FakePlurality) -> None:
    """They carry the profile or set the cookie; a shared cache must not hand them to others."""
    answers = [
        client.get("/plurality/session"),
        client.post("/plurality/login", json={"token": "junk"}, headers=SAME_ORIGIN),
        login(client, fake.issue_token()),
        client.get("/plurality/session"),
        client.post("/plurality/logout", json={}, headers=SAME_ORIGIN),
    ]
    for response in answers:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- TLS ----------------------------------------------------------------------------


def test_turning_tls_verification_off_logs_a_warning(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_plurality"):
        make_app()
    assert not [r for r in caplog.records if "TLS" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="flask_plurality"):
        make_app(PLURALITY_VERIFY_TLS=False)
    warnings = [r for r in caplog.records if "PLURALITY_VERIFY_TLS is off" in r.getMessage()]
    assert warnings and warnings[0].levelno == logging.WARNING


def test_plain_http_to_a_remote_api_logs_a_warning(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_plurality"):
        make_app(PLURALITY_API_URL="http://plurality.internal.example/api")
    assert any("not HTTPS" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_plurality"):
        make_app(PLURALITY_API_URL="https://app.plurality.network/api")
        make_app(PLURALITY_API_URL="http://127.0.0.1:9/api")  # loopback: the stand-in, a sidecar
    assert not any("not HTTPS" in r.getMessage() for r in caplog.records)


def test_the_client_uses_tls_verification_as_configured(make_app: AppFactory) -> None:
    """The flag reaches the HTTP call (the only place it matters)."""
    on, off = make_app(), make_app(PLURALITY_VERIFY_TLS=False)
    with on.app_context():
        assert upstream_settings().verify_tls is True
    with off.app_context():
        assert upstream_settings().verify_tls is False
