"""The app every benchmark row runs in: five routes over one session store.

One app, so the five rows differ only in their check. ``create_app()`` reads its
settings from the environment so gunicorn workers build the very same app.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from flask import Flask, abort, request, session
from flask_login import LoginManager, UserMixin, current_user, login_required

from flask_plurality import Plurality, current_profile, plurality_required

#: (path, label) of each row, in table order.
ROWS: list[tuple[str, str]] = [
    ("/bare", "1 bare route, loads the session"),
    ("/hand", "2 hand-written `user` in session"),
    ("/plurality", "3 @plurality_required"),
    ("/interval", "4 @plurality_required, interval, cache hit"),
    ("/interval-fresh", "4a same, answer younger than interval"),
    ("/flask-login", "5 Flask-Login @login_required"),
]
#: The interval of row 4; its sessions are made older than this.
INTERVAL = 3600


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def create_app(
    store: str | None = None,
    *,
    instance_path: str | None = None,
    redis_url: str | None = None,
    api_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Flask:
    """``store`` is "cachelib" (files on disk, the extension's default) or "redis"."""
    env = os.environ
    store = store or env["BENCH_STORE"]
    app = Flask("bench", instance_path=instance_path or env["BENCH_INSTANCE"])
    app.config.update(
        SECRET_KEY="benchmark-only-secret",
        PLURALITY_API_URL=api_url or env["BENCH_API_URL"],
        PLURALITY_CLIENT_ID=client_id or env["BENCH_CLIENT_ID"],
        PLURALITY_CLIENT_SECRET=client_secret or env["BENCH_CLIENT_SECRET"],
        PLURALITY_TRUSTED_ORIGINS=["http://localhost"],
        PLURALITY_LOGIN_MAX_FAILURES=10**9,
    )
    if store == "redis":
        import redis

        app.config.update(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(
                redis_url or env["BENCH_REDIS_URL"], socket_timeout=1, socket_connect_timeout=1
            ),
        )
    elif store != "cachelib":
        raise ValueError(f"unknown store {store!r}")
    Plurality(app)
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.get("/bare")
    def bare() -> str:
        return str(session.get("user", ""))

    @app.get("/hand")
    def hand() -> str:
        if "user" not in session:
            abort(401)
        return str(session["user"])

    @app.get("/plurality")
    @plurality_required
    def protected() -> str:
        return current_profile.id

    @app.get("/interval")
    @plurality_required(revalidate=INTERVAL)
    def interval() -> str:
        return current_profile.id

    @app.get("/interval-fresh")
    @plurality_required(revalidate=INTERVAL)
    def interval_fresh() -> str:
        return current_profile.id

    @app.get("/flask-login")
    @login_required
    def flask_login() -> str:
        return str(current_user.id)

    @app.post("/bench/setup")
    @plurality_required
    def setup() -> dict[str, Any]:
        """Make the one session every row reads: all three kinds of login in it.

        Flask-Login's keys are written as ``login_user`` writes them, not through it: its
        signal would end the Plurality login (one identity per session), and each row
        must find every kind of login in the same session, so that rows differ only in
        their check."""
        session["user"] = current_profile.id
        session["_user_id"] = current_profile.id
        session["_fresh"] = True
        session["_id"] = app.login_manager._session_identifier_generator()  # type: ignore[attr-defined]
        return {"sid": session.sid}  # type: ignore[attr-defined]

    @app.post("/naive/login")
    def naive_login() -> dict[str, Any]:
        """A login as one would write it by hand: ``requests.get``, a new connection each time."""
        token = (request.get_json(silent=True) or {}).get("token")
        answer = requests.get(
            app.config["PLURALITY_API_URL"] + "/user/validate",
            json={"token": token},
            auth=(app.config["PLURALITY_CLIENT_ID"], app.config["PLURALITY_CLIENT_SECRET"]),
            timeout=5,
        )
        if answer.status_code != 200:
            abort(401)
        session["user"] = answer.json()["user"]["id"]
        return {"authenticated": True}

    return app
