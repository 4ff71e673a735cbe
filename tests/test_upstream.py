"""Plurality's response table (docs/plurality-api.rst), answer by answer, as ``plurality.validate(token)`` sees it.

Rows the stand-in can produce are driven through it (over real HTTP). Rows 1 and 3
cannot be provoked by our own client (it always sends the token and a Basic header),
so a tiny extra HTTP server answers them verbatim to check the mapping.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from flask import Flask
from helpers import SAME_ORIGIN, AppFactory
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from flask_plurality import (
    ConfigurationError,
    CredentialsRejected,
    InvalidToken,
    NotConfigured,
    Plurality,
    Profile,
    UpstreamUnavailable,
)
from flask_plurality.testing import FakePlurality, config_for

DOCS_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6ImNkODY4MjFlLTRiMDMtNGU3ZS04ZDg5LT"
    "RiNzZmZjNmZmU0OSIsInVuaXF1ZVNlc3Npb25JZCI6ImU5M2I0ZDQ1LTg0ZDAtNDRhOS05YzU1LTgy"
    "ZTgxNjkxZDk3MSIsImlhdCI6MTczOTYyMzU0NCwiZXhwIjoxNzM5NzA5OTQ0fQ.HhMdOI-8vNVGmCl"
    "rHJuMasfcOdJFaQ-VgxsH4zlgDug"
)
TEXT = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"


def validate(app: Flask, token: Any) -> Profile:
    """What a user's script does: ``plurality.validate`` inside an app context, no request."""
    with app.app_context():
        plurality: Plurality = app.extensions["plurality"]
        return plurality.validate(token)


def refusal(app: Flask, token: Any) -> Exception:
    with pytest.raises(Exception) as info:
        validate(app, token)
    return info.value


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


Canned = Callable[..., str]


