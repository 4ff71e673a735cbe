"""The app the metrics tests run under gunicorn, configured the README's way, from the
environment (``FLASK_PLURALITY_METRICS=true`` ...):

    PROMETHEUS_MULTIPROC_DIR=... gunicorn -c gunicorn.conf.py -w 3 --pythonpath tests 'metrics_app:create_app()'
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask, request

from flask_plurality import Plurality, current_profile, plurality_required

plurality = Plurality()


def create_app() -> Flask:
    app = Flask("metrics_app")
    app.config.from_prefixed_env()
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(os.environ["METRICS_REDIS_URL"], socket_timeout=2),
    )
    plurality.init_app(app)

    @app.get("/whoami")
    @plurality_required
    def whoami() -> dict[str, Any]:
        return {"pid": os.getpid(), "user": current_profile.id}

    @app.post("/sensitive")
    @plurality_required(revalidate=True)
    def sensitive() -> dict[str, Any]:
        return {"pid": os.getpid(), "user": current_profile.id}

    @app.post("/revoke")
    def revoke() -> dict[str, Any]:
        """Test-only: an admin action that revokes a user's sessions."""
        plurality.revoke_user(str(request.get_json()["user_id"]))
        return {"revoked": True}

    @app.get("/pid")
    def pid() -> dict[str, Any]:
        return {"pid": os.getpid()}

    return app
