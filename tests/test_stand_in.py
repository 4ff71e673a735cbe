"""The stand-in answers like Plurality's validate API (docs/plurality-api.rst), over real HTTP."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_plurality.testing import FakePlurality, ValidateCall, shared_fake

ROOT = Path(__file__).resolve().parents[1]
TEXT = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"
DOCS_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6ImNkODY4MjFlLTRiMDMtNGU3ZS04ZDg5LT"
    "RiNzZmZjNmZmU0OSIsInVuaXF1ZVNlc3Npb25JZCI6ImU5M2I0ZDQ1LTg0ZDAtNDRhOS05YzU1LTgy"
    "ZTgxNjkxZDk3MSIsImlhdCI6MTczOTYyMzU0NCwiZXhwIjoxNzM5NzA5OTQ0fQ.HhMdOI-8vNVGmCl"
    "rHJuMasfcOdJFaQ-VgxsH4zlgDug"
)
NOT_MINE = object()  # "send no Authorization header"


@pytest.fixture(params=["in memory", "in a state file"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakePlurality]:
    """Every test runs against both: demo mode's stand-in keeps its records in a file,
    and must answer the validate API exactly as the one in memory does."""
    state_file = tmp_path / "stand-in.sqlite3" if request.param == "in a state file" else None
    with FakePlurality(client_id="demo", client_secret="s3cret", state_file=state_file) as stand_in:
        yield stand_in


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def call(
    fake: FakePlurality,
    token: object = None,
    *,
    method: str = "POST",
    authorization: object = "",
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 5,
) -> tuple[int, str, bytes, dict[str, str]]:
    """One validate request: (status, content type, body, headers).

    ``authorization`` "" means the fake's own good credentials; NOT_MINE none.
    """
    headers = {"Content-Type": content_type}
    if authorization == "":
        headers["Authorization"] = basic(f"{fake.client_id}:{fake.client_secret}")
    elif isinstance(authorization, str):
        headers["Authorization"] = authorization
    if body is None:
        body = json.dumps({"token": token}).encode() if token is not None else b""
    with requests.request(method, fake.validate_url, data=body, headers=headers, timeout=timeout) as response:
        return (
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.content,
            dict(response.headers),
        )


# -- the happy path -------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_valid_token_answers_the_user(fake: FakePlurality, method: str) -> None:
    token = fake.issue_token(user_id="u-1", email="a@b.c", auth_address="0xaa", proxy_address="0xbb")
    status, ctype, body, _ = call(fake, token, method=method)
    assert (status, ctype) == (200, JSON)
    assert body == (b'{"success":true,"user":{"id":"u-1","email":"a@b.c","authAddress":"0xaa","proxyAddress":"0xbb"}}')


def test_legacy_shape_has_no_success(fake: FakePlurality) -> None:
    fake.legacy = True
    status, _, body, _ = call(fake, fake.issue_token(user_id="u-1", email=None))
    assert status == 200
    assert json.loads(body) == {
        "user": {
            "id": "u-1",
            "email": None,
            "authAddress": json.loads(body)["user"]["authAddress"],
            "proxyAddress": json.loads(body)["user"]["proxyAddress"],
        }
    }


def test_issued_token_is_shaped_like_plurality(fake: FakePlurality) -> None:
    token = fake.issue_token(ttl=60, iat=2_000_000_000)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert list(claims) == ["id", "uniqueSessionId", "iat", "exp"]
    assert claims["exp"] == claims["iat"] + 60 == 2_000_000_060


def test_user_record_is_kept_across_tokens(fake: FakePlurality) -> None:
    first = fake.issue_token(user_id="u-1", email="old@x.y")
    second = fake.issue_token(user_id="u-1", email="new@x.y", proxy_address=None)
    assert first != second
    users = [json.loads(call(fake, t)[2])["user"] for t in (first, second)]
    assert users[0] == users[1]
    assert users[0]["email"] == "new@x.y"
    assert users[0]["authAddress"].startswith("0x")
    assert len(users[0]["authAddress"]) == 42
    assert users[0]["proxyAddress"] is None


def test_default_user_is_new_each_time(fake: FakePlurality) -> None:
    ids = {jwt.decode(fake.issue_token(), options={"verify_signature": False})["id"]}
    ids.add(jwt.decode(fake.issue_token(), options={"verify_signature": False})["id"])
    assert len(ids) == 2


def test_head_uses_the_get_route(fake: FakePlurality) -> None:
    status, ctype, body, _ = call(fake, fake.issue_token(), method="HEAD")
    assert (status, ctype, body) == (200, JSON, b"")


@pytest.mark.parametrize("path", ["/api/user/validate/", "/API/User/Validate"])
def test_express_routing_leniency(fake: FakePlurality, path: str) -> None:
    url = fake.url.removesuffix("/api") + path
    auth = (fake.client_id, fake.client_secret)
    with requests.post(url, json={"token": fake.issue_token()}, auth=auth) as r:
        assert r.status_code == 200


# -- the response table, in Plurality's order ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"{}", "application/json"),
        (b"not json", "application/json"),
        (b'["token"]', "application/json"),
        (b'{"token": ""}', "application/json"),
        (b'{"token": null}', "application/json"),
        (b'{"token": 42}', "application/json"),
        # express.json() leaves other content types unparsed
        (b'{"token": "a.b.c"}', "text/plain"),
    ],
)
def test_token_missing(fake: FakePlurality, body: bytes, content_type: str) -> None:
    result = call(fake, body=body, content_type=content_type)
    assert result[:3] == (401, TEXT, b"Token is missing")


def test_token_missing_comes_before_credentials(fake: FakePlurality) -> None:
    assert call(fake, authorization=NOT_MINE)[:3] == (401, TEXT, b"Token is missing")


def forged(fake: FakePlurality, key: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"id": "u", "uniqueSessionId": "nope", "iat": now, "exp": now + 3600}
    payload.update(claims)
    return jwt.encode(payload, key or fake.signing_key, algorithm="HS256")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda f: forged(f, key="x" * 32), id="bad-signature"),
        pytest.param(lambda f: "not-a-jwt", id="malformed"),
        pytest.param(lambda f: f.issue_token(ttl=-1), id="expired"),
        pytest.param(lambda f: f.issue_token(ttl=0), id="expires-now"),
        pytest.param(lambda f: DOCS_TOKEN, id="docs-sample"),
        pytest.param(
            lambda f: jwt.encode({"id": "u"}, f.signing_key, algorithm="HS512"),
            id="other-alg",
        ),
    ],
)
def test_invalid_token(fake: FakePlurality, make: Any) -> None:
    token = make(fake)
    assert call(fake, token)[:3] == (403, TEXT, b"Invalid token")
    # checked before the credentials
    assert call(fake, token, authorization=NOT_MINE)[:3] == (403, TEXT, b"Invalid token")


def test_revoked_token(fake: FakePlurality) -> None:
    token, other = fake.issue_token(user_id="u"), fake.issue_token(user_id="u")
    fake.revoke(token)
    assert call(fake, token)[:3] == (403, TEXT, b"Invalid token")
    assert call(fake, other)[0] == 200


@pytest.mark.parametrize(
    "authorization",
    # Plurality checks startsWith('Basic '), case-sensitive, after Node strips trailing spaces.
    [NOT_MINE, "Bearer abc", "Digest x", "Basic", "basic " + base64.b64encode(b"demo:s3cret").decode()],
)
def test_no_basic_header(fake: FakePlurality, authorization: object) -> None:
    result = call(fake, fake.issue_token(), authorization=authorization)
    assert result[:3] == (401, JSON, b'{"message":"Unauthorized"}')


@pytest.mark.parametrize(
    "authorization",
    ["Basic !!!", basic("no-colon"), basic(":s3cret"), basic("demo:")],
)
def test_basic_without_id_or_secret(fake: FakePlurality, authorization: str) -> None:
    result = call(fake, fake.issue_token(), authorization=authorization)
    assert result[:3] == (401, JSON, b'{"error":"Unauthorized"}')


def test_unknown_client(fake: FakePlurality) -> None:
    result = call(fake, fake.issue_token(), authorization=basic("who:s3cret"))
    assert result[:3] == (401, JSON, b'{"error":"Invalid Client ID"}')


def test_wrong_secret(fake: FakePlurality) -> None:
    result = call(fake, fake.issue_token(), authorization=basic("demo:wrong"))
    assert result[:3] == (401, JSON, b'{"error":"Invalid Client Secret"}')


def test_token_of_another_client(fake: FakePlurality) -> None:
    fake.add_client("other-app", "other-secret")
    token = fake.issue_token(client_id="other-app")
    denied = b'{"error":"user does not belong to the given client"}'
    assert call(fake, token)[:3] == (401, JSON, denied)
    assert call(fake, token, authorization=basic("other-app:other-secret"))[0] == 200
    # and the default client's tokens are not the other app's
    mine = fake.issue_token()
    assert call(fake, mine, authorization=basic("other-app:other-secret"))[2] == denied


def test_unknown_session(fake: FakePlurality) -> None:
    result = call(fake, forged(fake))
    assert result[:3] == (401, JSON, b'{"error":"user does not belong to the given client"}')


def test_issue_token_for_unregistered_client_is_refused(fake: FakePlurality) -> None:
    with pytest.raises(ValueError, match="add_client"):
        fake.issue_token(client_id="nobody")


def test_server_fault(fake: FakePlurality) -> None:
    fake.fail_next(500)
    result = call(fake, fake.issue_token())
    assert result[:3] == (
        500,
        JSON,
        b'{"error":"An error occurred while processing your request"}',
    )


# -- faults -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504, 404])
def test_proxy_errors_are_html(fake: FakePlurality, status: int) -> None:
    fake.fail_next(status)
    code, ctype, body, headers = call(fake, fake.issue_token())
    assert code == status
    assert ctype.startswith("text/html")
    assert body.startswith(b"<html>") and str(status).encode() in body
    assert "Retry-After" not in headers


def test_retry_after(fake: FakePlurality) -> None:
    fake.fail_next(429, retry_after=7)
    fake.fail_next(500, retry_after=3)
    assert call(fake, fake.issue_token())[3]["Retry-After"] == "7"
    assert call(fake, fake.issue_token())[3]["Retry-After"] == "3"


def test_times_then_back_to_normal(fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.fail_next(503, times=2)
    assert [call(fake, token)[0] for _ in range(3)] == [503, 503, 200]
    assert [c.outcome for c in fake.calls] == [503, 503, 200]


def test_faults_apply_whatever_the_method(fake: FakePlurality) -> None:
    fake.methods = {"POST"}
    fake.fail_next(502)
    assert call(fake, fake.issue_token(), method="GET")[0] == 502


def test_garbage(fake: FakePlurality) -> None:
    fake.fail_next("garbage")
    status, _, body, _ = call(fake, fake.issue_token())
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_wrong_shape(fake: FakePlurality) -> None:
    fake.fail_next("wrong_shape")
    assert call(fake, fake.issue_token())[:3] == (200, JSON, b'{"success":true}')


def test_reset(fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.fail_next("reset")
    with pytest.raises(requests.ConnectionError, match="reset by peer"):
        call(fake, token)
    assert call(fake, token)[0] == 200
    assert [c.outcome for c in fake.calls] == [0, 200]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition()`` holds; the deadline is a bound for a loaded machine, not a measurement."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_timeout_hangs_until_stop_lets_it_go() -> None:
    """A hung call outlives the client's patience, and ``stop()`` ends it instead of
    waiting out ``hang_seconds`` (an hour here: only stop() can release it)."""
    fake = FakePlurality(hang_seconds=3600).start()
    released: list[BaseException] = []

    def patient_call() -> None:
        try:
            call(fake, fake.issue_token(), timeout=120)
        except requests.RequestException as exc:
            released.append(exc)

    patient = threading.Thread(target=patient_call, daemon=True)
    try:
        fake.fail_next("timeout")
        with pytest.raises(requests.ReadTimeout):
            call(fake, fake.issue_token(), timeout=0.3)
        wait_for(lambda: len(fake.calls) == 1, "the hung call to be recorded")
        assert [c.outcome for c in fake.calls] == [0]
        fake.fail_next("timeout")
        patient.start()
        wait_for(lambda: len(fake.calls) == 2, "the second call to hang")
        assert patient.is_alive()  # still hanging: nothing answers it
    finally:
        fake.stop()
    patient.join(timeout=60)  # far below both the hang (3600 s) and the client's timeout (120 s)
    assert not patient.is_alive(), "stop() left a hanging call waiting"
    assert len(released) == 1 and isinstance(released[0], requests.ConnectionError), released


def test_timeout_gives_up_without_answer() -> None:
    with FakePlurality(hang_seconds=0.2) as fake:
        fake.fail_next("timeout")
        with pytest.raises(requests.ConnectionError):
            call(fake, fake.issue_token(), timeout=5)


@pytest.mark.parametrize("kind", [200, 600, "boom", True])
def test_unknown_fault_is_refused(fake: FakePlurality, kind: Any) -> None:
    with pytest.raises(ValueError):
        fake.fail_next(kind)


def test_latency(fake: FakePlurality) -> None:
    """The answer is held back ``latency`` seconds: a client that waits less gets none."""
    token = fake.issue_token()
    fake.latency = 1.0
    with pytest.raises(requests.ReadTimeout):
        call(fake, token, timeout=0.2)
    assert call(fake, token, timeout=30)[0] == 200
    wait_for(lambda: len(fake.calls) == 2, "both calls to be answered")
    assert [c.outcome for c in fake.calls] == [200, 200]


# -- methods and routing ------------------------------------------------------------


def test_method_not_routed_gets_express_404(fake: FakePlurality) -> None:
    fake.methods = {"POST"}
    status, ctype, body, _ = call(fake, fake.issue_token(), method="GET")
    assert (status, ctype) == (404, TEXT)
    assert body == (
        b'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        b"<title>Error</title>\n</head>\n<body>\n"
        b"<pre>Cannot GET /api/user/validate</pre>\n</body>\n</html>\n"
    )
    assert call(fake, fake.issue_token(), method="POST")[0] == 200
    assert [(c.method, c.outcome) for c in fake.calls] == [("GET", 404), ("POST", 200)]


def test_get_only_server(fake: FakePlurality) -> None:
    fake.methods = {"GET"}
    token = fake.issue_token()
    assert b"Cannot POST /api/user/validate" in call(fake, token)[2]
    assert call(fake, token, method="GET")[0] == 200


def test_other_paths_are_404_and_not_recorded(fake: FakePlurality) -> None:
    with requests.post(fake.url + "/user/other", json={}) as r:
        assert r.status_code == 404
        assert b"<pre>Cannot POST /api/user/other</pre>" in r.content
    assert fake.calls == []


# -- the calls log ---------------------------------------------------------------


def test_calls_log(fake: FakePlurality) -> None:
    token = fake.issue_token()
    call(fake, token)
    call(fake, token, authorization=basic("demo:wrong"))
    call(fake, authorization=NOT_MINE, method="GET")
    assert fake.calls == [
        ValidateCall("POST", True, "demo", token, 200),
        ValidateCall("POST", False, "demo", token, 401),
        ValidateCall("GET", False, None, None, 401),
    ]
    fake.calls.clear()  # a copy: the log is untouched
    assert len(fake.calls) == 3
    fake.reset_calls()
    assert fake.calls == []


def test_concurrent_calls_are_all_recorded(fake: FakePlurality) -> None:
    tokens = [fake.issue_token() for _ in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda t: call(fake, t)[0], tokens))
    assert statuses == [200] * 24
    assert sorted(c.token or "" for c in fake.calls) == sorted(tokens)


# -- lifecycle ---------------------------------------------------------------------


def test_url_and_repr() -> None:
    fake = FakePlurality(client_secret="top-secret")
    with pytest.raises(RuntimeError):
        _ = fake.url
    with fake:
        assert fake.url.startswith("http://127.0.0.1:")
        assert fake.url.endswith("/api")
        assert fake.validate_url == fake.url + "/user/validate"
        assert "top-secret" not in repr(fake)
        assert fake.signing_key not in repr(fake)
        assert fake.start() is fake  # idempotent
    fake.stop()  # idempotent too


def test_short_signing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FakePlurality(signing_key="short")
    assert FakePlurality(signing_key="k" * 32).signing_key == "k" * 32


def test_restart_keeps_state() -> None:
    fake = FakePlurality()
    with fake:
        token = fake.issue_token()
    with fake:
        assert call(fake, token)[0] == 200


def test_shared_fake_is_one_started_demo_instance() -> None:
    fake = shared_fake()
    assert shared_fake() is fake
    assert (fake.client_id, fake.client_secret) == (FakePlurality.DEMO_CLIENT_ID, "demo-secret")
    assert FakePlurality.DEMO_CLIENT_ID == "9a3a4bda-bbc5-46e4-8f42-2e4deca35a31"  # a UUID, as Plurality's ids are
    assert call(fake, fake.issue_token())[0] == 200


# -- the docs' curl, with the real curl ----------------------------------------------


def curl_like_the_docs(fake: FakePlurality, token: str) -> tuple[int, str, str]:
    """The seed docs' command, verbatim but for the URL and the credentials."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    credentials = base64.b64encode(b"demo:s3cret").decode()
    completed = subprocess.run(
        [
            curl, "--silent", "--show-error",
            "--location", "--request", "GET", fake.validate_url,
            "--header", "Content-Type: application/json",
            "--header", f"Authorization: Basic {credentials}",
            "--data", '{"token": "' + token + '"}',
            "--write-out", "\n%{http_code} %{content_type}",
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, tail = completed.stdout.rpartition("\n")
    status, _, ctype = tail.partition(" ")
    return int(status), ctype, body


def test_docs_curl_with_a_good_token(fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="u-1", email="a@b.c")
    status, ctype, body = curl_like_the_docs(fake, token)
    assert (status, ctype) == (200, JSON)
    user = json.loads(body)["user"]
    assert (user["id"], user["email"]) == ("u-1", "a@b.c")
    assert fake.calls[-1].method == "GET"
    assert fake.calls[-1].auth_ok


def test_docs_curl_with_the_docs_expired_token(fake: FakePlurality) -> None:
    assert curl_like_the_docs(fake, DOCS_TOKEN) == (403, TEXT, "Invalid token")


# -- python -m flask_plurality.testing -------------------------------------------------


def test_command_line_server() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "flask_plurality.testing", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or "Ctrl-C" not in lines[-1]:
            line = process.stdout.readline()
            assert line, f"server exited early: {process.communicate()}"
            lines.append(line)
        url = lines[0].split()[4]
        token = lines[1 + next(i for i, x in enumerate(lines) if "token" in x)].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert f"  PLURALITY_CLIENT_ID={FakePlurality.DEMO_CLIENT_ID}\n" in lines
        assert "  PLURALITY_CLIENT_SECRET=demo-secret\n" in lines
        with requests.post(
            url + "/user/validate",
            json={"token": token},
            auth=(FakePlurality.DEMO_CLIENT_ID, "demo-secret"),
            timeout=5,
        ) as response:
            assert response.json()["success"] is True
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "Stopped." in out
    assert "Traceback" not in err
    assert "Warning" not in err


# -- any body, never a 500 ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b"{" * 100_000, b'{"token":' * 20_000, b"\xff\xfe\x00", b'{"token": 1e999999}', b"1" * 5000],
    ids=["brackets", "braces", "nested-token", "not-utf8", "huge-float", "long-int"],
)
def test_any_body_is_a_401_token_missing_never_a_500(fake: FakePlurality, body: bytes) -> None:
    assert call(fake, body=body)[:3] == (401, TEXT, b"Token is missing")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=2048) | st.text(max_size=512).map(str.encode),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
    # requests itself refuses a header value that starts with whitespace (' ', U+0085, U+00A0).
    authorization=st.text(
        st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=64
    ).filter(lambda value: not value[:1].isspace()),
)
def test_the_stand_in_answers_any_request_as_plurality_would(
    fake: FakePlurality, body: bytes, content_type: str, authorization: str
) -> None:
    status, _, answer, _ = call(fake, body=body, content_type=content_type, authorization=authorization or "")
    assert status in (401, 403), answer
    assert b"Traceback" not in answer


