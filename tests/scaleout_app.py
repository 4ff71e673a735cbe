"""The app the scale-out tests run under gunicorn: configured from the environment.

gunicorn -w 3 --pythonpath tests 'scaleout_app:create_app()'
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask

from flask_plurality import Plurality, current_profile, plurality_required

plurality = Plurality()


def create_app() -> Flask:
    app = Flask("scaleout")
    env = os.environ
    app.config.update(
        SECRET_KEY=env["SCALEOUT_SECRET_KEY"],
        PLURALITY_API_URL=env["SCALEOUT_API_URL"],
        PLURALITY_CLIENT_ID=env["SCALEOUT_CLIENT_ID"],
        PLURALITY_CLIENT_SECRET=env["SCALEOUT_CLIENT_SECRET"],
        # Strings, as from the environment: the bearer scale-out test turns these on.
        PLURALITY_ACCEPT_BEARER=env.get("SCALEOUT_ACCEPT_BEARER", "false"),
        PLURALITY_BEARER_REVALIDATE=env.get("SCALEOUT_BEARER_REVALIDATE", "60"),
        PLURALITY_LOGIN_MAX_FAILURES=env.get("SCALEOUT_LOGIN_MAX_FAILURES", "10"),
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(env["SCALEOUT_REDIS_URL"], socket_timeout=2, socket_connect_timeout=2),
    )
    plurality.init_app(app)

    @app.get("/whoami")
    @plurality_required
    def whoami() -> dict[str, Any]:
        """Which worker process answered, and for whom."""
        return {"pid": os.getpid(), "user": current_profile.id}

    @app.get("/pid")
    def pid() -> dict[str, Any]:
        return {"pid": os.getpid()}

    return app
