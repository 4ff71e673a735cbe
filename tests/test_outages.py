"""Fault injection through the stand-in over real HTTP: every way Plurality can fail,
at login and at revalidation, under both outage policies.

Each case checks what a user and an operator would notice: the status and error code,
``Retry-After``, whether the session survived (asked through ``/plurality/session`` and
read back from the store), how many calls reached Plurality, the reason code in the
signals, and that no log line carries the token or the secret.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from helpers import AppFactory, age_session, captured, free_port, login, session_is_live, stored_login

from flask_plurality import signals
from flask_plurality.responses import DEFAULT_RETRY_AFTER
from flask_plurality.testing import FakePlurality

OTHER_CLIENT = ("other-client", "other-secret")


# -- helpers ------------------------------------------------------------------------------


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}/api"


def assert_clean_logs(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        text = record.getMessage()
        for secret in secrets:
            assert secret not in text, f"secret in log line: {text}"


# -- the matrix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    outage: bool  # True: Plurality could not answer; False: it said no about the token
    reason: str  # the reason code in login_failed / revalidation_failed
    calls: int = 1  # calls that reach the stand-in
    retry_after: int = DEFAULT_RETRY_AFTER  # the Retry-After the client is told (outages)


FAULTS = [
    *(Fault(str(status), True, f"http_{status}") for status in (500, 502, 503, 504)),
    *(Fault(f"{status}+retry-after", True, f"http_{status}", retry_after=7) for status in (500, 502, 503, 504)),
    Fault("429", True, "rate_limited"),
    Fault("429+retry-after", True, "rate_limited", retry_after=7),
    Fault("read-timeout", True, "timeout"),
    Fault("connection-refused", True, "connection_error", calls=0),
    Fault("reset", True, "connection_error"),
    Fault("garbage", True, "bad_response"),
    Fault("wrong-shape", True, "bad_response"),
    Fault("credentials-rejected", True, "credentials_rejected"),
    Fault("revoked", False, "rejected"),
    Fault("other-client", False, "wrong_client"),
]


def arm(fault: Fault, fake: FakePlurality, app: Flask, token: str) -> None:
    """Make the next validate call fail the way ``fault`` says."""
    name = fault.name
    status, _, extra = name.partition("+")
    if status.isdigit():
        fake.fail_next(int(status), retry_after=fault.retry_after if extra else None)
    elif name == "read-timeout":
        fake.fail_next("timeout")
    elif name == "connection-refused":
        app.config["PLURALITY_API_URL"] = closed_port_url()
    elif name == "reset":
        fake.fail_next("reset")
    elif name == "garbage":
        fake.fail_next("garbage")
    elif name == "wrong-shape":
        fake.fail_next("wrong_shape")
    elif name == "credentials-rejected":
        app.config["PLURALITY_CLIENT_SECRET"] = "not-the-secret"
    elif name == "revoked":
        fake.revoke(token)
    elif name == "other-client":
        # The app now runs with another client's credentials: the token is not its own.
        fake.add_client(*OTHER_CLIENT)
        app.config["PLURALITY_CLIENT_ID"], app.config["PLURALITY_CLIENT_SECRET"] = OTHER_CLIENT
    else:  # pragma: no cover
        raise AssertionError(name)


@pytest.fixture
def matrix_app(make_app: AppFactory, request: pytest.FixtureRequest) -> Flask:
    policy = request.param
    # A high threshold keeps the breaker out of the way; it has its own tests.
    return make_app(PLURALITY_ON_UPSTREAM_ERROR=policy, PLURALITY_TIMEOUT=0.5, PLURALITY_BREAKER_THRESHOLD=1000)


POLICIES = pytest.mark.parametrize("matrix_app", ["deny", "allow"], indirect=True)
EACH_FAULT = pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])


def check_retry_after(response: Any, fault: Fault) -> None:
    assert response.headers["Retry-After"] == str(fault.retry_after)


def check_logs(caplog: pytest.LogCaptureFixture, fault: Fault, token: str, fake: FakePlurality) -> None:
    assert_clean_logs(caplog, token, fake.client_secret, "not-the-secret")
    if fault.name == "credentials-rejected":
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("Invalid Client Secret" in line for line in errors), errors
    if fault.name == "connection-refused":
        # Nothing was sent, so the client tried once more before giving up.
        retries = [r for r in caplog.records if "retrying once" in r.getMessage()]
        assert len(retries) == 1


@POLICIES
@EACH_FAULT
def test_login_under_fault(
    matrix_app: Flask, fake: FakePlurality, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    """A login while Plurality fails: 503 (never the user's fault) or 401, no session."""
    caplog.set_level(logging.INFO, logger="flask_plurality")
    app, client = matrix_app, matrix_app.test_client()
    token = fake.issue_token(email="alice@example.com")
    arm(fault, fake, app, token)

    with captured(signals.login_failed, app) as failures:
        response = login(client, token)

    body = response.get_json()
    if fault.outage:
        assert response.status_code == 503, body
        assert body["error"] == "upstream_unavailable"
        check_retry_after(response, fault)
    else:
        assert response.status_code == 401, body
        assert body["error"] == "invalid_token"
    assert [f["reason"] for f in failures] == [fault.reason]
    assert len(fake.calls) == fault.calls
    assert stored_login(app, client) is None
    assert not session_is_live(client)
    check_logs(caplog, fault, token, fake)


@POLICIES
@EACH_FAULT
def test_revalidation_under_fault(
    matrix_app: Flask, fake: FakePlurality, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    """A revalidation while Plurality fails: the outage policy decides for outages (the
    session is kept either way); a "no" about the token clears the session."""
    caplog.set_level(logging.INFO, logger="flask_plurality")
    app, client = matrix_app, matrix_app.test_client()
    policy = app.config["PLURALITY_ON_UPSTREAM_ERROR"]
    token = fake.issue_token(email="alice@example.com")
    logged_in = login(client, token)
    assert logged_in.status_code == 200
    current_id = logged_in.get_json()["profile"]["id"]
    before = stored_login(app, client)
    assert before is not None
    arm(fault, fake, app, token)

    with captured(signals.revalidation_failed, app) as failures, captured(signals.revalidated, app) as confirmed:
        response = client.post("/sensitive")

    body = response.get_json()
    assert len(fake.calls) == 1 + fault.calls
    assert confirmed == []
    if not fault.outage:
        assert response.status_code == 401, body
        assert body["error"] == "login_required"
        assert response.headers["WWW-Authenticate"] == "Plurality"
        assert [(f["reason"], f["allowed"]) for f in failures] == [(fault.reason, False)]
        assert stored_login(app, client) is None
        assert not session_is_live(client)
    else:
        if policy == "deny":
            assert response.status_code == 503, body
            assert body["error"] == "upstream_unavailable"
            check_retry_after(response, fault)
        else:
            assert response.status_code == 200, body
            assert body == {"done": True, "id": current_id}
        assert [(f["reason"], f["allowed"]) for f in failures] == [(fault.reason, policy == "allow")]
        # Kept, and the last good answer did not move: the grace period still counts from it.
        assert stored_login(app, client) == before
        assert session_is_live(client)
    check_logs(caplog, fault, token, fake)


# -- outside the matrix: grace, recovery ------------------------------------------------


def test_allow_ends_with_the_grace_period(make_app: AppFactory, fake: FakePlurality) -> None:
    """Under ``allow``, an outage lets a session in only while its last good answer is
    younger than PLURALITY_GRACE_PERIOD; after that, 503 and the session is kept."""
    app = make_app(PLURALITY_ON_UPSTREAM_ERROR="allow", PLURALITY_GRACE_PERIOD=60, PLURALITY_BREAKER_THRESHOLD=1000)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200

    fake.fail_next(503, times=2)
    age_session(client, 59)
    assert client.post("/sensitive").status_code == 200
    age_session(client, 2)  # now 61 s since the last good answer
    response = client.post("/sensitive")
    assert response.status_code == 503
    assert response.get_json()["error"] == "upstream_unavailable"
    assert len(fake.calls) == 3
    assert session_is_live(client)

    # Plurality is back: the session is confirmed and the clock restarts.
    assert client.post("/sensitive").status_code == 200
    assert len(fake.calls) == 4
    login_data = stored_login(app, client)
    assert login_data is not None and login_data["v"] > login_data["l"]


def test_grace_counts_from_the_last_good_answer_not_from_login(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(PLURALITY_ON_UPSTREAM_ERROR="allow", PLURALITY_GRACE_PERIOD=60, PLURALITY_BREAKER_THRESHOLD=1000)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    age_session(client, 3600)
    assert client.post("/sensitive").status_code == 200  # a good answer now
    fake.fail_next(502)
    assert client.post("/sensitive").status_code == 200  # an hour after login, but within grace
    assert len(fake.calls) == 3


def test_failed_login_keeps_the_existing_session(make_app: AppFactory, fake: FakePlurality) -> None:
    """An outage during a second login does not log out the user already signed in."""
    app = make_app(PLURALITY_BREAKER_THRESHOLD=1000)
    client = app.test_client()
    assert login(client, fake.issue_token(email="alice@example.com")).status_code == 200
    fake.fail_next(504)
    assert login(client, fake.issue_token(email="bob@example.com")).status_code == 503
    assert client.get("/plurality/session").get_json()["profile"]["email"] == "alice@example.com"


def test_validate_api_raises_typed_errors(make_app: AppFactory, fake: FakePlurality) -> None:
    """``plurality.validate`` outside a request: the same outcomes as exceptions."""
    from flask_plurality import CredentialsRejected, InvalidToken, UpstreamUnavailable

    app = make_app(PLURALITY_BREAKER_THRESHOLD=1000)
    extension = app.extensions["plurality"]
    token = fake.issue_token()
    with app.app_context():
        fake.fail_next(429, retry_after=3)
        with pytest.raises(UpstreamUnavailable) as caught:
            extension.validate(token)
        assert caught.value.reason == "rate_limited" and caught.value.retry_after == 3
        assert token not in str(caught.value) and token not in repr(caught.value)
    with app.app_context():  # the 429's Retry-After still holds calls back
        with pytest.raises(UpstreamUnavailable) as caught:
            extension.validate(token)
        assert caught.value.reason == "rate_limited" and 1 <= (caught.value.retry_after or 0) <= 3
    assert len(fake.calls) == 1

    app2 = make_app(PLURALITY_CLIENT_SECRET="wrong")
    with app2.app_context(), pytest.raises(CredentialsRejected):
        app2.extensions["plurality"].validate(token)
    fake.revoke(token)
    app3 = make_app()
    with app3.app_context(), pytest.raises(InvalidToken) as refused:
        app3.extensions["plurality"].validate(token)
    assert refused.value.reason == "rejected"
