"""Prometheus metrics: exact counts scraped from a real /metrics.

The main test runs the app under gunicorn with three workers in prometheus_client's
multiprocess mode, sharing sessions in Redis, against the stand-in in this process,
through a known sequence of logins, a revalidation, a revocation, a throttled login
and an outage that opens the breaker, then scrapes /metrics and checks every number.
The others count into a registry of the app's own, in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from helpers import AppFactory, age_session, free_port, gunicorn, login, redis_url_or_skip
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flask_plurality import signals
from flask_plurality.metrics import (
    REASONS,
    SESSION_END_REASONS,
    STORE_PLACES,
    THROTTLE_SCOPES,
    UPSTREAM_OUTCOMES,
    reason_label,
)
from flask_plurality.testing import FakePlurality

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def plurality_counts(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The non-zero samples of plurality_* metrics, without histogram buckets and sums."""
    return {
        key: v
        for key, v in samples.items()
        if key[0].startswith("plurality_") and v and not key[0].endswith(("_bucket", "_sum", "_created"))
    }


def assert_labels_from_fixed_sets(samples: Samples, upstream: str) -> None:
    """Label values from fixed sets only, never from a request."""
    allowed = {
        "outcome": {"success", "failure", "grace", *UPSTREAM_OUTCOMES},
        "reason": set(REASONS) | set(SESSION_END_REASONS) | {"other"} | {f"http_{n}" for n in range(100, 600)},
        "result": {"hit", "miss"},
        "upstream": {upstream},
        "scope": set(THROTTLE_SCOPES),
        "where": set(STORE_PLACES),
        "le": None,
    }
    for name, labels in samples:
        if not name.startswith("plurality_"):
            continue
        for label, label_value in labels:
            assert label in allowed, (name, label)
            if allowed[label] is not None:
                assert label_value in allowed[label], (name, label, label_value)


