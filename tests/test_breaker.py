"""The circuit breaker and ``Retry-After``: while Plurality is down, requests stop
waiting for it. Asserted by upstream call counts (nothing reached Plurality), never by
wall time; the short sleeps only let a cool-down or a ``Retry-After`` pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from helpers import AppFactory, captured, login, session_is_live, stored_login

from flask_plurality import Plurality, plurality_required, signals
from flask_plurality.breaker import Breaker
from flask_plurality.exceptions import UpstreamUnavailable
from flask_plurality.testing import FakePlurality

THRESHOLD = 3
COOLDOWN = 1.0


def breaker_app(make_app: AppFactory, policy: str = "deny", **config: Any) -> Flask:
    settings = {"PLURALITY_BREAKER_THRESHOLD": THRESHOLD, "PLURALITY_BREAKER_COOLDOWN": COOLDOWN, **config}
    return make_app(PLURALITY_ON_UPSTREAM_ERROR=policy, **settings)


@pytest.mark.parametrize("policy", ["deny", "allow"])
def test_open_breaker_answers_without_calling_plurality(make_app: AppFactory, fake: FakePlurality, policy: str) -> None:
    app = breaker_app(make_app, policy)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    before = stored_login(app, client)

    fake.fail_next(503, times=THRESHOLD)
    for _ in range(THRESHOLD):
        client.post("/sensitive")
    assert len(fake.calls) == 1 + THRESHOLD

    with captured(signals.revalidation_failed, app) as failures:
        response = client.post("/sensitive")
    assert len(fake.calls) == 1 + THRESHOLD  # Plurality was not called
    assert [(f["reason"], f["allowed"]) for f in failures] == [("circuit_open", policy == "allow")]
    if policy == "deny":
        assert response.status_code == 503
        assert response.get_json()["error"] == "upstream_unavailable"
        assert response.headers["Retry-After"] == "1"  # the seconds left of the 1 s cool-down
    else:
        assert response.status_code == 200  # within the grace period of the login
    assert stored_login(app, client) == before
    assert session_is_live(client)


def test_the_failure_that_opens_the_breaker_tells_the_cooldown(make_app: AppFactory, fake: FakePlurality) -> None:
    app = breaker_app(make_app, PLURALITY_BREAKER_COOLDOWN=30)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    fake.fail_next(500, times=THRESHOLD)
    answers = [client.post("/sensitive") for _ in range(THRESHOLD + 1)]
    assert [r.headers["Retry-After"] for r in answers[: THRESHOLD - 1]] == ["10"] * (THRESHOLD - 1)
    assert 29 <= int(answers[THRESHOLD - 1].headers["Retry-After"]) <= 30
    assert 28 <= int(answers[THRESHOLD].headers["Retry-After"]) <= 30
    assert len(fake.calls) == 1 + THRESHOLD


def test_one_probe_after_the_cooldown_closes_it(make_app: AppFactory, fake: FakePlurality) -> None:
    app = breaker_app(make_app)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    fake.fail_next("reset", times=THRESHOLD)
    for _ in range(THRESHOLD + 2):
        assert client.post("/sensitive").status_code == 503
    assert len(fake.calls) == 1 + THRESHOLD

    time.sleep(COOLDOWN + 0.1)
    with captured(signals.revalidated, app) as confirmed:
        assert client.post("/sensitive").status_code == 200  # the probe
    assert len(fake.calls) == 2 + THRESHOLD
    assert len(confirmed) == 1
    assert client.post("/sensitive").status_code == 200  # closed: asked as usual
    assert len(fake.calls) == 3 + THRESHOLD


def test_a_failed_probe_reopens_it(make_app: AppFactory, fake: FakePlurality) -> None:
    app = breaker_app(make_app)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    fake.fail_next(502, times=THRESHOLD + 1)
    for _ in range(THRESHOLD):
        client.post("/sensitive")
    time.sleep(COOLDOWN + 0.1)
    assert client.post("/sensitive").status_code == 503  # the probe, failing
    assert len(fake.calls) == 2 + THRESHOLD
    assert client.post("/sensitive").status_code == 503  # open again: not called
    assert len(fake.calls) == 2 + THRESHOLD


def test_only_one_probe_while_half_open(make_app: AppFactory, fake: FakePlurality) -> None:
    """After the cool-down, the first request probes; a request arriving while the probe
    is in flight fails fast instead of piling onto a Plurality that may still be down."""
    app = breaker_app(make_app, PLURALITY_TIMEOUT=10.0)
    probe_client, other_client = app.test_client(), app.test_client()
    assert login(probe_client, fake.issue_token()).status_code == 200
    assert login(other_client, fake.issue_token()).status_code == 200
    fake.fail_next(503, times=THRESHOLD)
    for _ in range(THRESHOLD):
        probe_client.post("/sensitive")
    time.sleep(COOLDOWN + 0.1)

    fake.latency = 2.5  # the probe stays in flight while the second request arrives, even on a slow machine
    statuses: list[int] = []
    probe = threading.Thread(target=lambda: statuses.append(probe_client.post("/sensitive").status_code))
    probe.start()
    breaker = next(iter(app.extensions["plurality"].client._breakers.values()))
    deadline = time.monotonic() + 5
    while not breaker.probe_until and time.monotonic() < deadline:  # wait for the probe to leave
        time.sleep(0.01)
    assert breaker.probe_until
    response = other_client.post("/sensitive")
    probe.join(10)
    assert response.status_code == 503
    assert statuses == [200]
    assert len(fake.calls) == 3 + THRESHOLD  # two logins, the failures, one probe


def test_logins_count_and_are_held_back_too(make_app: AppFactory, fake: FakePlurality) -> None:
    """Failed logins open the breaker; then logins and revalidations both fail fast."""
    app = breaker_app(make_app)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    fake.fail_next(504, times=THRESHOLD)
    for _ in range(THRESHOLD):
        assert login(app.test_client(), fake.issue_token()).status_code == 503
    calls = len(fake.calls)

    response = login(app.test_client(), fake.issue_token())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert client.post("/sensitive").status_code == 503
    assert len(fake.calls) == calls
    # An answer about a token (here a "no") is Plurality answering: it closes the breaker.
    time.sleep(COOLDOWN + 0.1)
    revoked = fake.issue_token()
    fake.revoke(revoked)
    assert login(app.test_client(), revoked).status_code == 401
    assert client.post("/sensitive").status_code == 200
    assert len(fake.calls) == calls + 2


@pytest.mark.parametrize("retry_after", [2])
def test_429_retry_after_holds_calls_back(make_app: AppFactory, fake: FakePlurality, retry_after: int) -> None:
    app = make_app(PLURALITY_BREAKER_THRESHOLD=1000)  # the count alone would never open it
    client = app.test_client()
    token = fake.issue_token()
    fake.fail_next(429, retry_after=retry_after)
    first = login(client, token)
    assert first.status_code == 503 and first.headers["Retry-After"] == str(retry_after)

    with captured(signals.login_failed, app) as failures:
        second = login(client, token)
    assert second.status_code == 503
    assert 1 <= int(second.headers["Retry-After"]) <= retry_after
    assert [f["reason"] for f in failures] == ["rate_limited"]
    assert len(fake.calls) == 1

    time.sleep(retry_after + 0.1)
    assert login(client, token).status_code == 200
    assert len(fake.calls) == 2


def test_retry_after_is_capped(make_app: AppFactory, fake: FakePlurality) -> None:
    """A proxy's "come back tomorrow" does not lock the app out for a day."""
    app = make_app(PLURALITY_BREAKER_THRESHOLD=1000)
    fake.fail_next(503, retry_after=86_400)
    response = login(app.test_client(), fake.issue_token())
    assert response.headers["Retry-After"] == "300"


