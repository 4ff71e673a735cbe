"""Instructions per request, counted by valgrind's callgrind: a bearer request against a
cookie-session request, and ``current_user`` with a ``user_loader`` against Flask-Login's.

Wall-clock ratios swing by several percent on a shared machine; instruction counts do
not. Each row runs in a fresh ``python`` under ``valgrind --tool=callgrind`` twice, with
N and N+100 requests after the same set-up and warm-up; (difference) / 100 is the cost
of one request, start-up and set-up cancelled out. Requests are WSGI calls into the app
(no HTTP server, no client), so the figures are the app's and the extension's own.

Rows (one app, one store per pair, the same logged-in user):

- cookie: a request with the session cookie to ``@plurality_required``;
- bearer: a request with ``Authorization: Bearer`` to ``@plurality_required(bearer=True)``,
  Plurality's answer fresh in the shared answer cache (the run checks it was not called);
- plurality user: ``@plurality_required`` and ``flask_plurality.current_user.email``,
  the ``user_loader`` doing one primary-key lookup (Flask-SQLAlchemy, SQLite);
- flask-login user: Flask-Login's ``@login_required`` and ``current_user.email``, its
  ``user_loader`` doing the same lookup, in the same server-side session.

    python -m benchmarks.bearer [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask, session
from flask_login import LoginManager, UserMixin, login_required, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.test import EnvironBuilder

import flask_plurality
from flask_plurality import Plurality, Profile, current_profile, plurality_required
from flask_plurality.testing import FakePlurality

from .servers import private_redis

ROOT = Path(__file__).resolve().parents[1]
#: (row, label)
ROWS = [
    ("cookie", "cookie session, @plurality_required"),
    ("bearer", "bearer token, fresh cached answer"),
    ("plurality-user", "@plurality_required + current_user (loader: 1 PK lookup)"),
    ("flask-login-user", "Flask-Login @login_required + current_user (1 PK lookup)"),
]
WARMUP = 30


class Base(DeclarativeBase):
    pass


class User(Base, UserMixin):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))


#: Rows whose app has the user loaders (the others must not pay for one).
USER_ROWS = ("plurality-user", "flask-login-user")


def create_app(
    store: str, instance: str, api_url: str, client_id: str, client_secret: str, redis_url: str, *, users: bool
) -> Flask:
    app = Flask("bench_bearer", instance_path=instance)
    app.config.update(
        SECRET_KEY="benchmark-only-secret",
        PLURALITY_API_URL=api_url,
        PLURALITY_CLIENT_ID=client_id,
        PLURALITY_CLIENT_SECRET=client_secret,
        PLURALITY_TRUSTED_ORIGINS=["http://localhost"],
        PLURALITY_BEARER_REVALIDATE=3600,
        PLURALITY_LOGIN_MAX_FAILURES=10**9,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{instance}/users.sqlite3",
    )
    if store == "redis":
        import redis

        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(redis_url, socket_timeout=1))
    plurality = Plurality(app)
    db = SQLAlchemy(app, model_class=Base)
    with app.app_context():
        db.create_all()

    if users:

        @plurality.user_loader
        def plurality_user(profile: Profile) -> User | None:
            return db.session.get(User, profile.id)

        manager = LoginManager(app)

        @manager.user_loader
        def flask_login_user(user_id: str) -> User | None:
            return db.session.get(User, user_id)

    @app.get("/cookie")
    @plurality_required
    def cookie() -> str:
        return current_profile.id

    @app.get("/bearer")
    @plurality_required(bearer=True)
    def bearer() -> str:
        return current_profile.id

    @app.get("/plurality-user")
    @plurality_required
    def with_plurality_user() -> str:
        return str(flask_plurality.current_user.email)

    @app.get("/flask-login-user")
    @login_required
    def with_flask_login_user() -> str:
        from flask_login import current_user

        return str(current_user.email)

    @app.post("/bench/setup")
    def setup() -> dict[str, Any]:
        """The app's own row for the user, and a Flask-Login login in the same session.
        (Not @plurality_required: its user loader would find no row yet, and log out.)"""
        if not current_profile:
            return {"error": "login_required"}, 401  # type: ignore[return-value]
        if db.session.get(User, current_profile.id) is None:
            db.session.add(User(id=current_profile.id, email=current_profile.email))
            db.session.commit()
        login_user(db.session.get(User, current_profile.id))
        return {"sid": session.sid}  # type: ignore[attr-defined]

    return app


def _environ(path: str, *, cookie: str | None = None, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return EnvironBuilder(path=path, headers=headers, **kwargs).get_environ()


def _call(app: Flask, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, headers

    answer = app(dict(environ), start_response)
    try:
        body = b"".join(answer)
    finally:
        answer.close()  # type: ignore[attr-defined]
    return seen["status"], seen["headers"], body


# -- the worker: runs under callgrind ----------------------------------------------------


def worker(row: str, count: int) -> None:
    env = os.environ
    app = create_app(
        env["BENCH_STORE"],
        env["BENCH_INSTANCE"],
        env["BENCH_API_URL"],
        env["BENCH_CLIENT_ID"],
        env["BENCH_CLIENT_SECRET"],
        env.get("BENCH_REDIS_URL", ""),
        users=row in USER_ROWS,
    )
    cookie, token = env["BENCH_COOKIE"], env["BENCH_TOKEN"]
    environ = _environ("/bearer", token=token) if row == "bearer" else _environ(f"/{row}", cookie=cookie)
    # The same work before the loop whatever ``count`` is: it cancels out of the difference.
    environs = [dict(environ) for _ in range(WARMUP + count)]
    for n, one in enumerate(environs):
        status, headers, body = _call(app, one)
        if not status.startswith("200"):
            raise SystemExit(f"{row} request {n} answered {status}: {body[:200]!r}")
        if row == "bearer" and any(name.lower() == "set-cookie" for name, _ in headers):
            raise SystemExit("a bearer request set a cookie")


# -- the driver ----------------------------------------------------------------------------


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _instructions(row: str, count: int, env: dict[str, str]) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.bearer",
        "--worker",
        row,
        str(count),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run of {row} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return int(found.group(1))


def _prepare(store: str, fake: FakePlurality, instance: str, redis_url: str) -> dict[str, str]:
    """A real login, the setup route, one bearer request that fills the answer cache."""
    app = create_app(store, instance, fake.url, fake.client_id, fake.client_secret, redis_url, users=True)
    token = fake.issue_token(email="bench@example.com")
    status, headers, body = _call(
        app,
        EnvironBuilder(
            method="POST", path="/plurality/login", json={"token": token}, headers={"Origin": "http://localhost"}
        ).get_environ(),
    )
    if not status.startswith("200"):
        raise RuntimeError(f"login failed: {status} {body[:200]!r}")
    cookie = next(v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie")
    status, headers, body = _call(app, _environ("/bench/setup", cookie=cookie, method="POST"))
    if not status.startswith("200"):
        raise RuntimeError(f"setup failed: {status} {body[:200]!r}")
    # login_user gives the session a new id (no fixation): the cookie to use from now on.
    cookie = next((v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie"), cookie)
    status, _, body = _call(app, _environ("/bearer", token=token))
    if not status.startswith("200"):
        raise RuntimeError(f"bearer failed: {status} {body[:200]!r}")
    return {
        "BENCH_STORE": store,
        "BENCH_INSTANCE": instance,
        "BENCH_API_URL": fake.url,
        "BENCH_CLIENT_ID": fake.client_id,
        "BENCH_CLIENT_SECRET": fake.client_secret,
        "BENCH_REDIS_URL": redis_url,
        "BENCH_COOKIE": cookie,
        "BENCH_TOKEN": token,
    }


def measure(quick: bool = False) -> dict[tuple[str, str], int]:
    """Instructions per request of every row on every store: {(store, row): Ir}."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    base = 20 if quick else 200
    results: dict[tuple[str, str], int] = {}
    with ExitStack() as stack:
        fake = stack.enter_context(FakePlurality())
        redis_url = stack.enter_context(private_redis())
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="plurality-bench-bearer-"))
        for store in ["cachelib"] + (["redis"] if redis_url else []):
            instance = tempfile.mkdtemp(dir=workdir)
            env = {**os.environ, "PYTHONHASHSEED": "0", **_prepare(store, fake, instance, redis_url or "")}
            calls = len(fake.calls)
            rows = ROWS if store == "cachelib" else ROWS[:2]
            jobs = [(row, count) for row, _ in rows for count in (base, base + 100)]
            with ThreadPoolExecutor(2) as pool:  # two at a time: counts do not depend on the machine's load
                counts = dict(
                    zip(jobs, pool.map(partial(_instructions, env=env), *zip(*jobs, strict=True)), strict=True)
                )
            for row, _ in rows:
                results[store, row] = round((counts[row, base + 100] - counts[row, base]) / 100)
            if len(fake.calls) != calls:
                raise RuntimeError("Plurality was called while measuring: the bearer row was not a cache hit")
    return results


