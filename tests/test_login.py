"""Every status of /login, /logout and /session, through the real stand-in."""

from __future__ import annotations

import json
import logging
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory, error_of, login

from flask_plurality import ConfigurationError
from flask_plurality.testing import FakePlurality

DOCS_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6ImNkODY4MjFlLTRiMDMtNGU3ZS04ZDg5LT"
    "RiNzZmZjNmZmU0OSIsInVuaXF1ZVNlc3Npb25JZCI6ImU5M2I0ZDQ1LTg0ZDAtNDRhOS05YzU1LTgy"
    "ZTgxNjkxZDk3MSIsImlhdCI6MTczOTYyMzU0NCwiZXhwIjoxNzM5NzA5OTQ0fQ.HhMdOI-8vNVGmCl"
    "rHJuMasfcOdJFaQ-VgxsH4zlgDug"
)


def session_state(client: FlaskClient) -> int:
    return client.get("/plurality/session").status_code


# -- 200 -------------------------------------------------------------------------


def test_json_login_answers_the_profile(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="u-1", email="a@b.c", auth_address="0xaa", proxy_address="0xbb")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    sid = jwt.decode(token, options={"verify_signature": False})["uniqueSessionId"]

    response = login(client, token)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "authenticated": True,
        "profile": {
            "id": "u-1",
            "email": "a@b.c",
            "auth_address": "0xaa",
            "proxy_address": "0xbb",
            "unique_session_id": sid,
            "expires_at": exp,
        },
    }
    assert token not in response.get_data(as_text=True)
    assert [(c.method, c.auth_ok, c.token) for c in fake.calls] == [("POST", True, token)]
    assert client.get("/plurality/session").get_json()["profile"]["id"] == "u-1"