def test_breakers_are_per_client_id(fake: FakePlurality, tmp_path: Any) -> None:
    """One extension serving two apps: one app's rejected credentials do not hold back
    the other app's calls to the same Plurality."""
    plurality = Plurality()
    apps = []
    for name, secret in (("broken", "wrong-secret"), ("fine", fake.client_secret)):
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config.update(
            TESTING=True,
            PLURALITY_CLIENT_ID=fake.client_id,
            PLURALITY_CLIENT_SECRET=secret,
            PLURALITY_API_URL=fake.url,
            PLURALITY_BREAKER_THRESHOLD=2,
        )
        if name == "fine":
            app.config["PLURALITY_CLIENT_ID"] = "second-client"
            fake.add_client("second-client", fake.client_secret)
        plurality.init_app(app)

        @app.get("/protected")
        @plurality_required
        def protected() -> dict[str, Any]:
            return {}

        apps.append(app)
    broken, fine = apps
    for _ in range(3):
        assert login(broken.test_client(), fake.issue_token()).status_code == 503
    assert len(fake.calls) == 2  # the third was held back
    assert login(fine.test_client(), fake.issue_token(client_id="second-client")).status_code == 200
    assert len(fake.calls) == 3


# -- the state machine on its own --------------------------------------------------------


def test_breaker_state_machine() -> None:
    breaker = Breaker()
    for _ in range(2):
        breaker.before_call(threshold=3, timeout=1)
        assert breaker.failed(3, cooldown=60, retry_after=None) is None
    breaker.before_call(3, 1)
    assert breaker.failed(3, 60, None) == 60
    with pytest.raises(UpstreamUnavailable) as held:
        breaker.before_call(3, 1)
    assert held.value.reason == "circuit_open" and held.value.retry_after == 60
    breaker.succeeded()
    breaker.before_call(3, 1)  # closed