def run(quick: bool = False) -> str:
    results = measure(quick)
    lines = [
        "Instructions per request (valgrind callgrind; (N+100 requests) - (N requests), / 100; "
        f"N = {20 if quick else 200}; WSGI calls; Python {sys.version.split()[0]}).",
        "",
        f"{'store':9} {'row':58} {'Ir/req':>9} {'ratio':>7}",
    ]
    for store in dict.fromkeys(s for s, _ in results):
        cookie = results[store, "cookie"]
        for row, label in ROWS:
            if (store, row) not in results:
                continue
            ir = results[store, row]
            baseline = results[store, "flask-login-user"] if row == "plurality-user" else cookie
            lines.append(f"{store:9} {label:58} {ir:9d} {ir / baseline:7.3f}")
    lines += [
        "",
        "ratio: bearer and cookie rows against the cookie row; plurality user against flask-login user.",
        "Target: bearer at most 10% above cookie on the same store.",
    ]
    for store in dict.fromkeys(s for s, _ in results):
        extra = results[store, "bearer"] / results[store, "cookie"] - 1
        lines.append(
            f"  {store:9} bearer vs cookie {extra:+6.1%}  (target +10%: {'met' if extra <= 0.10 else 'MISSED'})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bearer", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run, figures rough")
    parser.add_argument("--worker", nargs=2, metavar=("ROW", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    print(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