# -- the hostile faults ---------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drip", "slow_headers"])
def test_drip_faults_send_the_real_answer_slowly(fake: FakePlurality, fault: str) -> None:
    fake.drip_interval = 0.003
    fake.fail_next(fault)
    token = fake.issue_token(user_id="slow")
    started = time.monotonic()
    status, _, body, _ = call(fake, token, timeout=60)
    assert status == 200 and json.loads(body)["user"]["id"] == "slow"
    assert time.monotonic() - started > 0.003 * len(body)  # one byte at a time
    assert [c.outcome for c in fake.calls] == [200]


@pytest.mark.parametrize("fault", ["huge", "huge_chunked"])
def test_huge_faults_are_valid_answers_of_huge_size(fake: FakePlurality, fault: str) -> None:
    fake.huge_size = 3 * 1024 * 1024
    fake.fail_next(fault)
    status, _, body, headers = call(fake, fake.issue_token(), timeout=30)
    assert status == 200 and len(body) == fake.huge_size
    assert json.loads(body)["success"] is True
    assert ("Content-Length" in headers) == (fault == "huge")


def test_gzip_fault_is_a_bomb_of_a_valid_answer(fake: FakePlurality) -> None:
    import gzip

    fake.gzip_size = 8 * 1024 * 1024
    fake.fail_next("gzip")
    with requests.post(
        fake.validate_url,
        json={"token": fake.issue_token()},
        auth=(fake.client_id, fake.client_secret),
        stream=True,
        timeout=30,
    ) as response:
        packed = response.raw.read(decode_content=False)
        assert response.headers["Content-Encoding"] == "gzip"
    assert len(packed) < fake.gzip_size // 500
    inflated = gzip.decompress(packed)
    assert len(inflated) == fake.gzip_size and json.loads(inflated)["user"]["id"]


def test_redirect_fault_points_back_at_itself(fake: FakePlurality) -> None:
    fake.fail_next("redirect")
    response = requests.post(fake.validate_url, json={"token": "x"}, allow_redirects=False, timeout=5)
    assert response.status_code == 307
    assert response.headers["Location"] == fake.validate_url


def test_no_user_fault(fake: FakePlurality) -> None:
    fake.fail_next("no_user")
    assert call(fake, fake.issue_token())[:3] == (200, JSON, b'{"success":true,"user":{}}')


@pytest.mark.parametrize("value", ["²", "-1", "1e9", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
def test_retry_after_is_sent_as_given(fake: FakePlurality, value: str) -> None:
    fake.fail_next(503, retry_after=value)
    assert call(fake, fake.issue_token())[3]["Retry-After"] == value
