"""A hostile or broken upstream, over real HTTP: the stand-in's fault injection, and a
tiny server of our own where the stand-in cannot say it.

Each case checks what a user and an operator would notice: the answer (status, error
code, ``Retry-After``), the time the call took (bounded by ``PLURALITY_TIMEOUT`` plus a
margin, with a generous ceiling since the machine is shared), the memory the worker
allocated for it (a few MiB at most, whatever the server sent) and the number of calls
that reached the upstream.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from helpers import AppFactory, age_session, error_of, login
from werkzeug.wrappers import Request, Response

from flask_plurality import InvalidToken, PluralityError, UpstreamUnavailable
from flask_plurality.client import MAX_RETRY_AFTER
from flask_plurality.responses import DEFAULT_RETRY_AFTER
from flask_plurality.testing import FakePlurality, live_server
from flask_plurality.transport import MAX_BODY

TIMEOUT = 2.0
#: What "bounded by the timeout" means on a loaded 2-core CI machine: generous on purpose.
CEILING = TIMEOUT + 3.0
#: The most a worker may allocate for one hostile answer.
MEMORY_CAP = 4 * 1024 * 1024


@dataclass
class Outcome:
    seconds: float
    peak_bytes: int
    error: PluralityError | None
    calls: int


def measured(fake: FakePlurality, run: Callable[[], Any]) -> Outcome:
    """Run ``run()``, timing it and tracing every allocation in the process meanwhile
    (the stand-in's own buffers included, so the figure is an upper bound)."""
    before = len(fake.calls)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = time.monotonic()
        error: PluralityError | None = None
        try:
            run()
        except PluralityError as exc:
            error = exc
        seconds = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Outcome(seconds, peak, error, len(fake.calls) - before)


def validate(app: Flask, token: str) -> Any:
    with app.app_context():
        return app.extensions["plurality"].validate(token)


@pytest.fixture
def hostile(make_app: AppFactory) -> Flask:
    return make_app(PLURALITY_TIMEOUT=TIMEOUT, PLURALITY_BREAKER_THRESHOLD=1000)


# -- time -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drip", "slow_headers"])
def test_a_drip_fed_answer_ends_at_the_timeout(hostile: Flask, fake: FakePlurality, fault: str) -> None:
    """One byte every 0.25 s: each read is quick, the whole answer would take ~40 s."""
    fake.fail_next(fault)
    outcome = measured(fake, lambda: validate(hostile, fake.issue_token()))
    assert isinstance(outcome.error, UpstreamUnavailable)
    assert outcome.error.reason == "timeout"
    assert TIMEOUT - 0.2 <= outcome.seconds < CEILING
    assert outcome.calls == 1
    assert outcome.peak_bytes < MEMORY_CAP


def test_the_stand_in_drip_is_a_good_answer_for_a_patient_client(fake: FakePlurality) -> None:
    """What the fault sends would log the user in: only the deadline refuses it."""
    import requests

    fake.drip_interval = 0.002
    fake.fail_next("slow_headers")
    token = fake.issue_token(user_id="patient")
    answer = requests.post(
        fake.validate_url, json={"token": token}, auth=(fake.client_id, fake.client_secret), timeout=30
    )
    assert answer.status_code == 200
    assert answer.json()["user"]["id"] == "patient"


def test_a_drip_fed_login_answers_503_within_the_timeout(hostile: Flask, fake: FakePlurality) -> None:
    fake.fail_next("drip")
    client = hostile.test_client()
    start = time.monotonic()
    response = login(client, fake.issue_token())
    assert time.monotonic() - start < CEILING
    error_of(response, 503, "upstream_unavailable")
    assert response.headers["Retry-After"] == str(DEFAULT_RETRY_AFTER)
    assert client.get("/plurality/session").status_code == 401


def test_auto_method_fallback_shares_one_deadline(make_app: AppFactory, fake: FakePlurality) -> None:
    """POST answers 404, then GET drips: both within one PLURALITY_TIMEOUT, not two."""
    app = make_app(PLURALITY_TIMEOUT=TIMEOUT)
    fake.fail_next(404)
    fake.fail_next("drip")
    outcome = measured(fake, lambda: validate(app, fake.issue_token()))
    assert isinstance(outcome.error, UpstreamUnavailable) and outcome.error.reason == "timeout"
    assert outcome.seconds < CEILING
    assert outcome.calls == 2


def test_the_watchdog_does_not_cut_a_reused_connection(make_app: AppFactory, fake: FakePlurality) -> None:
    """Fast calls on kept-alive connections, after a timed-out one, all answer."""
    app = make_app(PLURALITY_TIMEOUT=0.5)
    fake.fail_next("drip")
    assert isinstance(measured(fake, lambda: validate(app, fake.issue_token())).error, UpstreamUnavailable)
    tokens = [fake.issue_token() for _ in range(20)]
    with app.app_context():
        profiles = [app.extensions["plurality"].validate(token) for token in tokens]
    time.sleep(0.7)  # every deadline of those calls has passed: the watchdog ran for each
    with app.app_context():
        profiles += [app.extensions["plurality"].validate(token) for token in tokens]
    assert len(profiles) == 40
    assert [c.outcome for c in fake.calls[-40:]] == [200] * 40


# -- size and encoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"), [("huge", "oversized"), ("huge_chunked", "oversized"), ("gzip", "encoded")]
)
def test_a_huge_or_compressed_answer_is_an_outage_read_in_a_few_kib(
    hostile: Flask, fake: FakePlurality, fault: str, reason: str
) -> None:
    """10 MiB of JSON, with or without a Content-Length; 254 KiB of gzip that would
    inflate to 256 MiB: each a valid answer if read whole, never a login."""
    from flask_plurality.fake import _gzip_bomb

    _gzip_bomb(fake.gzip_size)  # built before measuring: the stand-in's cost, not the worker's
    fake.fail_next(fault)
    outcome = measured(fake, lambda: validate(hostile, fake.issue_token()))
    assert isinstance(outcome.error, UpstreamUnavailable)
    assert outcome.error.reason == reason
    assert outcome.seconds < CEILING
    assert outcome.peak_bytes < MEMORY_CAP
    assert outcome.calls == 1