@contextmanager
def gunicorn_with_metrics(fake: FakePlurality, tmp_path: Path, workers: int, **config: str) -> Iterator[str]:
    """gunicorn -w N with the documented multiprocess settings, Redis sessions, the app
    configured from FLASK_* variables; yields the base URL once every worker answers."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from flask_plurality.metrics import child_exit, on_starting  # noqa: F401\n")
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "METRICS_REDIS_URL": redis_url_or_skip(),
        "FLASK_SECRET_KEY": "the-same-key-in-every-worker",
        "FLASK_PLURALITY_API_URL": fake.url,
        "FLASK_PLURALITY_CLIENT_ID": fake.client_id,
        "FLASK_PLURALITY_CLIENT_SECRET": fake.client_secret,
        "FLASK_PLURALITY_METRICS": "true",
        "FLASK_PLURALITY_METRICS_PATH": "/metrics",
        **{f"FLASK_{key}": str(v) for key, v in config.items()},
    }
    with gunicorn("metrics_app:create_app()", env, workers, tmp_path / "gunicorn.log", "-c", str(conf)) as base:
        yield base


def post_login(base: str, token: str) -> requests.Response:
    return requests.post(f"{base}/plurality/login", json={"token": token}, timeout=10)


@pytest.mark.slow
@pytest.mark.redis
def test_gunicorn_workers_share_exact_counts(fake: FakePlurality, redis_client: Any, tmp_path: Path) -> None:
    config = {
        "PLURALITY_BREAKER_THRESHOLD": "1",
        "PLURALITY_BREAKER_COOLDOWN": "600",
        "PLURALITY_LOGIN_MAX_FAILURES": "3",
    }
    with gunicorn_with_metrics(fake, tmp_path, 3, **config) as base:
        before = parse(requests.get(f"{base}/metrics", timeout=10).text)
        upstream = f"127.0.0.1:{urlsplit(fake.url).port}"
        assert value(before, "plurality_breaker_open", upstream=upstream) == 0
        assert plurality_counts(before) == {}

        # Three good logins, each its own upstream call.
        cookies, users = [], []
        for _ in range(3):
            response = post_login(base, fake.issue_token(email="someone@example.com"))
            assert response.status_code == 200, response.text
            cookies.append(response.cookies["session"])
            users.append(response.json()["profile"]["id"])
        # The hot path, in every worker: no signal, no count.
        for _ in range(30):
            assert requests.get(f"{base}/whoami", cookies={"session": cookies[0]}, timeout=10).status_code == 200
        # One revalidation that asks Plurality, one logout, one revocation.
        response = requests.post(f"{base}/sensitive", cookies={"session": cookies[0]}, json={}, timeout=10)
        assert response.status_code == 200, response.text
        assert (
            requests.post(f"{base}/plurality/logout", cookies={"session": cookies[2]}, json={}, timeout=10).status_code
            == 200
        )
        assert requests.post(f"{base}/revoke", json={"user_id": users[1]}, timeout=10).status_code == 200
        assert requests.get(f"{base}/whoami", cookies={"session": cookies[1]}, timeout=10).status_code == 401

        # Bad logins: not a token (no upstream call); a revoked token (one call); the same
        # token again (the remembered "no": no call); then the client is throttled.
        assert post_login(base, "not-a-token").status_code == 401
        revoked = fake.issue_token()
        fake.revoke(revoked)
        assert post_login(base, revoked).status_code == 401
        assert post_login(base, revoked).status_code == 401
        throttled = post_login(base, fake.issue_token())
        assert throttled.status_code == 429

        # An outage during a revalidation: 503, and that worker's breaker opens (threshold 1).
        fake.fail_next(503)
        response = requests.post(f"{base}/sensitive", cookies={"session": cookies[0]}, json={}, timeout=10)
        assert response.status_code == 503, response.text
        assert len(fake.calls) == 6  # 3 logins, 1 revalidation, 1 revoked token, 1 outage

        scrape = requests.get(f"{base}/metrics", timeout=10)
        assert scrape.status_code == 200
        assert scrape.headers["Content-Type"].startswith("text/plain")
        text = scrape.text

    samples = parse(text)
    expected = {
        ("plurality_logins_total", frozenset({("outcome", "success"), ("reason", "none")})): 3,
        ("plurality_logins_total", frozenset({("outcome", "failure"), ("reason", "malformed")})): 1,
        ("plurality_logins_total", frozenset({("outcome", "failure"), ("reason", "rejected")})): 2,
        ("plurality_logins_total", frozenset({("outcome", "failure"), ("reason", "too_many_attempts")})): 1,
        ("plurality_logouts_total", frozenset()): 1,
        ("plurality_revalidations_total", frozenset({("outcome", "success"), ("reason", "none")})): 1,
        ("plurality_revalidations_total", frozenset({("outcome", "failure"), ("reason", "http_503")})): 1,
        ("plurality_upstream_calls_total", frozenset({("outcome", "valid"), ("reason", "none")})): 4,
        ("plurality_upstream_calls_total", frozenset({("outcome", "invalid"), ("reason", "rejected")})): 1,
        ("plurality_upstream_calls_total", frozenset({("outcome", "unavailable"), ("reason", "http_503")})): 1,
        ("plurality_upstream_latency_seconds_count", frozenset({("outcome", "valid")})): 4,
        ("plurality_upstream_latency_seconds_count", frozenset({("outcome", "invalid")})): 1,
        ("plurality_upstream_latency_seconds_count", frozenset({("outcome", "unavailable")})): 1,
        ("plurality_answer_cache_total", frozenset({("result", "miss")})): 6,
        ("plurality_answer_cache_total", frozenset({("result", "hit")})): 1,
        ("plurality_breaker_openings_total", frozenset({("upstream", upstream)})): 1,
        ("plurality_breaker_open", frozenset({("upstream", upstream)})): 1,
        ("plurality_throttled_total", frozenset({("scope", "client")})): 1,
        ("plurality_revocations_total", frozenset()): 1,
        # The logout and the revocation each ended one session of a user's index.
        ("plurality_sessions_ended_total", frozenset({("reason", "logout")})): 1,
        ("plurality_sessions_ended_total", frozenset({("reason", "revoked")})): 1,
    }
    assert plurality_counts(samples) == expected
    # The latency histogram's buckets are cumulative and end at the count.
    assert value(samples, "plurality_upstream_latency_seconds_bucket", outcome="valid", le="+Inf") == 4
    assert value(samples, "plurality_upstream_latency_seconds_sum", outcome="valid") > 0
    assert_labels_from_fixed_sets(samples, upstream)
    for secret in (fake.client_secret, revoked, "someone@example.com", *users, *cookies):
        assert secret not in text


# -- in-process, into a registry of the app's own -----------------------------------------------


def metered(make_app: AppFactory, **config: Any) -> tuple[Flask, CollectorRegistry]:
    app = make_app(**config)
    registry = CollectorRegistry()
    app.extensions["plurality"].init_metrics(app, registry=registry)
    return app, registry


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def test_only_the_apps_own_events_are_counted_into_its_registry(make_app: AppFactory, fake: FakePlurality) -> None:
    first, first_registry = metered(make_app)
    second, second_registry = metered(make_app)
    assert login(first.test_client(), fake.issue_token()).status_code == 200
    assert value(scrape(first_registry), "plurality_logins_total", outcome="success", reason="none") == 1
    assert value(scrape(second_registry), "plurality_logins_total", outcome="success", reason="none") == 0
    assert login(second.test_client(), "junk").status_code == 401
    assert value(scrape(second_registry), "plurality_logins_total", outcome="failure", reason="malformed") == 1
    assert value(scrape(first_registry), "plurality_logins_total", outcome="failure", reason="malformed") == 0


def test_the_hot_path_sends_no_signal(make_app: AppFactory, fake: FakePlurality) -> None:
    app, registry = metered(make_app)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    before = scrape(registry)
    received: list[Any] = []

    def anything(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    every = [getattr(signals, name) for name in signals.__all__]
    for signal in every:
        signal.connect(anything, sender=app)
    try:
        for _ in range(20):
            assert client.get("/protected").status_code == 200
    finally:
        for signal in every:
            signal.disconnect(anything, sender=app)
    assert received == []
    assert plurality_counts(scrape(registry)) == plurality_counts(before)


def test_answer_cache_hits_when_another_session_asked_within_the_interval(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    app, registry = metered(make_app, PLURALITY_REVALIDATE=600)
    token = fake.issue_token()
    browsers = [app.test_client() for _ in range(2)]
    for browser in browsers:  # logins always ask: two misses
        assert login(browser, token).status_code == 200
        age_session(browser, 601)
    for browser in browsers:  # both due: the first asks, the second finds its answer
        assert browser.get("/protected").status_code == 200
    samples = scrape(registry)
    assert value(samples, "plurality_answer_cache_total", result="miss") == 3
    assert value(samples, "plurality_answer_cache_total", result="hit") == 1
    assert value(samples, "plurality_upstream_calls_total", outcome="valid", reason="none") == 3
    assert value(samples, "plurality_revalidations_total", outcome="success", reason="none") == 2
    assert len(fake.calls) == 3


def test_breaker_opens_fails_fast_uncounted_and_closes(make_app: AppFactory, fake: FakePlurality) -> None:
    app, registry = metered(make_app, PLURALITY_BREAKER_THRESHOLD=2, PLURALITY_BREAKER_COOLDOWN=0.5)
    upstream = f"127.0.0.1:{urlsplit(fake.url).port}"
    client = app.test_client()
    fake.fail_next(502, times=2)
    for _ in range(2):
        assert login(client, fake.issue_token()).status_code == 503
    assert value(scrape(registry), "plurality_breaker_open", upstream=upstream) == 1
    assert login(client, fake.issue_token()).status_code == 503  # fail-fast: nobody called
    samples = scrape(registry)
    assert value(samples, "plurality_upstream_calls_total", outcome="unavailable", reason="http_502") == 2
    assert value(samples, "plurality_upstream_latency_seconds_count", outcome="unavailable") == 2
    assert value(samples, "plurality_logins_total", outcome="failure", reason="circuit_open") == 1
    assert value(samples, "plurality_breaker_openings_total", upstream=upstream) == 1
    assert len(fake.calls) == 2
    deadline = time.monotonic() + 30
    while (response := login(client, fake.issue_token())).status_code != 200:  # the probe, after the cooldown
        assert time.monotonic() < deadline, response.get_data(as_text=True)
        time.sleep(0.2)
    samples = scrape(registry)
    assert value(samples, "plurality_breaker_open", upstream=upstream) == 0
    assert value(samples, "plurality_breaker_openings_total", upstream=upstream) == 1
    assert value(samples, "plurality_upstream_calls_total", outcome="valid", reason="none") == 1


def test_throttled_requests_are_counted_by_scope(make_app: AppFactory, fake: FakePlurality) -> None:
    app, registry = metered(make_app, PLURALITY_LOGIN_MAX_FAILURES=2)
    token = fake.issue_token()
    fake.revoke(token)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):  # one token, three clients
        response = login(app.test_client(), token, environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 429
    client = app.test_client()
    for _ in range(3):  # one client, three junk tokens
        response = login(client, "junk")
    assert response.status_code == 429
    samples = scrape(registry)
    assert value(samples, "plurality_throttled_total", scope="token") == 1
    assert value(samples, "plurality_throttled_total", scope="client") == 1
    assert value(samples, "plurality_logins_total", outcome="failure", reason="too_many_attempts") == 2
    text = generate_latest(registry).decode()
    assert "192.0.2." not in text and token not in text


def test_store_failures_are_counted_where_they_happen(make_app: AppFactory, fake: FakePlurality) -> None:
    import redis

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    app, registry = metered(make_app, session_redis=dead)
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 503  # the throttle's read fails
    client.set_cookie("session", "a-session-id-from-before-the-outage")
    assert client.get("/protected").status_code == 503  # loading the session fails
    samples = scrape(registry)
    assert value(samples, "plurality_store_failures_total", where="extension") == 1
    assert value(samples, "plurality_store_failures_total", where="session_load") == 1
    assert value(samples, "plurality_store_failures_total", where="session_save") == 0
    assert value(samples, "plurality_logins_total", outcome="success", reason="none") == 0


@pytest.mark.redis
def test_a_failed_session_save_is_counted(make_app: AppFactory, fake: FakePlurality, redis_client: Any) -> None:
    import redis

    class WritesFail(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            if str(args[0]).upper() in ("SET", "SETEX", "PSETEX"):
                raise redis.ConnectionError("refused for the test")
            return super().execute_command(*args, **options)

    app, registry = metered(make_app, session_redis=WritesFail.from_url(redis_url_or_skip()))
    assert login(app.test_client(), fake.issue_token()).status_code == 503  # the login could not be stored
    samples = scrape(registry)
    assert value(samples, "plurality_store_failures_total", where="session_save") == 1
    assert value(samples, "plurality_store_failures_total", where="extension") == 0


def test_metrics_on_by_config_use_the_default_registry_and_serve_the_path(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    from prometheus_client import REGISTRY

    app = make_app(PLURALITY_METRICS=True, PLURALITY_METRICS_PATH="/metrics")
    before = REGISTRY.get_sample_value("plurality_logins_total", {"outcome": "success", "reason": "none"}) or 0
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert REGISTRY.get_sample_value("plurality_logins_total", {"outcome": "success", "reason": "none"}) == before + 1
    served = client.get("/metrics")
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("text/plain; version=")
    assert (
        value(parse(served.get_data(as_text=True)), "plurality_logins_total", outcome="success", reason="none")
        == before + 1
    )


def test_bad_metrics_settings_fail_at_init_app(make_app: AppFactory) -> None:
    from flask_plurality import ConfigurationError

    with pytest.raises(ConfigurationError, match="PLURALITY_METRICS_PATH"):
        make_app(PLURALITY_METRICS=True, PLURALITY_METRICS_PATH="metrics")
    with pytest.raises(ConfigurationError, match="PLURALITY_METRICS"):
        make_app(PLURALITY_METRICS="maybe")


def test_without_prometheus_client_metrics_say_what_to_install(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if not installed
        from flask import Flask
        from flask_plurality import ConfigurationError, Plurality
        app = Flask("x", instance_path=sys.argv[1])
        app.config.update(PLURALITY_CLIENT_ID="a", PLURALITY_CLIENT_SECRET="b")
        Plurality(app)  # without PLURALITY_METRICS nothing needs prometheus_client
        app = Flask("y", instance_path=sys.argv[1])
        app.config.update(PLURALITY_CLIENT_ID="a", PLURALITY_CLIENT_SECRET="b", PLURALITY_METRICS=True)
        try:
            Plurality(app)
        except ConfigurationError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'flask-plurality[metrics]'" in result.stdout


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (None, "none"),
        ("rejected", "rejected"),
        ("http_503", "http_503"),
        ("http_5031", "other"),
        ("someone@example.com", "other"),
        ("eyJhbGciOi.x.y", "other"),
        ("127.0.0.1", "other"),
    ],
)
def test_reason_labels_come_from_a_fixed_set(reason: Any, label: str) -> None:
    assert reason_label(reason) == label
