"""The app of the slow-upstream load (``bench_slow_upstream``), built from the environment
so that every gunicorn process builds the same one: Redis sessions, one route that
revalidates every ``BENCH_INTERVAL`` seconds, and this process's breaker for the report."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from flask import Flask

from flask_plurality import Plurality, current_profile, plurality_required


def create_app() -> Flask:
    env = os.environ
    app = Flask("slow_upstream")
    app.config.update(
        SECRET_KEY="benchmark-only-secret",
        PLURALITY_API_URL=env["BENCH_API_URL"],
        PLURALITY_CLIENT_ID=env["BENCH_CLIENT_ID"],
        PLURALITY_CLIENT_SECRET=env["BENCH_CLIENT_SECRET"],
        PLURALITY_REVALIDATE=int(env["BENCH_INTERVAL"]),
        PLURALITY_LOGIN_MAX_FAILURES=10**9,
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(env["BENCH_REDIS_URL"], socket_timeout=2, socket_connect_timeout=2),
    )
    plurality = Plurality(app)

    @app.get("/slow")
    @plurality_required
    def slow() -> dict[str, Any]:
        return {"user": current_profile.id, "pid": os.getpid()}

    @app.get("/breaker")
    def breaker() -> dict[str, Any]:
        """What this process's breaker holds (private state: a benchmark may look)."""
        now = time.monotonic()
        states = [
            {"failures": b.failures, "open": now < max(b.open_until, b.probe_until)}
            for b in plurality.client._breakers.values()
        ]
        return {"pid": os.getpid(), "breakers": states}

    return app