def test_the_largest_answer_read_is_a_few_kib(make_app: AppFactory, fake: FakePlurality) -> None:
    with tiny_server(200, b'{"success":true,"user":{"id":"u","pad":"' + b"x" * (MAX_BODY - 50) + b'"}}') as url:
        assert validate(make_app(PLURALITY_API_URL=url), fake.issue_token()).id == "u"
    with tiny_server(200, b'{"success":true,"user":{"id":"u","pad":"' + b"x" * MAX_BODY + b'"}}') as url:
        exc = raised(make_app(PLURALITY_API_URL=url), fake.issue_token())
    assert isinstance(exc, UpstreamUnavailable) and exc.reason == "oversized"


def test_identity_is_asked_for(make_app: AppFactory, fake: FakePlurality) -> None:
    with tiny_server(200, b'{"success":true,"user":{"id":"u"}}') as url:
        validate(make_app(PLURALITY_API_URL=url), fake.issue_token())
        (headers,) = tiny_server.received  # type: ignore[attr-defined]
    assert headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-whatever"])
def test_any_content_encoding_is_refused_even_a_small_one(
    make_app: AppFactory, fake: FakePlurality, encoding: str
) -> None:
    import gzip

    body = gzip.compress(b'{"success":true,"user":{"id":"u"}}')
    with tiny_server(200, body, headers={"Content-Encoding": encoding}) as url:
        exc = raised(make_app(PLURALITY_API_URL=url), fake.issue_token())
    assert isinstance(exc, UpstreamUnavailable) and exc.reason == "encoded"


# -- redirects ------------------------------------------------------------------------


def test_a_redirect_is_never_followed(hostile: Flask, fake: FakePlurality) -> None:
    fake.fail_next("redirect")
    outcome = measured(fake, lambda: validate(hostile, fake.issue_token()))
    assert isinstance(outcome.error, UpstreamUnavailable)
    assert outcome.error.reason == "redirect"
    assert outcome.seconds < CEILING
    assert outcome.calls == 1  # the stand-in saw one call: the Location was not requested


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_3xx_is_an_outage(make_app: AppFactory, fake: FakePlurality, status: int) -> None:
    with tiny_server(status, b"", headers={"Location": "https://evil.example/api/user/validate"}) as url:
        exc = raised(make_app(PLURALITY_API_URL=url), fake.issue_token())
        assert len(tiny_server.received) == 1  # type: ignore[attr-defined]
    assert type(exc) is UpstreamUnavailable and exc.reason == "redirect"


# -- 403: only Plurality's own refusal is a "no" --------------------------------------


def test_a_gateway_403_during_revalidation_keeps_the_user_logged_in(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_TIMEOUT=TIMEOUT, PLURALITY_REVALIDATE=60)
    client = app.test_client()
    token = fake.issue_token()
    assert login(client, token).status_code == 200
    age_session(client, 61)
    fake.fail_next(403)  # an nginx/WAF HTML page
    error_of(client.get("/protected"), 503, "upstream_unavailable")
    assert client.get("/plurality/session").status_code == 200  # not logged out
    assert client.get("/protected").status_code == 200  # asked again: nothing remembered
    assert [c.outcome for c in fake.calls] == [200, 403, 200]


