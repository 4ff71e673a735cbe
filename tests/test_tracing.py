"""OpenTelemetry: each answer about a token is a client span ``plurality.validate``.

The SDK's in-memory exporter collects the spans of real logins and revalidations
against the stand-in; every span is checked for the secret, the token and the email
(its whole JSON form: attributes, events, status, links, resource).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AppFactory, age_session, login
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from flask_plurality.testing import FakePlurality

_EXPORTER = InMemorySpanExporter()


def _provider() -> TracerProvider:
    """The process's SDK provider (OpenTelemetry allows one), exporting into _EXPORTER."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_plurality_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._plurality_test_exporter = True  # type: ignore[attr-defined]
    return provider


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _provider()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def validate_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "plurality.validate"]


def assert_nothing_secret(exporter: InMemorySpanExporter, *secrets: str) -> None:
    every = exporter.get_finished_spans()
    assert every
    for span in every:
        text = span.to_json()
        for secret in secrets:
            assert secret not in text, (secret, text)
        for key, attribute in (span.attributes or {}).items():
            assert all(secret not in str(attribute) and secret not in key for secret in secrets)
        for event in span.events:
            assert all(secret not in str(event.attributes) for secret in secrets)


def test_a_login_is_a_client_span_with_method_status_and_outcome(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    app = make_app()
    token = fake.issue_token(email="alice@example.com")
    assert login(app.test_client(), token).status_code == 200
    (span,) = validate_spans(spans)
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "server.address": "127.0.0.1",
        "server.port": int(fake.url.split(":")[2].split("/")[0]),
        "plurality.outcome": "valid",
        "plurality.cached": False,
        "http.request.method": "POST",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    assert_nothing_secret(spans, fake.client_secret, token, "alice@example.com")


def test_a_refused_token_then_its_remembered_refusal(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    app = make_app()
    token = fake.issue_token(email="mallory@example.com")
    fake.revoke(token)
    for _ in range(2):
        assert login(app.test_client(), token).status_code == 401
    asked, remembered = validate_spans(spans)
    assert asked.attributes is not None and remembered.attributes is not None
    assert asked.attributes["plurality.outcome"] == "invalid"
    assert asked.attributes["plurality.reason"] == "rejected"
    assert asked.attributes["plurality.cached"] is False
    assert asked.attributes["http.response.status_code"] == 403
    assert remembered.attributes["plurality.outcome"] == "invalid"
    assert remembered.attributes["plurality.cached"] is True
    assert "http.response.status_code" not in remembered.attributes  # no call was made
    assert "http.request.method" not in remembered.attributes
    assert len(fake.calls) == 1
    assert_nothing_secret(spans, fake.client_secret, token, "mallory@example.com")


def test_an_outage_is_an_error_span_and_a_fail_fast_has_no_status_code(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    app = make_app(PLURALITY_BREAKER_THRESHOLD=1, PLURALITY_BREAKER_COOLDOWN=600)
    fake.fail_next(503)
    token = fake.issue_token()
    assert login(app.test_client(), token).status_code == 503
    assert login(app.test_client(), token).status_code == 503  # the breaker answers: no call
    outage, fail_fast = validate_spans(spans)
    assert outage.attributes is not None and fail_fast.attributes is not None
    assert outage.status.status_code is StatusCode.ERROR
    assert outage.status.description == "http_503"
    assert outage.attributes["error.type"] == "http_503"
    assert outage.attributes["http.response.status_code"] == 503
    assert outage.attributes["plurality.outcome"] == "unavailable"
    assert fail_fast.attributes["plurality.reason"] == "circuit_open"
    assert fail_fast.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in fail_fast.attributes
    assert len(fake.calls) == 1
    assert_nothing_secret(spans, fake.client_secret, token)


def test_auto_method_fallback_reports_the_method_that_answered(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    fake.methods = {"GET"}
    app = make_app()
    assert login(app.test_client(), fake.issue_token()).status_code == 200
    (span,) = validate_spans(spans)
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.response.status_code"] == 200


def test_unreachable_upstream_has_no_status_code(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    fake.fail_next("reset")
    app = make_app()
    assert login(app.test_client(), fake.issue_token()).status_code == 503
    (span,) = validate_spans(spans)
    assert span.attributes is not None
    assert span.attributes["plurality.reason"] == "connection_error"
    assert "http.response.status_code" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR


def test_revalidation_spans_are_children_of_the_request_span(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    app = make_app()
    client = app.test_client()
    token = fake.issue_token(email="bob@example.com")
    assert login(client, token).status_code == 200
    spans.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /sensitive") as parent:
        assert client.post("/sensitive", headers={"Origin": "http://localhost"}).status_code == 200
    (span,) = validate_spans(spans)
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context is not None and span.context.trace_id == parent.get_span_context().trace_id
    assert span.attributes is not None and span.attributes["plurality.outcome"] == "valid"
    assert_nothing_secret(spans, fake.client_secret, token, "bob@example.com")


def test_an_answer_from_the_shared_cache_is_a_cached_span_without_a_call(
    make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter
) -> None:
    app = make_app(PLURALITY_REVALIDATE=600)
    token = fake.issue_token()
    browsers = [app.test_client() for _ in range(2)]
    for browser in browsers:
        assert login(browser, token).status_code == 200
        age_session(browser, 601)
    spans.clear()
    for browser in browsers:  # the first asks, the second gets the first's answer
        assert browser.get("/protected").status_code == 200
    asked, cached = validate_spans(spans)
    assert asked.attributes is not None and cached.attributes is not None
    assert asked.attributes["plurality.cached"] is False
    assert asked.attributes["http.response.status_code"] == 200
    assert cached.attributes["plurality.cached"] is True
    assert cached.attributes["plurality.outcome"] == "valid"
    assert "http.request.method" not in cached.attributes
    assert len(fake.calls) == 3
    assert_nothing_secret(spans, fake.client_secret, token)


def test_the_hot_path_makes_no_span(make_app: AppFactory, fake: FakePlurality, spans: InMemorySpanExporter) -> None:
    app = make_app()
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    spans.clear()
    for _ in range(10):
        assert client.get("/protected").status_code == 200
    assert spans.get_finished_spans() == ()


def test_without_opentelemetry_nothing_is_needed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if not installed
        from flask import Flask
        from flask_plurality import Plurality, tracing
        from flask_plurality.testing import FakePlurality, config_for
        assert tracing._TRACER is None
        with FakePlurality() as fake:
            app = Flask("x", instance_path=sys.argv[1])
            app.config.update(TESTING=True, **config_for(fake))
            Plurality(app)
            answer = app.test_client().post("/plurality/login", json={"token": fake.issue_token()})
            print(answer.status_code, len(fake.calls))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "1"]