def test_a_lost_probe_does_not_hold_the_breaker_forever() -> None:
    breaker = Breaker()
    for _ in range(2):
        breaker.failed(2, cooldown=0.01, retry_after=None)
    time.sleep(0.02)
    breaker.before_call(2, timeout=0.05)  # the probe; it never reports back
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call(2, timeout=0.05)
    time.sleep(1.1)  # the probe's timeout (+1 s) has passed
    breaker.before_call(2, timeout=0.05)  # a new probe is let through


def test_retry_after_below_threshold_is_reported_as_rate_limited() -> None:
    breaker = Breaker()
    assert breaker.failed(5, cooldown=30, retry_after=4) == 4
    with pytest.raises(UpstreamUnavailable) as held:
        breaker.before_call(5, 1)
    assert held.value.reason == "rate_limited"
    assert held.value.retry_after in (3, 4)


def test_a_call_cut_short_by_its_caller_is_not_a_breaker_failure(fake: FakePlurality) -> None:
    """A call given less than PLURALITY_TIMEOUT (its caller waited on another worker
    first) that times out says nothing about Plurality; one given the whole timeout does."""
    import dataclasses

    from flask_plurality.client import PluralityClient, Upstream

    client = PluralityClient()
    upstream = Upstream(fake.url, fake.client_id, fake.client_secret, "POST", timeout=1.0, breaker_threshold=1)
    fake.hang_seconds = 3.0
    try:
        fake.fail_next("timeout")
        with pytest.raises(UpstreamUnavailable) as cut:
            client.validate(fake.issue_token(), dataclasses.replace(upstream, budget=0.3))
        assert cut.value.reason == "timeout"
        assert client.validate(fake.issue_token(), upstream)["id"]  # the breaker (threshold 1) stayed closed

        fake.fail_next("timeout")
        with pytest.raises(UpstreamUnavailable) as slow:
            client.validate(fake.issue_token(), upstream)
        assert slow.value.reason == "timeout"
        with pytest.raises(UpstreamUnavailable) as held:
            client.validate(fake.issue_token(), upstream)
        assert held.value.reason == "circuit_open"
        assert len(fake.calls) == 3  # the held-back call never reached Plurality
    finally:
        client.close()


# -- the breaker tells its own state changes -------------------------------------------------

BREAKER_SIGNALS = ("breaker_opened", "breaker_half_opened", "breaker_closed")


@contextmanager
def breaker_changes(sender: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """(signal name, its keyword arguments) of every breaker signal ``sender`` sends, in order."""
    seen: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name in BREAKER_SIGNALS:

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            seen.append((_name, kwargs))

        receivers.append(receiver)
        getattr(signals, name).connect(receiver, sender=sender)
    try:
        yield seen
    finally:
        for name, receiver in zip(BREAKER_SIGNALS, receivers, strict=True):
            getattr(signals, name).disconnect(receiver, sender=sender)


def test_the_breaker_announces_each_change_as_it_happens(make_app: AppFactory, fake: FakePlurality) -> None:
    app = breaker_app(make_app, PLURALITY_BREAKER_THRESHOLD=2, PLURALITY_BREAKER_COOLDOWN=0.5)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    with breaker_changes(app) as changes:
        fake.fail_next(503, times=3)
        client.post("/sensitive")
        assert changes == []  # one failure holds nothing back
        client.post("/sensitive")
        assert [name for name, _ in changes] == ["breaker_opened"]
        assert changes[0][1] == {"upstream": fake.url, "retry_after": 1, "reopened": False}
        client.post("/sensitive")  # a fail-fast: no change
        assert len(changes) == 1 and len(fake.calls) == 3

        time.sleep(0.6)
        assert client.post("/sensitive").status_code == 503  # the probe fails
        assert [(name, kw.get("reopened")) for name, kw in changes[1:]] == [
            ("breaker_half_opened", None),
            ("breaker_opened", True),
        ]
        time.sleep(0.6)
        assert client.post("/sensitive").status_code == 200  # the probe succeeds
        assert [name for name, _ in changes[3:]] == ["breaker_half_opened", "breaker_closed"]
        assert client.post("/sensitive").status_code == 200
        assert len(changes) == 5
    assert all(kw["upstream"] == fake.url for _, kw in changes)


def test_outside_an_app_the_breaker_signals_with_no_sender() -> None:
    breaker = Breaker("https://plurality.example/api")
    with breaker_changes(None) as changes:  # what is sent with no app as the sender
        breaker.failed(1, cooldown=0.01, retry_after=None)
        time.sleep(0.02)
        breaker.before_call(1, timeout=1)
        breaker.succeeded()
    assert [name for name, _ in changes] == ["breaker_opened", "breaker_half_opened", "breaker_closed"]
    assert breaker.state == "closed" and breaker.openings == 1