@pytest.fixture
def canned() -> Iterator[Canned]:
    """``canned(status, body, content_type, headers)`` -> an API URL whose validate route
    always answers exactly that, and records what it received in ``canned.received``."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(status: int, body: str | bytes, content_type: str = JSON, headers: dict[str, str] | None = None) -> str:
        received: list[dict[str, Any]] = []

        def wsgi(environ: Any, start_response: Any) -> Any:
            request = Request(environ)
            received.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "authorization": request.headers.get("Authorization"),
                    "body": request.get_data(),
                }
            )
            response = Response(body, status, content_type=content_type, headers=headers)
            return response(environ, start_response)

        server = make_server("127.0.0.1", 0, wsgi, threaded=True, request_handler=_Quiet)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        start.received = received  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{server.port}/api"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- ok ------------------------------------------------------------------------------


def test_ok_gives_a_profile(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="u-1", email="a@b.c", auth_address="0xaa", proxy_address="0xbb")
    claims = jwt.decode(token, options={"verify_signature": False})

    profile = validate(app, token)

    assert isinstance(profile, Profile)
    assert profile.id == "u-1"
    assert profile.email == "a@b.c"
    assert profile.auth_address == "0xaa"
    assert profile.proxy_address == "0xbb"
    assert profile.unique_session_id == claims["uniqueSessionId"]
    assert profile.expires_at == claims["exp"]
    assert profile.raw == {"id": "u-1", "email": "a@b.c", "authAddress": "0xaa", "proxyAddress": "0xbb"}
    assert bool(profile) is True
    assert [(c.method, c.auth_ok, c.client_id, c.token) for c in fake.calls] == [("POST", True, fake.client_id, token)]


def test_ok_older_shape_without_success(app: Flask, fake: FakePlurality) -> None:
    fake.legacy = True
    assert validate(app, fake.issue_token(user_id="legacy")).id == "legacy"


def test_ok_wallet_only_user_has_no_email(app: Flask, fake: FakePlurality) -> None:
    profile = validate(app, fake.issue_token(email=None, auth_address="0xaa", proxy_address=None))
    assert profile.email is None
    assert profile.auth_address == "0xaa"
    assert profile.proxy_address is None


def test_ok_with_only_an_id(make_app: AppFactory, fake: FakePlurality, canned: Canned) -> None:
    url = canned(200, json.dumps({"success": True, "user": {"id": "only-id"}}))
    profile = validate(make_app(PLURALITY_API_URL=url), fake.issue_token())
    assert (profile.id, profile.email, profile.auth_address, profile.proxy_address) == ("only-id", None, None, None)


def test_validate_sends_basic_auth_and_a_json_body(make_app: AppFactory, fake: FakePlurality, canned: Canned) -> None:
    url = canned(200, json.dumps({"success": True, "user": {"id": "x"}}))
    token = fake.issue_token()
    validate(make_app(PLURALITY_API_URL=url), token)
    (received,) = canned.received  # type: ignore[attr-defined]
    assert received["method"] == "POST"
    assert received["path"] == "/api/user/validate"
    import base64

    expected = base64.b64encode(f"{fake.client_id}:{fake.client_secret}".encode()).decode()
    assert received["authorization"] == f"Basic {expected}"
    assert json.loads(received["body"]) == {"token": token}


# -- Token is missing -----------------------------------------------------------


def test_token_missing_is_not_blamed_on_the_user(
    make_app: AppFactory, fake: FakePlurality, canned: Canned, caplog: pytest.LogCaptureFixture
) -> None:
    """We always send the token; if Plurality did not get it (a proxy dropping a GET
    body), that is a deployment problem to log, not a bad token."""
    url = canned(401, "Token is missing", TEXT)
    app = make_app(PLURALITY_API_URL=url)
    caplog.set_level(logging.INFO)

    exc = refusal(app, fake.issue_token())

    assert type(exc) is UpstreamUnavailable
    assert exc.reason == "token_not_received"
    assert exc.retry_after is None
    assert any(r.levelno == logging.ERROR and "POST" in r.getMessage() for r in caplog.records)


# -- Invalid token --------------------------------------------------------------


def test_invalid_token_revoked(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.revoke(token)
    exc = refusal(app, token)
    assert type(exc) is InvalidToken
    assert exc.reason == "rejected"
    assert [c.outcome for c in fake.calls] == [403]


def test_invalid_token_bad_signature(app: Flask, fake: FakePlurality) -> None:
    with FakePlurality() as other:
        token = other.issue_token()
    exc = refusal(app, token)
    assert type(exc) is InvalidToken
    assert [c.outcome for c in fake.calls] == [403]


def test_invalid_token_verbatim_from_a_server(make_app: AppFactory, fake: FakePlurality, canned: Canned) -> None:
    exc = refusal(make_app(PLURALITY_API_URL=canned(403, "Invalid token", TEXT)), fake.issue_token())
    assert type(exc) is InvalidToken


# -- our credentials ---------------------------------------------------------


def test_no_basic_header(
    make_app: AppFactory, fake: FakePlurality, canned: Canned, caplog: pytest.LogCaptureFixture
) -> None:
    url = canned(401, '{"message":"Unauthorized"}')
    caplog.set_level(logging.ERROR)
    exc = refusal(make_app(PLURALITY_API_URL=url), fake.issue_token())
    assert type(exc) is CredentialsRejected
    assert isinstance(exc, UpstreamUnavailable)
    assert exc.reason == "credentials_rejected"
    assert "Unauthorized" in caplog.text


@pytest.mark.parametrize("key", ["PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET"])
def test_an_empty_credential_is_never_sent(make_app: AppFactory, fake: FakePlurality, key: str) -> None:
    """Basic credentials without an id or a secret would only earn a 401 "Unauthorized":
    the client refuses before calling, naming the key."""
    app = make_app()
    app.config[key] = ""  # emptied after init_app
    exc = refusal(app, fake.issue_token())
    assert type(exc) is NotConfigured
    assert isinstance(exc, ConfigurationError)
    assert exc.missing == (key,)
    assert str(exc).startswith(f"{key} is not set")
    assert fake.calls == []


def test_unknown_client_id(make_app: AppFactory, fake: FakePlurality, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    exc = refusal(make_app(PLURALITY_CLIENT_ID="nobody"), fake.issue_token())
    assert type(exc) is CredentialsRejected
    assert exc.retry_after is None
    assert "Invalid Client ID" in caplog.text
    assert [(c.client_id, c.outcome) for c in fake.calls] == [("nobody", 401)]


def test_wrong_secret(make_app: AppFactory, fake: FakePlurality, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "this-is-the-wrong-secret"
    token = fake.issue_token()
    exc = refusal(make_app(PLURALITY_CLIENT_SECRET=secret), token)
    assert type(exc) is CredentialsRejected
    assert "Invalid Client Secret" in caplog.text
    for text in (caplog.text, str(exc), repr(exc)):
        assert secret not in text
        assert fake.client_secret not in text
        assert token not in text
    assert [(c.auth_ok, c.outcome) for c in fake.calls] == [(False, 401)]


def test_credentials_rejected_is_not_cached_against_the_token(make_app: AppFactory, fake: FakePlurality) -> None:
    """Fixing the config must not leave the user's token refused."""
    app = make_app(PLURALITY_CLIENT_SECRET="wrong")
    token = fake.issue_token()
    assert isinstance(refusal(app, token), CredentialsRejected)
    app.config["PLURALITY_CLIENT_SECRET"] = fake.client_secret
    assert validate(app, token).id
    assert len(fake.calls) == 2


# -- another client's user ------------------------------------------------------


