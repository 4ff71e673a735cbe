"""The client secret and tokens never appear in logs (any logger, any level), answers,
``repr()`` or exception messages, even while Plurality misbehaves."""

from __future__ import annotations

import base64
import logging
import secrets
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from flask import Flask, current_app, session
from helpers import HYGIENE_CLIENT_ID as CLIENT_ID
from helpers import build_app

from flask_plurality import (
    CredentialsRejected,
    InvalidToken,
    Plurality,
    PluralityError,
    UpstreamUnavailable,
    current_profile,
)
from flask_plurality.answers import upstream_settings
from flask_plurality.client import PluralityClient, Upstream
from flask_plurality.logins import stored_login
from flask_plurality.testing import FakePlurality, live_server


class Capture(logging.Handler):
    """Every record, fully formatted (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def everything_at_debug() -> Iterator[Capture]:
    """Root, urllib3, werkzeug, flask_plurality, the app's logger: all at DEBUG."""
    capture = Capture()
    loggers = [logging.getLogger()]
    for name in ("urllib3", "urllib3.connectionpool", "requests", "werkzeug", "flask_plurality", "testapp"):
        logging.getLogger(name)
    loggers += [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        if not lg.propagate:
            lg.addHandler(capture)
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        for lg, level in saved:
            lg.setLevel(level)
            lg.removeHandler(capture)


def hygiene_app(fake: FakePlurality, tmp_path: Any, name: str, **config: Any) -> Flask:
    app = build_app(
        fake,
        str(tmp_path / name),
        PLURALITY_TIMEOUT=0.5,
        PLURALITY_BREAKER_THRESHOLD=1000,  # every injected fault must reach the client code
        **config,
    )

    @app.get("/debug-dump")
    def debug_dump() -> dict[str, Any]:
        # What a developer chasing a bug might write; must not leak the token either.
        current_app.logger.debug("session=%r profile=%r", session, current_profile._get_current_object())  # type: ignore[attr-defined]
        return {"ok": True}

    return app


def forbidden_strings(secret: str, wrong_secret: str, tokens: list[str]) -> dict[str, str]:
    found = {
        "client secret": secret,
        "wrong secret": wrong_secret,
        "basic credentials": base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode(),
        "wrong basic credentials": base64.b64encode(f"{CLIENT_ID}:{wrong_secret}".encode()).decode(),
    }
    for i, token in enumerate(tokens):
        found[f"token {i}"] = token
        found[f"token {i} signature"] = token.rsplit(".", 1)[-1]
    return found


def test_a_full_cycle_with_failures_leaks_nothing(hfake: FakePlurality, secret: str, tmp_path: Any) -> None:
    app = hygiene_app(hfake, tmp_path, "good")
    wrong_secret = "sk_" + secrets.token_urlsafe(24)
    misconfigured = hygiene_app(hfake, tmp_path, "bad", PLURALITY_CLIENT_SECRET=wrong_secret)
    tokens: list[str] = []

    def token(**kwargs: Any) -> str:
        tokens.append(hfake.issue_token(**kwargs))
        return tokens[-1]

    answers: list[requests.Response] = []
    cookies: list[str] = []
    with (
        everything_at_debug() as logs,
        live_server(app, access_log=True) as base,
        live_server(misconfigured, access_log=True) as bad_base,
    ):
        browser = requests.Session()
        browser.headers["Origin"] = base

        def call(method: str, path: str, status: int, **kwargs: Any) -> requests.Response:
            response = browser.request(method, base + path, allow_redirects=False, timeout=10, **kwargs)
            answers.append(response)
            cookies.extend(c.value or "" for c in browser.cookies)
            assert response.status_code == status, (method, path, response.text)
            return response

        try:
            call("GET", "/plurality/session", 401)
            call("POST", "/plurality/login", 401, json={"token": "junk." + token()})
            call("POST", "/plurality/login", 401, json={"token": token(ttl=-10)})
            refused = token()
            hfake.revoke(refused)
            call("POST", "/plurality/login", 401, json={"token": refused})
            for fault in (503, "garbage", "wrong_shape", "timeout", "reset", 429):
                hfake.fail_next(fault)
                call("POST", "/plurality/login", 503, json={"token": token()})
            call("POST", "/plurality/login", 403, json={"token": token()}, headers={"Origin": "https://evil.example"})

            first = token()
            call("POST", "/plurality/login", 200, json={"token": first})
            call("GET", "/protected", 200)
            call("GET", "/debug-dump", 200)
            call("POST", "/sensitive", 200)  # revalidates upstream
            for fault in (503, "garbage", "timeout"):
                hfake.fail_next(fault)
                call("POST", "/sensitive", 503)
            hfake.revoke(first)
            call("POST", "/sensitive", 401)  # revalidation says no: session cleared

            call("POST", "/plurality/login", 303, data={"token": token(), "next": "/protected"})
            replayable = dict(browser.cookies)
            call("POST", "/plurality/logout", 200, json={})
            browser.cookies.update(replayable)
            call("GET", "/protected", 401)

            bad = requests.post(bad_base + "/plurality/login", json={"token": token()}, timeout=10)
            answers.append(bad)
            assert bad.status_code == 503
        finally:
            browser.close()

    # The capture saw what matters, so its silence about secrets means something.
    assert "/api/user/validate" in logs.text  # urllib3's request lines
    assert "POST /plurality/login" in logs.text  # werkzeug's access log
    assert "Invalid Client Secret" in logs.text  # our ERROR naming the cause
    assert any(r.levelno == logging.ERROR and r.name == "flask_plurality" for r in logs.records)
    assert "session=<" in logs.text  # the debug dump of the session was logged

    forbidden = forbidden_strings(secret, wrong_secret, tokens)
    forbidden.update({f"session id {i}": c for i, c in enumerate(set(cookies)) if len(c) >= 16})
    for what, value in forbidden.items():
        assert value not in logs.text, f"{what} appears in the logs"
        for answer in answers:
            assert value not in answer.text, f"{what} appears in an answer to {answer.request.path_url}"
            headers = {k: v for k, v in answer.headers.items() if k.lower() != "set-cookie"}
            assert value not in str(headers), f"{what} appears in a header"
    assert "'t': '<redacted>'" in logs.text


def test_exceptions_never_carry_the_token_or_secret(hfake: FakePlurality, secret: str, tmp_path: Any) -> None:
    wrong_secret = "sk_" + secrets.token_urlsafe(24)
    good = hygiene_app(hfake, tmp_path, "good")
    bad = hygiene_app(hfake, tmp_path, "bad", PLURALITY_CLIENT_SECRET=wrong_secret)
    tokens: list[str] = []
    raised: list[PluralityError] = []

    def attempt(app: Flask, token: str, fault: Any = None) -> None:
        tokens.append(token)
        if fault is not None:
            hfake.fail_next(fault)
        with app.app_context(), pytest.raises(PluralityError) as info:
            app.extensions["plurality"].validate(token)
        raised.append(info.value)

    attempt(good, "x" * 10)
    attempt(good, hfake.issue_token(ttl=-10))
    revoked = hfake.issue_token()
    hfake.revoke(revoked)
    attempt(good, revoked)
    for fault in (503, "garbage", "timeout", "reset"):
        attempt(good, hfake.issue_token(), fault)
    attempt(bad, hfake.issue_token())

    kinds = {type(e) for e in raised}
    assert {InvalidToken, UpstreamUnavailable, CredentialsRejected} <= kinds
    forbidden = forbidden_strings(secret, wrong_secret, tokens)
    for exc in raised:
        shown = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
        for what, value in forbidden.items():
            assert value not in shown, f"{what} in {type(exc).__name__}"


def test_no_repr_shows_the_token_or_secret(hfake: FakePlurality, secret: str, tmp_path: Any) -> None:
    app = hygiene_app(hfake, tmp_path, "good", PLURALITY_REVALIDATE=0)
    token = hfake.issue_token()
    shown: list[str] = [repr(hfake), str(hfake)]

    @app.get("/reprs")
    def reprs() -> dict[str, Any]:
        plurality: Plurality = current_app.extensions["plurality"]
        for obj in (
            plurality,
            plurality.client,
            upstream_settings(),
            session,
            session._get_current_object(),  # type: ignore[attr-defined]
            current_profile,
            current_profile._get_current_object(),  # type: ignore[attr-defined]
            current_app.session_interface,
            current_app.extensions["plurality.state"],
            stored_login(session._get_current_object()),  # type: ignore[attr-defined]
        ):
            shown.extend((repr(obj), str(obj)))
        return {}

    client = app.test_client()
    with everything_at_debug() as logs:
        assert client.post("/plurality/login", json={"token": token}).status_code == 200
        assert client.get("/reprs").status_code == 200
        session_answer = client.get("/plurality/session")
        assert session_answer.status_code == 200
        shown.append(session_answer.get_data(as_text=True))
        with client.session_transaction() as sess:
            shown.append(repr(sess))
        standalone = PluralityClient()
        shown.append(repr(standalone))
        standalone.close()
        direct = Upstream(hfake.url, CLIENT_ID, secret, "POST", 1.0)  # built by hand, not by the extension
        shown.extend((repr(direct), str(direct)))

    everything = "\n".join(shown)
    assert "Upstream(api_url=" in everything  # the reprs were taken
    for what, value in forbidden_strings(secret, "-unused-", [token]).items():
        if what.startswith("wrong"):
            continue
        assert value not in everything, f"{what} in a repr"
        assert value not in logs.text, f"{what} in the logs"
    assert "'t': '<redacted>'" in everything  # the session shows that it holds a token
    assert CLIENT_ID in repr(direct)  # the id is not secret and helps debugging
    with app.app_context():
        assert CLIENT_ID in repr(upstream_settings())