def test_a_gateway_403_at_login_is_not_remembered_nor_throttled(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_TIMEOUT=TIMEOUT, PLURALITY_LOGIN_MAX_FAILURES=3, PLURALITY_BREAKER_THRESHOLD=1000)
    token = fake.issue_token()
    fake.fail_next(403, times=5)
    for _ in range(5):
        error_of(login(app.test_client(), token), 503, "upstream_unavailable")
    assert login(app.test_client(), token).status_code == 200  # no 401, no 429
    assert [c.outcome for c in fake.calls] == [403] * 5 + [200]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body><h1>403 Forbidden</h1></body></html>", "text/html"),
        (b'{"message":"Forbidden"}', "application/json"),
        (b'{"error":"Invalid token"}', "application/json"),
        (b"Invalid token, says the proxy", "text/plain"),
        (b"", "text/plain"),
    ],
)
def test_only_the_plain_text_invalid_token_403_is_a_refusal(
    make_app: AppFactory, fake: FakePlurality, body: bytes, content_type: str
) -> None:
    token = fake.issue_token()
    with tiny_server(403, body, content_type=content_type) as url:
        app = make_app(PLURALITY_API_URL=url)
        assert type(raised(app, token)) is UpstreamUnavailable
        assert type(raised(app, token)) is UpstreamUnavailable  # asked again: not remembered
        assert len(tiny_server.received) == 2  # type: ignore[attr-defined]
    with tiny_server(403, b"Invalid token", content_type="text/html; charset=utf-8") as url:
        app = make_app(PLURALITY_API_URL=url)
        assert type(raised(app, token)) is InvalidToken
        assert type(raised(app, token)) is InvalidToken
        assert len(tiny_server.received) == 1  # type: ignore[attr-defined]  # remembered until exp


# -- Retry-After ----------------------------------------------------------------------


def _http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


def _header(value: str) -> str:
    """``"date+120"``: an HTTP date that many seconds from now (made when the test runs)."""
    return _http_date(float(value[4:])) if value.startswith("date") else value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("²", None),
        ("-1", None),
        ("1e9", None),
        ("soon", None),
        ("\x00\x7f", None),
        ("Fri, 99 Foo 2025 99:99:99 GMT", None),
        ("", None),
        ("0", None),
        ("7", 7),
        (" 12 ", 12),
        ("99999999999999999999999", MAX_RETRY_AFTER),
        ("date+120", 120),
        ("date-120", None),
        ("date+86400", MAX_RETRY_AFTER),
    ],
    ids=[
        "superscript",
        "negative",
        "float",
        "garbage",
        "control",
        "bad-date",
        "empty",
        "zero",
        "seven",
        "spaces",
        "huge",
        "date-ahead",
        "date-past",
        "date-tomorrow",
    ],
)
def test_odd_retry_after_values(hostile: Flask, fake: FakePlurality, value: str, expected: int | None) -> None:
    fake.fail_next(429, retry_after=_header(value))
    outcome = measured(fake, lambda: validate(hostile, fake.issue_token()))
    assert isinstance(outcome.error, UpstreamUnavailable)
    assert outcome.error.reason == "rate_limited"
    if expected is not None and value.startswith("date"):
        assert outcome.error.retry_after is not None and abs(outcome.error.retry_after - expected) <= 2
    else:
        assert outcome.error.retry_after == expected
    assert outcome.calls == 1
    assert outcome.seconds < CEILING


@pytest.mark.parametrize("value", ["²", "-1", "1e9", "soon", "date+30"])
def test_odd_retry_after_at_login_is_a_json_503(make_app: AppFactory, fake: FakePlurality, value: str) -> None:
    app = make_app(PLURALITY_TIMEOUT=TIMEOUT)
    fake.fail_next(503, retry_after=_header(value))
    response = login(app.test_client(), fake.issue_token())
    error_of(response, 503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


# -- a server of our own, for answers the stand-in does not give ---------------------


class _Tiny:
    """``with tiny_server(status, body, ...) as url``: a validate route that always
    answers exactly that; ``tiny_server.received`` lists the request headers it got."""

    received: list[dict[str, str]]

    @contextlib.contextmanager
    def __call__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Iterator[str]:
        self.received = []

        def wsgi(environ: Any, start_response: Any) -> Any:
            request = Request(environ)
            request.get_data()
            self.received.append(dict(request.headers))
            response = Response(body, status, content_type=content_type, headers=headers)
            response.direct_passthrough = True  # the body as given, however odd
            return response(environ, start_response)

        with live_server(wsgi) as base:
            yield base + "/api"


tiny_server = _Tiny()


def raised(app: Flask, token: str) -> PluralityError:
    with pytest.raises(PluralityError) as info:
        validate(app, token)
    return info.value


# -- over TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_fake(fake: FakePlurality, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stand-in's validate route over HTTPS: its URL. The certificate is self-signed
    and trusted through REQUESTS_CA_BUNDLE, so TLS is verified as in production."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert]
    command += ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with live_server(fake._wsgi, ssl_context=context) as base:
        yield base + "/api"


@pytest.mark.parametrize(("fault", "reason"), [("drip", "timeout"), ("slow_headers", "timeout"), ("huge", "oversized")])
def test_the_deadline_and_the_cap_hold_over_tls(
    make_app: AppFactory, fake: FakePlurality, tls_fake: str, fault: str, reason: str
) -> None:
    app = make_app(PLURALITY_API_URL=tls_fake, PLURALITY_TIMEOUT=TIMEOUT)
    assert validate(app, fake.issue_token()).id  # a good answer over TLS first
    fake.fail_next(fault)
    outcome = measured(fake, lambda: validate(app, fake.issue_token()))
    assert isinstance(outcome.error, UpstreamUnavailable) and outcome.error.reason == reason
    assert outcome.seconds < CEILING
    assert outcome.calls == 1
    assert validate(app, fake.issue_token()).id  # and the next call is fine