def test_missing_upstream_fields_are_null(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(email=None, auth_address=None, proxy_address=None)
    profile = login(client, token).get_json()["profile"]
    assert profile["email"] is None
    assert profile["auth_address"] is None
    assert profile["proxy_address"] is None


def test_legacy_success_shape_logs_in(client: FlaskClient, fake: FakePlurality) -> None:
    fake.legacy = True
    token = fake.issue_token(user_id="old-shape")
    response = login(client, token)
    assert response.status_code == 200
    assert response.get_json()["profile"]["id"] == "old-shape"


@pytest.mark.parametrize("next_in", ["form", "query"])
def test_form_post_with_safe_next_redirects_303(client: FlaskClient, fake: FakePlurality, next_in: str) -> None:
    data = {"token": fake.issue_token()}
    url = "/plurality/login"
    if next_in == "form":
        data["next"] = "/dashboard?tab=1"
    else:
        url += "?next=/dashboard%3Ftab%3D1"
    response = client.post(url, data=data, headers=SAME_ORIGIN)
    assert response.status_code == 303
    assert response.headers["Location"] in ("/dashboard?tab=1", "/dashboard%3Ftab%3D1")
    assert session_state(client) == 200


def test_form_post_with_same_origin_referer_is_allowed(client: FlaskClient, fake: FakePlurality) -> None:
    response = client.post(
        "/plurality/login",
        data={"token": fake.issue_token(), "next": "/home"},
        headers={"Referer": "http://localhost/signin?x=1"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/home"


@pytest.mark.parametrize(
    "next_",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "%2F%2Fevil.example",
        "/%2F%2Fevil.example",
        "javascript:alert(1)",
        "dashboard",
        "/ok\r\nSet-Cookie: x=1",
    ],
)
def test_unsafe_next_gives_json_not_a_redirect(client: FlaskClient, fake: FakePlurality, next_: str) -> None:
    response = client.post("/plurality/login", data={"token": fake.issue_token(), "next": next_}, headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert response.get_json()["authenticated"] is True


def test_json_login_ignores_next(client: FlaskClient, fake: FakePlurality) -> None:
    """Scripts get JSON; only form posts (browsers navigating) are redirected."""
    response = client.post("/plurality/login?next=/home", json={"token": fake.issue_token()}, headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert response.get_json()["authenticated"] is True


def test_login_as_another_user_replaces_the_first(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token(user_id="alice"))
    login(client, fake.issue_token(user_id="bob"))
    assert client.get("/protected").get_json()["id"] == "bob"


# -- 400 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"token": ', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b'["a.b.c"]', "application/json"),
        (b'"a.b.c"', "application/json"),
        (b"null", "application/json"),
        (b"", "application/json"),
        (b"token=abc", "text/plain"),
        (b"<token>x</token>", "application/xml"),
        (b"token=", "application/x-www-form-urlencoded"),
        (b"other=1", "application/x-www-form-urlencoded"),
        (b"--x\r\ngarbage", "multipart/form-data; boundary=x"),
        (b"x", "multipart/form-data"),
    ],
)
def test_bad_bodies_are_400(client: FlaskClient, fake: FakePlurality, data: bytes, content_type: str) -> None:
    response = client.post("/plurality/login", data=data, content_type=content_type, headers=SAME_ORIGIN)
    error_of(response, 400, "invalid_request")
    assert fake.calls == []


def test_no_body_at_all_is_400(client: FlaskClient, fake: FakePlurality) -> None:
    error_of(client.post("/plurality/login", headers=SAME_ORIGIN), 400, "invalid_request")
    assert fake.calls == []


# -- 401 without calling Plurality ------------------------------------------------
# Junk, malformed and expired tokens: test_security.py's junk-token catalogue.


def test_docs_sample_token_is_refused_as_expired(client: FlaskClient, fake: FakePlurality) -> None:
    """The token in Plurality's own docs (exp 1739709944, Feb 2025)."""
    assert jwt.decode(DOCS_TOKEN, options={"verify_signature": False})["exp"] == 1739709944
    body = error_of(login(client, DOCS_TOKEN), 401, "invalid_token", DOCS_TOKEN)
    assert "expired" in body["message"]
    assert len(fake.calls) == 0
    assert session_state(client) == 401


def test_expired_token_never_logs_the_token(
    client: FlaskClient, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake.issue_token(ttl=-5)
    login(client, token)
    assert token not in caplog.text


# -- 401 because Plurality said no ------------------------------------------------


def test_revoked_token_is_401_after_asking(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.revoke(token)
    error_of(login(client, token), 401, "invalid_token", token)
    assert [c.outcome for c in fake.calls] == [403]
    assert session_state(client) == 401


def test_token_signed_by_someone_else_is_401(client: FlaskClient, fake: FakePlurality) -> None:
    with FakePlurality() as other:
        token = other.issue_token()
    error_of(login(client, token), 401, "invalid_token", token)
    assert [c.outcome for c in fake.calls] == [403]


def test_token_for_another_client_app_is_401(client: FlaskClient, fake: FakePlurality) -> None:
    """Another client app's user: a real token, but the widget was opened for another app."""
    fake.add_client("other-app", "other-secret")
    token = fake.issue_token(client_id="other-app")
    error_of(login(client, token), 401, "invalid_token", token, "other-secret")
    assert [c.outcome for c in fake.calls] == [401]
    assert session_state(client) == 401


def test_a_refused_token_is_not_asked_about_twice(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.revoke(token)
    login(client, token)
    error_of(login(client, token), 401, "invalid_token")
    assert len(fake.calls) == 1


def test_failed_login_ends_a_previous_login_only_if_it_succeeds(client: FlaskClient, fake: FakePlurality) -> None:
    """A bad second token neither logs the user out nor in as someone else."""
    login(client, fake.issue_token(user_id="alice"))
    bad = fake.issue_token(user_id="mallory")
    fake.revoke(bad)
    assert login(client, bad).status_code == 401
    assert client.get("/protected").get_json()["id"] == "alice"


# -- 413 -------------------------------------------------------------------------
# The 16 KiB limit by Content-Length and while streaming: test_security.py.


@pytest.mark.parametrize(("size", "status"), [(20000, 413), (100, 200)])
def test_chunked_body_over_real_http(app: Flask, fake: FakePlurality, size: int, status: int) -> None:
    """A chunked body through a real WSGI server, which is what sets ``wsgi.input_terminated``."""
    import threading

    import requests
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        body = json.dumps({"token": fake.issue_token(), "pad": "x" * size}).encode()
        chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))  # no length: chunked
        url = f"http://127.0.0.1:{server.port}"
        with requests.post(
            url + "/plurality/login",
            data=chunks,
            headers={"Content-Type": "application/json", "Origin": url},
            timeout=10,
        ) as response:
            assert response.request.headers.get("Transfer-Encoding") == "chunked"
            assert response.status_code == status, response.text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_logout_body_over_16_kib_is_413(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    response = client.post("/plurality/logout", json={"pad": "x" * 17000}, headers=SAME_ORIGIN)
    error_of(response, 413, "payload_too_large")
    assert session_state(client) == 200


# -- 403 and 429 -------------------------------------------------------------------
# The origin rule (login and logout) is in test_security.py; throttling in test_throttle.py.


def test_window_of_failures_sets_retry_after(make_app: AppFactory) -> None:
    app = make_app(PLURALITY_LOGIN_MAX_FAILURES=1, PLURALITY_LOGIN_FAILURE_WINDOW=40)
    client = app.test_client()
    login(client, "junk.junk.junk")
    response = login(client, "junk.junk.junk")
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 40


# -- 503 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        (500, None),
        (502, None),
        (503, 17),
        (503, None),
        (504, None),
        (429, 42),
        (429, None),
        ("reset", None),
        ("garbage", None),
        ("wrong_shape", None),
    ],
)
def test_upstream_trouble_is_503_with_retry_after(
    client: FlaskClient, fake: FakePlurality, fault: Any, retry_after: int | None
) -> None:
    token = fake.issue_token()
    fake.fail_next(fault, retry_after=retry_after)

    response = login(client, token)

    error_of(response, 503, "upstream_unavailable", token, fake.client_secret)
    if retry_after is not None:
        assert response.headers["Retry-After"] == str(retry_after)
    else:
        assert int(response.headers["Retry-After"]) >= 1
    assert len(fake.calls) == 1
    assert session_state(client) == 401
    if retry_after is None:
        # Nothing was remembered against the token: once Plurality is back, it works.
        assert login(client, token).status_code == 200
    else:
        # Plurality asked us to wait: the next login does not call it before then.
        again = login(client, token)
        error_of(again, 503, "upstream_unavailable")
        assert 1 <= int(again.headers["Retry-After"]) <= retry_after
        assert len(fake.calls) == 1


def test_upstream_timeout_is_503(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_TIMEOUT=0.5)
    client = app.test_client()
    token = fake.issue_token()
    fake.fail_next("timeout")
    response = login(client, token)
    error_of(response, 503, "upstream_unavailable", token)
    assert int(response.headers["Retry-After"]) >= 1
    assert len(fake.calls) == 1
    assert login(client, token).status_code == 200


def test_upstream_down_is_503(make_app: AppFactory, fake: FakePlurality) -> None:
    with FakePlurality() as gone:
        url = gone.url  # a port nothing listens on once it stops
    app = make_app(PLURALITY_API_URL=url, PLURALITY_TIMEOUT=1)
    response = login(app.test_client(), fake.issue_token())
    error_of(response, 503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


def test_huge_retry_after_is_capped(client: FlaskClient, fake: FakePlurality) -> None:
    fake.fail_next(429, retry_after=86400)
    response = login(client, fake.issue_token())
    assert response.status_code == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 300


@pytest.mark.parametrize(
    ("client_id", "secret", "cause"),
    [
        (None, "wrong-secret-value", "Invalid Client Secret"),
        ("no-such-client", None, "Invalid Client ID"),
    ],
)
def test_rejected_client_credentials_are_503_and_logged(
    make_app: AppFactory,
    fake: FakePlurality,
    caplog: pytest.LogCaptureFixture,
    client_id: str | None,
    secret: str | None,
    cause: str,
) -> None:
    app = make_app(
        PLURALITY_CLIENT_ID=client_id or fake.client_id,
        PLURALITY_CLIENT_SECRET=secret or fake.client_secret,
    )
    used_secret = secret or fake.client_secret
    caplog.set_level(logging.DEBUG)
    token = fake.issue_token()

    response = login(app.test_client(), token)

    body = error_of(response, 503, "upstream_unavailable", token, used_secret)
    # Never blamed on the user, and nothing about our credentials in the browser.
    assert "invalid" not in body["message"].lower()
    assert "secret" not in body["message"].lower()
    assert cause not in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) >= 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("flask_plurality")]
    assert errors, "a credentials problem must be logged at ERROR"
    assert any(cause in r.getMessage() for r in errors)
    assert used_secret not in caplog.text
    assert token not in caplog.text
    assert len(fake.calls) == 1


def test_rejected_credentials_do_not_throttle_users(make_app: AppFactory, fake: FakePlurality) -> None:
    """Our misconfiguration is not the user's failed attempt."""
    app = make_app(PLURALITY_CLIENT_SECRET="wrong", PLURALITY_LOGIN_MAX_FAILURES=1, PLURALITY_BREAKER_THRESHOLD=100)
    client = app.test_client()
    for _ in range(3):
        assert login(client, fake.issue_token()).status_code == 503


# -- validate method: POST, GET, auto ----------------------------------------------


def test_auto_falls_back_to_get_and_remembers(client: FlaskClient, fake: FakePlurality) -> None:
    fake.methods = {"GET"}  # an older server: POST gets Express's 404 page
    assert login(client, fake.issue_token()).status_code == 200
    assert [(c.method, c.outcome) for c in fake.calls] == [("POST", 404), ("GET", 200)]
    fake.reset_calls()

    assert login(client, fake.issue_token()).status_code == 200
    assert [(c.method, c.outcome) for c in fake.calls] == [("GET", 200)]


def test_auto_uses_post_when_it_works(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    login(client, fake.issue_token())
    assert [c.method for c in fake.calls] == ["POST", "POST"]


def test_post_only_setting_never_tries_get(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_VALIDATE_METHOD="POST")
    fake.methods = {"GET"}
    error_of(login(app.test_client(), fake.issue_token()), 503, "upstream_unavailable")
    assert [(c.method, c.outcome) for c in fake.calls] == [("POST", 404)]


@pytest.mark.parametrize("setting", ["GET", "get"])
def test_get_setting_sends_the_docs_request(make_app: AppFactory, fake: FakePlurality, setting: str) -> None:
    app = make_app(PLURALITY_VALIDATE_METHOD=setting)
    fake.methods = {"GET"}
    token = fake.issue_token()
    assert login(app.test_client(), token).status_code == 200
    assert [(c.method, c.auth_ok, c.token) for c in fake.calls] == [("GET", True, token)]


def test_route_missing_for_both_methods_is_503(client: FlaskClient, fake: FakePlurality) -> None:
    fake.methods = set()
    error_of(login(client, fake.issue_token()), 503, "upstream_unavailable")
    assert [c.method for c in fake.calls] == ["POST", "GET"]


# -- /logout -----------------------------------------------------------------------


def test_logout_json(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    response = client.post("/plurality/logout", headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"authenticated": False}
    assert session_state(client) == 401
    assert client.get("/protected").status_code == 401


def test_logout_when_nobody_is_logged_in(client: FlaskClient) -> None:
    response = client.post("/plurality/logout", json={}, headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert response.get_json() == {"authenticated": False}


def test_logout_without_headers_with_json_body(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    assert client.post("/plurality/logout", json={}).status_code == 200
    assert session_state(client) == 401


def test_bodyless_logout_without_origin_or_referer_is_a_logout(client: FlaskClient, fake: FakePlurality) -> None:
    """``curl -X POST .../logout`` sends no Content-Type and no body, which a
    cross-site form cannot do, so it needs neither Origin nor Referer."""
    login(client, fake.issue_token())
    response = client.post("/plurality/logout")
    assert (response.status_code, response.get_json()) == (200, {"authenticated": False})
    assert session_state(client) == 401


@pytest.mark.parametrize("headers", [{}, SAME_ORIGIN])
def test_json_logout_with_an_empty_body_is_a_logout(
    client: FlaskClient, fake: FakePlurality, headers: dict[str, str]
) -> None:
    login(client, fake.issue_token())
    response = client.post("/plurality/logout", data=b"", content_type="application/json", headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"authenticated": False})
    assert session_state(client) == 401


def test_json_login_with_an_empty_body_is_still_400(client: FlaskClient) -> None:
    response = client.post("/plurality/login", data=b"", content_type="application/json", headers=SAME_ORIGIN)
    error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": b"", "content_type": "text/plain"},  # a Content-Type, even with no body: a form could send it
        {"data": b"", "content_type": "application/x-www-form-urlencoded"},
        {"data": {"x": "1"}},
    ],
)
def test_logout_without_origin_but_with_a_content_type_is_refused(
    client: FlaskClient, fake: FakePlurality, request_kwargs: dict[str, Any]
) -> None:
    login(client, fake.issue_token())
    error_of(client.post("/plurality/logout", **request_kwargs), 403, "forbidden_origin")
    assert session_state(client) == 200


def test_bodyless_logout_over_real_http(app: Flask, fake: FakePlurality) -> None:
    """What curl and requests send, through a real server; a chunked body without a
    Content-Type is something sent after all, and is refused."""
    import requests

    from flask_plurality.testing import live_server

    with live_server(app) as url, requests.Session() as http:
        token = fake.issue_token()
        assert http.post(url + "/plurality/login", json={"token": token}, timeout=10).status_code == 200
        chunked = http.post(url + "/plurality/logout", data=iter([b"x=1"]), timeout=10)
        assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
        assert (chunked.status_code, chunked.json()["error"]) == (403, "forbidden_origin")
        assert http.get(url + "/plurality/session", timeout=10).status_code == 200
        bare = http.post(url + "/plurality/logout", timeout=10)
        assert "Content-Type" not in bare.request.headers and "Origin" not in bare.request.headers
        assert (bare.status_code, bare.json()) == (200, {"authenticated": False})
        assert http.get(url + "/plurality/session", timeout=10).status_code == 401


def test_logout_form_post_with_safe_next_redirects(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    response = client.post("/plurality/logout", data={"next": "/bye"}, headers=SAME_ORIGIN)
    assert response.status_code == 303
    assert response.headers["Location"] == "/bye"
    assert session_state(client) == 401


def test_logout_form_post_with_unsafe_next_gives_json(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    response = client.post("/plurality/logout", data={"next": "https://evil.example/"}, headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert response.get_json() == {"authenticated": False}


def test_logout_with_bad_json_is_400_and_keeps_the_session(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    response = client.post("/plurality/logout", data=b"{nope", content_type="application/json", headers=SAME_ORIGIN)
    error_of(response, 400, "invalid_request")
    assert session_state(client) == 200


def test_logout_makes_no_upstream_call(client: FlaskClient, fake: FakePlurality) -> None:
    login(client, fake.issue_token())
    fake.reset_calls()
    client.post("/plurality/logout", headers=SAME_ORIGIN)
    assert fake.calls == []


# -- /session ----------------------------------------------------------------------


def test_session_when_logged_out_is_401(client: FlaskClient) -> None:
    response = client.get("/plurality/session")
    error_of(response, 401, "login_required")
    assert response.headers["WWW-Authenticate"] == "Plurality"


def test_session_when_logged_in_asks_nobody(client: FlaskClient, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="u-9")
    expected = login(client, token).get_json()
    fake.reset_calls()
    response = client.get("/plurality/session")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == expected
    assert token not in response.get_data(as_text=True)
    assert fake.calls == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_methods_are_refused(client: FlaskClient, method: str) -> None:
    assert client.open("/plurality/login", method=method).status_code == 405
    assert client.open("/plurality/logout", method=method).status_code == 405


def test_custom_url_prefix(make_app: AppFactory, fake: FakePlurality) -> None:
    app: Flask = make_app(PLURALITY_URL_PREFIX="/auth/plurality")
    client = app.test_client()
    response = client.post("/auth/plurality/login", json={"token": fake.issue_token()}, headers=SAME_ORIGIN)
    assert response.status_code == 200
    assert client.get("/auth/plurality/session").status_code == 200
    assert client.get("/plurality/session").status_code == 404


# -- no input gives a 500 ------------------------------------------------------------


def test_arbitrary_bodies_never_give_a_500(make_app: AppFactory, fake: FakePlurality) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app = make_app(PLURALITY_LOGIN_MAX_FAILURES=10**6)
    client = app.test_client()
    content_types = st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=zz",
            "text/plain",
            "",
        ]
    )
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    bodies = (
        st.binary(max_size=300)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.builds(lambda v: json.dumps({"token": v}).encode(), json_values)
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, content_type=content_types, path=st.sampled_from(["/plurality/login", "/plurality/logout"]))
    def check(body: bytes, content_type: str, path: str) -> None:
        response = client.post(path, data=body, content_type=content_type or None, headers=SAME_ORIGIN)
        assert response.status_code in (200, 400, 401, 413), (body, content_type, response.status_code)
        assert response.mimetype == "application/json"
        assert "Traceback" not in response.get_data(as_text=True)

    check()
    assert fake.calls == []


@pytest.mark.parametrize("path", ["/plurality/login", "/plurality/logout"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_a_json_405(client: FlaskClient, fake: FakePlurality, path: str, method: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.json is not None and response.json["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert fake.calls == []


def test_init_app_twice_is_a_clear_error(app: Flask) -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        app.extensions["plurality"].init_app(app)
