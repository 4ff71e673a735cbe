"""The 16 KiB body limit of /login and /logout holds on every Flask the package allows
(``request.max_content_length`` can be set per request only from Flask 3.1 on), whatever
the app's own ``MAX_CONTENT_LENGTH``, and leaves alone a body the app read first."""

from __future__ import annotations

import io
import json

import flask
import pytest
from flask import request
from helpers import SAME_ORIGIN, AppFactory, error_of

from flask_plurality.testing import FakePlurality


def streamed(client: flask.testing.FlaskClient, path: str, body: bytes) -> flask.wrappers.Response:
    """A chunked post: no Content-Length, the server marks the stream terminated."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={**SAME_ORIGIN, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("app_limit", [None, 10 * 1024 * 1024])
def test_the_limit_is_the_views_own_whatever_the_apps(
    make_app: AppFactory, fake: FakePlurality, app_limit: int | None
) -> None:
    app = make_app(MAX_CONTENT_LENGTH=app_limit)
    client = app.test_client()
    over = json.dumps({"token": fake.issue_token(), "pad": "x" * 17_000}).encode()
    error_of(streamed(client, "/plurality/login", over), 413, "payload_too_large")
    assert fake.calls == []
    under = json.dumps({"token": fake.issue_token(), "pad": "x" * 1000}).encode()
    assert streamed(client, "/plurality/login", under).status_code == 200
    assert [call.outcome for call in fake.calls] == [200]


def test_a_body_the_app_read_first_is_not_read_again(make_app: AppFactory, fake: FakePlurality) -> None:
    """A hook that reads the form first (a CSRF check, say) built the request's stream:
    the view must use what was read, not wait on a second reader of the same input."""
    app = make_app()
    seen: list[str | None] = []

    @app.before_request
    def read_the_form() -> None:
        seen.append(request.form.get("token"))

    token = fake.issue_token()
    response = app.test_client().post("/plurality/login", data={"token": token}, headers=SAME_ORIGIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert seen == [token] and response.get_json()["authenticated"] is True