def test_token_for_another_client(app: Flask, fake: FakePlurality) -> None:
    fake.add_client("other-app", "other-secret")
    exc = refusal(app, fake.issue_token(client_id="other-app"))
    assert type(exc) is InvalidToken
    assert exc.reason == "wrong_client"
    assert [c.outcome for c in fake.calls] == [401]


def test_token_verified_by_its_own_app_works(make_app: AppFactory, fake: FakePlurality) -> None:
    fake.add_client("other-app", "other-secret")
    app = make_app(PLURALITY_CLIENT_ID="other-app", PLURALITY_CLIENT_SECRET="other-secret")
    assert validate(app, fake.issue_token(user_id="u-7", client_id="other-app")).id == "u-7"


# -- server faults and what proxies answer -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "reason"),
    [
        (500, None, "http_500"),
        (500, 12, "http_500"),
        (502, None, "http_502"),
        (503, 30, "http_503"),
        (504, None, "http_504"),
        (429, 5, "rate_limited"),
        (429, None, "rate_limited"),
    ],
)
def test_server_fault_and_proxy_errors(
    app: Flask, fake: FakePlurality, status: int, retry_after: int | None, reason: str
) -> None:
    fake.fail_next(status, retry_after=retry_after)
    exc = refusal(app, fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert exc.reason == reason
    assert exc.retry_after == retry_after
    assert [c.outcome for c in fake.calls] == [status]


def test_timeout(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_TIMEOUT=0.5)
    fake.fail_next("timeout")
    exc = refusal(app, fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert exc.reason == "timeout"
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("fault", "reason"), [("reset", "connection_error"), ("garbage", "bad_response"), ("wrong_shape", "bad_response")]
)
def test_no_usable_answer(app: Flask, fake: FakePlurality, fault: str, reason: str) -> None:
    fake.fail_next(fault)
    exc = refusal(app, fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert exc.reason == reason


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, '{"success": false, "user": {"id": "x"}}', JSON),
        (200, '{"success": true, "user": {"id": 5}}', JSON),
        (200, '{"success": true, "user": {"id": ""}}', JSON),
        (200, '{"success": true, "user": "x"}', JSON),
        (200, "[1, 2]", JSON),
        (200, "", JSON),
        (200, b"\xff\xfe", JSON),
        (302, "", TEXT),
        (401, '{"error":"Something new"}', JSON),
        (401, "<html>401</html>", TEXT),
        (418, "teapot", TEXT),
    ],
)
def test_answers_we_do_not_understand_are_unavailable(
    make_app: AppFactory, fake: FakePlurality, canned: Canned, status: int, body: Any, content_type: str
) -> None:
    """Never a login from an answer we cannot read; never blame the user for it either."""
    url = canned(status, body, content_type)
    exc = refusal(make_app(PLURALITY_API_URL=url), fake.issue_token())
    assert type(exc) is UpstreamUnavailable


def test_nobody_listening(make_app: AppFactory, fake: FakePlurality) -> None:
    with FakePlurality() as gone:
        url = gone.url
    exc = refusal(make_app(PLURALITY_API_URL=url, PLURALITY_TIMEOUT=1), fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert exc.reason == "connection_error"


# -- refused before asking -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda fake: fake.issue_token(ttl=-60), "expired"),
        (lambda fake: DOCS_TOKEN, "expired"),
        (lambda fake: "not.a.token!", "malformed"),
        (lambda fake: "", "malformed"),
        (lambda fake: 12345, "malformed"),
        (lambda fake: None, "malformed"),
        (lambda fake: b"bytes.are.no", "malformed"),
        (lambda fake: jwt.encode({"id": "u"}, fake.signing_key, algorithm="HS256"), "malformed"),
    ],
    ids=["expired", "docs-sample", "junk", "empty", "int", "none", "bytes", "no-exp"],
)
def test_refused_without_asking(app: Flask, fake: FakePlurality, make: Any, reason: str) -> None:
    exc = refusal(app, make(fake))
    assert type(exc) is InvalidToken
    assert exc.reason == reason
    assert len(fake.calls) == 0


def test_docs_sample_token_through_validate(app: Flask, fake: FakePlurality) -> None:
    exc = refusal(app, DOCS_TOKEN)
    assert isinstance(exc, InvalidToken)
    assert exc.reason == "expired"
    assert DOCS_TOKEN not in str(exc)
    assert fake.calls == []


# -- the validate method ---------------------------------------------------------------


def test_auto_falls_back_to_get_and_remembers(app: Flask, fake: FakePlurality) -> None:
    fake.methods = {"GET"}
    validate(app, fake.issue_token())
    validate(app, fake.issue_token())
    assert [(c.method, c.outcome) for c in fake.calls] == [("POST", 404), ("GET", 200), ("GET", 200)]


