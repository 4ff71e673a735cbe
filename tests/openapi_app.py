"""The app ``.ci/run`` serves for schemathesis: the blueprint in demo mode (the built-in
stand-in behind it) with its OpenAPI document on.

    gunicorn -w 1 --pythonpath tests 'openapi_app:create_app()'
"""

from __future__ import annotations

import os
import tempfile

from flask import Flask

from flask_plurality import Plurality


def create_app() -> Flask:
    app = Flask("openapi_app", instance_path=os.environ.get("OPENAPI_APP_INSTANCE") or tempfile.mkdtemp())
    app.config.update(
        SECRET_KEY="schemathesis-only-secret",
        PLURALITY_FAKE="force",  # no credentials: /fake/token mints tokens the stand-in accepts
        PLURALITY_OPENAPI=True,
        PLURALITY_LOGIN_MAX_FAILURES=10**6,  # the fuzzer's junk tokens must not all end in 429
    )
    Plurality(app)
    return app