def test_auto_remembers_per_api_url(fake: FakePlurality, tmp_path: Any) -> None:
    """One extension, two apps, two upstreams: what one needs says nothing about the other."""
    plurality = Plurality()
    with FakePlurality() as modern:
        fake.methods = {"GET"}
        first = Flask("a", instance_path=str(tmp_path / "a"))
        first.config.update(
            TESTING=True,
            **config_for(fake),
        )
        second = Flask("b", instance_path=str(tmp_path / "b"))
        second.config.update(
            TESTING=True,
            **config_for(modern),
        )
        plurality.init_app(first)
        plurality.init_app(second)
        validate(first, fake.issue_token())
        validate(second, modern.issue_token())
        assert [c.method for c in fake.calls] == ["POST", "GET"]
        assert [c.method for c in modern.calls] == ["POST"]


def test_post_only(make_app: AppFactory, fake: FakePlurality) -> None:
    fake.methods = {"GET"}
    exc = refusal(make_app(PLURALITY_VALIDATE_METHOD="POST"), fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert exc.reason == "route_not_found"
    assert [c.method for c in fake.calls] == ["POST"]


def test_get_only_like_the_docs(make_app: AppFactory, fake: FakePlurality) -> None:
    token = fake.issue_token()
    validate(make_app(PLURALITY_VALIDATE_METHOD="GET"), token)
    assert [(c.method, c.token) for c in fake.calls] == [("GET", token)]


def test_get_only_on_a_post_only_server(make_app: AppFactory, fake: FakePlurality) -> None:
    fake.methods = {"POST"}
    exc = refusal(make_app(PLURALITY_VALIDATE_METHOD="GET"), fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert [c.method for c in fake.calls] == ["GET"]


def test_trailing_slash_in_api_url(make_app: AppFactory, fake: FakePlurality) -> None:
    assert validate(make_app(PLURALITY_API_URL=fake.url + "/"), fake.issue_token()).id


@pytest.mark.parametrize("body", ['{"error": {"code": "unauthorized"}}', '{"error": ["x"]}', '{"message": 401}'])
def test_a_gateway_401_with_a_non_string_error_is_an_outage_not_a_500(
    make_app: AppFactory, fake: FakePlurality, canned: Canned, body: str
) -> None:
    app = make_app(PLURALITY_API_URL=canned(401, body, JSON))
    exc = refusal(app, fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    response = app.test_client().post("/plurality/login", json={"token": fake.issue_token()}, headers=SAME_ORIGIN)
    assert response.status_code == 503
    assert response.json is not None and response.json["error"] == "upstream_unavailable"


# -- the older route's raw user row, and Plurality without a row ---------------------


def test_legacy_field_names_are_read(make_app: AppFactory, fake: FakePlurality, canned: Canned) -> None:
    """The older GET route answered the raw user row: address and pkpAddress."""
    row = {"id": "u-9", "email": "r@w.x", "address": "0xaddr", "signerAddress": "0xsig", "pkpAddress": "0xpkp"}
    profile = validate(make_app(PLURALITY_API_URL=canned(200, json.dumps({"user": row}))), fake.issue_token())
    assert (profile.auth_address, profile.proxy_address) == ("0xaddr", "0xpkp")
    assert profile.raw == row


def test_newer_field_names_win_over_legacy_ones(make_app: AppFactory, fake: FakePlurality, canned: Canned) -> None:
    user = {"id": "u", "authAddress": "0xnew", "address": "0xold", "proxyAddress": None, "pkpAddress": "0xpkp"}
    url = canned(200, json.dumps({"success": True, "user": user}))
    profile = validate(make_app(PLURALITY_API_URL=url), fake.issue_token())
    assert (profile.auth_address, profile.proxy_address) == ("0xnew", "0xpkp")


@pytest.mark.parametrize("user", [{}, {"email": "a@b.c"}, {"id": None}, {"id": ""}])
def test_a_user_without_id_is_an_outage_never_a_login(
    make_app: AppFactory, fake: FakePlurality, canned: Canned, user: dict[str, Any]
) -> None:
    """Plurality answers {"success": true, "user": {}} when it has no row for the user."""
    app = make_app(PLURALITY_API_URL=canned(200, json.dumps({"success": True, "user": user})))
    exc = refusal(app, fake.issue_token())
    assert type(exc) is UpstreamUnavailable
    assert exc.reason == "no_user"
    response = app.test_client().post(
        "/plurality/login", json={"token": fake.issue_token()}, headers={"Origin": "http://localhost"}
    )
    assert response.status_code == 503
    assert response.json is not None and response.json["error"] == "upstream_unavailable"


def test_the_stand_in_no_user_fault_at_login(app: Flask, fake: FakePlurality) -> None:
    fake.fail_next("no_user")
    token = fake.issue_token()
    exc = refusal(app, token)
    assert type(exc) is UpstreamUnavailable and exc.reason == "no_user"
    assert validate(app, token).id  # not remembered: asked again, and this time a user
