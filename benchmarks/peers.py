"""flask-plurality against what a user would pick instead, each library in an app of its own.

``python -m benchmarks.peers`` (``python3 dev.py bench --peers``): instructions per
request, counted by valgrind's callgrind, for each store (cachelib files, Redis, SQLite
through Flask-SQLAlchemy):

- ``plurality``: ``@plurality_required``, the same logged-in session again (steady state);
- ``fs-hand``: Flask-Session on the same store, ``if "user" not in session: abort(401)``;
- ``fs-login``: Flask-Session on the same store, Flask-Login's ``@login_required``;
- ``cookie-login``: Flask's own cookie session, Flask-Login's ``@login_required``;
- ``jwt``: flask-jwt-extended's ``@jwt_required()``, the token in a header;
- ``httpauth``: Flask-HTTPAuth's ``HTTPTokenAuth``, a dictionary lookup;
- ``bearer``: ``@plurality_required(bearer=True)``, the answer in the shared cache;
- ``login``: ``POST /plurality/login`` with a fresh token (one validate call to the
  stand-in, which runs in another process: its instructions are not counted);
- ``fs-login-user``: Flask-Login's ``login_user`` and the session's write, same store;
- ``validate``: the validate call alone: ``requests`` posting to the stand-in.

No baseline app carries flask-plurality: each peer is a Flask app of its own with only
its library. Every app of a store runs in one process under ``valgrind --tool=callgrind``
(``--zero-before=getppid --dump-before=getpgrp``); a row's figure is (instructions of
N + step requests - those of N) / step, as in :mod:`benchmarks.instructions`.
Outside valgrind, the same process setup counts the store writes of a steady protected
request and reads Redis's ``MEMORY USAGE`` of a logged-in session.

``--compare DIR`` also measures another checkout's ``flask_plurality`` (its root: say
``git archive`` of an older commit), in the same run, store by store, so that the goals
table shows before and after side by side.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .instructions import _dumps as dumps
from .instructions import callgrind_command

ROOT = Path(__file__).resolve().parents[1]

#: (row, label, kind): "get" rows repeat one request; "login" rows make a new one each time.
ROWS = [
    ("plurality", "@plurality_required (steady session)", "get"),
    ("fs-hand", "Flask-Session + hand-written check", "get"),
    ("fs-login", "Flask-Session + Flask-Login", "get"),
    ("cookie-login", "cookie session + Flask-Login", "get"),
    ("jwt", "flask-jwt-extended @jwt_required()", "get"),
    ("httpauth", "Flask-HTTPAuth HTTPTokenAuth", "get"),
    ("bearer", "@plurality_required(bearer=True), cached", "get"),
    ("login", "POST /plurality/login", "login"),
    ("fs-login-user", "Flask-Login login_user + session write", "login"),
    ("validate", "validate call alone (requests)", "login"),
]
STORES = ("cachelib", "redis", "sqlite")
FULL = {"n": 10, "step": 50, "login_n": 3, "login_step": 10, "warmup": 5}
QUICK = {"n": 2, "step": 2, "login_n": 1, "login_step": 1, "warmup": 2}


# -- the apps, each with its own library only ------------------------------------------


def _session_config(store: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    """Flask-Session's settings for ``store``, a namespace of this app's own."""
    work = Path(spec["work"])
    if store == "cachelib":
        from cachelib.file import FileSystemCache

        return {
            "SESSION_TYPE": "cachelib",
            "SESSION_CACHELIB": FileSystemCache(str(work / f"{name}-sessions"), threshold=0, mode=0o600),
        }
    if store == "redis":
        import redis

        return {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS": redis.Redis.from_url(spec["redis_url"]),
            "SESSION_KEY_PREFIX": f"{spec['prefix']}{name}:",
        }
    from flask_sqlalchemy import SQLAlchemy

    return {
        "SESSION_TYPE": "sqlalchemy",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{work / (name + '.db')}",
        "SESSION_SQLALCHEMY": SQLAlchemy(),
        "SESSION_SQLALCHEMY_TABLE": f"sessions_{name.replace('-', '_')}",
    }


def _flask_session_app(store: str, spec: dict[str, Any], name: str) -> Any:
    from flask import Flask
    from flask_session import Session

    app = Flask(name)
    app.config.update(SECRET_KEY="bench", SESSION_PERMANENT=True, **_session_config(store, spec, name))
    if store == "sqlite":
        app.config["SESSION_SQLALCHEMY"].init_app(app)
    Session(app)
    return app


class _User:
    """Flask-Login's user: UserMixin's four members, nothing else."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, user_id: str) -> None:
        self.id = user_id

    def get_id(self) -> str:
        return self.id


def _with_flask_login(app: Any) -> Any:
    from flask_login import LoginManager, login_required, login_user

    manager = LoginManager(app)
    users = {"u1": _User("u1")}  # the app's user table: the same in every worker

    @manager.user_loader
    def load(user_id: str) -> _User | None:
        return users.get(user_id)

    @app.get("/p")
    @login_required
    def protected() -> str:
        return "ok"

    @app.post("/login")
    def login() -> str:
        login_user(users["u1"])
        return "ok"

    return app


def build(row: str, store: str, spec: dict[str, Any]) -> Any:
    """The app of ``row`` on ``store``."""
    from flask import Flask, abort, session

    if row in ("plurality", "bearer", "login"):
        from flask_plurality import Plurality, current_profile, plurality_required

        app = Flask(f"plurality-{row}")
        app.config.update(
            SECRET_KEY="bench",
            PLURALITY_CLIENT_ID=spec["client_id"],
            PLURALITY_CLIENT_SECRET=spec["client_secret"],
            PLURALITY_API_URL=spec["api_url"],
            PLURALITY_KEY_PREFIX=f"{spec['prefix']}{row}-plurality:",
            PLURALITY_ACCEPT_BEARER=row == "bearer",
            # The answer stays cached for the whole run (the default 60 s ends within a
            # run under valgrind, and a batch would then hold an upstream call).
            PLURALITY_BEARER_REVALIDATE=86400,
            **_session_config(store, spec, row),
        )
        if store == "sqlite":
            app.config["SESSION_SQLALCHEMY"].init_app(app)
            from flask_session import Session

            Session(app)
        Plurality(app)

        @app.get("/p")
        @plurality_required
        def protected() -> str:
            return str(current_profile.id)

        return app
    if row == "fs-hand":
        app = _flask_session_app(store, spec, row)

        @app.get("/p")
        def hand() -> str:
            if "user" not in session:
                abort(401)
            return str(session["user"])

        @app.post("/login")
        def login() -> str:
            session["user"] = "u1"
            return "ok"

        return app
    if row in ("fs-login", "fs-login-user"):
        return _with_flask_login(_flask_session_app(store, spec, row))
    if row == "cookie-login":
        app = Flask(row)
        app.config["SECRET_KEY"] = "bench"
        return _with_flask_login(app)
    if row == "jwt":
        from flask_jwt_extended import JWTManager, create_access_token, get_jwt_identity, jwt_required

        app = Flask(row)
        app.config.update(JWT_SECRET_KEY="bench-" * 6, JWT_TOKEN_LOCATION=["headers"])
        JWTManager(app)

        @app.get("/p")
        @jwt_required()
        def protected() -> str:
            return str(get_jwt_identity())

        @app.post("/login")
        def login() -> str:
            return str(create_access_token(identity="u1"))

        return app
    if row == "httpauth":
        from flask_httpauth import HTTPTokenAuth

        app = Flask(row)
        auth = HTTPTokenAuth(scheme="Bearer")
        tokens = {"token-of-u1": "u1"}

        @auth.verify_token
        def verify(token: str) -> str | None:
            return tokens.get(token)

        @app.get("/p")
        @auth.login_required
        def protected() -> str:
            return str(auth.current_user())

        return app
    raise ValueError(row)


# -- requests ----------------------------------------------------------------------------


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    _start_response.status = status  # type: ignore[attr-defined]
    _start_response.headers = headers  # type: ignore[attr-defined]


def _environ(method: str, path: str, headers: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(path=path, method=method, headers=headers or {}, json=body, base_url="http://localhost")
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    environ = {**environ, "wsgi.input": __import__("io").BytesIO(environ["wsgi.input"].getvalue())}
    answer = app(environ, _start_response)
    body = b"".join(answer)
    getattr(answer, "close", lambda: None)()
    return _start_response.status, _start_response.headers, body  # type: ignore[attr-defined]


def _cookie(headers: list[tuple[str, str]], name: str = "session") -> str:
    for key, value in headers:
        if key.lower() == "set-cookie" and value.startswith(name + "="):
            return value.split(";", 1)[0]
    raise RuntimeError(f"no {name} cookie in {headers}")


class Row:
    """One row, ready: ``next_environ()`` is the next request to make."""

    def __init__(self, row: str, store: str, spec: dict[str, Any], tokens: list[str]) -> None:
        self.row, self.store, self.spec = row, store, spec
        self.tokens = tokens
        if row == "validate":
            import requests

            self.http = requests.Session()
            self.app = None
            return
        self.app = build(row, store, spec)
        self.get: dict[str, Any] | None = None
        if row in ("plurality", "login"):
            status, headers, body = _call(self.app, self._login_environ(tokens.pop()))
            if not status.startswith("200"):
                raise RuntimeError(f"{row} login answered {status}: {body[:300]!r}")
            self.get = _environ("GET", "/p", {"Cookie": _cookie(headers)})
        elif row == "bearer":
            self.get = _environ("GET", "/p", {"Authorization": f"Bearer {tokens.pop()}"})
        elif row in ("fs-hand", "fs-login", "cookie-login", "fs-login-user"):
            status, headers, _ = _call(self.app, _environ("POST", "/login"))
            self.get = _environ("GET", "/p", {"Cookie": _cookie(headers)})
        elif row == "jwt":
            _, _, body = _call(self.app, _environ("POST", "/login"))
            self.get = _environ("GET", "/p", {"Authorization": f"Bearer {body.decode()}"})
        elif row == "httpauth":
            self.get = _environ("GET", "/p", {"Authorization": "Bearer token-of-u1"})

    @staticmethod
    def _login_environ(token: str) -> dict[str, Any]:
        return _environ("POST", "/plurality/login", {"Origin": "http://localhost"}, {"token": token})

    def batch(self, count: int) -> list[Any]:
        """What ``count`` requests of this row need, made before measuring."""
        if self.row == "login":
            return [self._login_environ(self.tokens.pop()) for _ in range(count)]
        if self.row == "fs-login-user":
            return [_environ("POST", "/login") for _ in range(count)]
        if self.row == "validate":
            return [self.tokens.pop() for _ in range(count)]
        return [dict(self.get) for _ in range(count)]  # type: ignore[arg-type]

    def run(self, batch: list[Any]) -> None:
        if self.row == "validate":
            url = self.spec["api_url"] + "/user/validate"
            auth = (self.spec["client_id"], self.spec["client_secret"])
            for token in batch:
                response = self.http.post(url, json={"token": token}, auth=auth, timeout=5)
                if response.status_code != 200:
                    raise RuntimeError(f"validate answered {response.status_code}")
            return
        app = self.app
        for environ in batch:
            if "wsgi.input" in environ and environ["REQUEST_METHOD"] == "POST":
                environ = {**environ, "wsgi.input": __import__("io").BytesIO(environ["wsgi.input"].getvalue())}
            answer = app(environ, _start_response)
            b"".join(answer)
            getattr(answer, "close", lambda: None)()
            if not _start_response.status.startswith("200"):  # type: ignore[attr-defined]
                raise RuntimeError(f"{self.row} answered {_start_response.status}")  # type: ignore[attr-defined]


def _use_package(package: str | None) -> None:
    if package:
        sys.path.insert(0, package)
        try:
            import flask_plurality  # noqa: F401
        finally:
            sys.path.remove(package)


def _tokens_needed(plan: dict[str, int]) -> int:
    return 4 + 2 * (plan["warmup"] + 2 * plan["login_n"] + plan["login_step"])


def measure(spec: dict[str, Any]) -> None:
    """Under callgrind: every row of one store, warm, then two marked batches per row."""
    _use_package(spec["package"])
    plan, store, tokens = spec["plan"], spec["store"], list(spec["tokens"])
    rows = [Row(row, store, spec, tokens) for row, _, _ in ROWS]
    for row in rows:
        row.run(row.batch(plan["warmup"]))
    for row, (_, _, kind) in zip(rows, ROWS, strict=True):
        n, step = (plan["login_n"], plan["login_step"]) if kind == "login" else (plan["n"], plan["step"])
        for count in (n, n + step):
            batch = row.batch(count)
            gc.collect()
            gc.disable()
            os.getppid()  # callgrind: --zero-before=getppid
            row.run(batch)
            os.getpgrp()  # callgrind: --dump-before=getpgrp
            gc.enable()


def facts(spec: dict[str, Any]) -> dict[str, Any]:
    """Outside valgrind: store writes per steady protected request, and (Redis) the
    bytes a logged-in session takes (MEMORY USAGE)."""
    _use_package(spec["package"])
    store, tokens = spec["store"], list(spec["tokens"])
    row = Row("plurality", store, spec, tokens)
    app = row.app
    found: dict[str, Any] = {}
    target: Any = getattr(app.session_interface, "store", None)
    writes: list[str] = []
    if target is not None:
        for name in ("set", "delete", "add", "incr", "decr", "set_rarely_written", "save_session", "delete_session"):
            real = getattr(target, name)
            setattr(target, name, lambda *a, _n=name, _r=real, **k: (writes.append(_n), _r(*a, **k))[1])
        row.run(row.batch(10))
        writes.clear()
        row.run(row.batch(100))
        found["writes"] = len(writes) / 100
    if store == "redis":
        import redis

        client = redis.Redis.from_url(spec["redis_url"])
        sid = row.get["HTTP_COOKIE"].split("=", 1)[1]  # type: ignore[index]
        found["memory"] = client.memory_usage(f"{spec['prefix']}plurality:{sid}")
        found["value"] = len(client.get(f"{spec['prefix']}plurality:{sid}") or b"")
    return found


def _child(mode: str, spec_path: Path, valgrind: list[str] | None = None) -> str:
    cmd = [*(valgrind or []), sys.executable, "-m", "benchmarks.peers", mode, str(spec_path)]
    done = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def one_store(spec: dict[str, Any], workdir: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """(instructions per request of each row, the facts) for one store and package."""
    plan = spec["plan"]
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    _child("--measure", spec_path, callgrind_command(workdir))
    counts = dumps(workdir)
    if len(counts) != 2 * len(ROWS):
        raise RuntimeError(f"expected {2 * len(ROWS)} callgrind dumps, found {len(counts)}")
    figures = {}
    for i, (row, _, kind) in enumerate(ROWS):
        step = plan["login_step"] if kind == "login" else plan["step"]
        figures[row] = (counts[2 * i + 1] - counts[2 * i]) / step
    facts_spec = {**spec, "prefix": spec["prefix"] + "facts-"}
    facts_path = workdir / "facts.json"
    facts_path.write_text(json.dumps(facts_spec))
    found = json.loads(_child("--facts", facts_path).strip().splitlines()[-1])
    return figures, found


def _servers(stack: ExitStack, redis_url: str | None) -> tuple[Any, str | None, Path]:
    """The stand-in, Redis (``redis_url``, else a private redis-server, else ``None``)
    and a work directory, for the run's duration."""
    from flask_plurality.testing import FakePlurality

    from .servers import private_redis

    fake = stack.enter_context(FakePlurality())
    redis = redis_url or stack.enter_context(private_redis())
    return fake, redis, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plurality-peers-")))


def run(quick: bool, packages: list[tuple[str, str | None]], redis_url: str | None, stores: list[str]) -> str:
    if shutil.which("valgrind") is None:
        return "(skipped: valgrind is not installed)"

    plan = QUICK if quick else FULL
    results: dict[tuple[str, str], tuple[dict[str, float], dict[str, Any]]] = {}
    with ExitStack() as stack:
        fake, redis, workdir = _servers(stack, redis_url)
        for store in stores:
            if store == "redis" and not redis:
                continue
            for label, package in packages:  # the packages of one store back to back
                here = workdir / f"{store}-{label}"
                here.mkdir()
                spec = {
                    "store": store,
                    "work": str(here),
                    "redis_url": redis,
                    "api_url": fake.url,
                    "client_id": fake.client_id,
                    "client_secret": fake.client_secret,
                    "prefix": f"peers-{os.getpid()}-{label}-",
                    "package": package,
                    "plan": plan,
                    "tokens": [fake.issue_token() for _ in range(_tokens_needed(plan))],
                }
                try:
                    results[(store, label)] = one_store(spec, here)
                finally:
                    if store == "redis":
                        import redis as redis_py

                        client = redis_py.Redis.from_url(redis)
                        for key in client.scan_iter(f"{spec['prefix']}*"):
                            client.delete(key)
    return _report(results, packages, plan)


def _report(
    results: dict[tuple[str, str], tuple[dict[str, float], dict[str, Any]]],
    packages: list[tuple[str, str | None]],
    plan: dict[str, int],
) -> str:
    labels = [label for label, _ in packages]
    lines = [
        f"Instructions per request (callgrind Ir), Python {platform.python_version()}, PYTHONHASHSEED=0; each "
        f"library in an app of its own. GET rows: ({plan['n'] + plan['step']} - {plan['n']} requests) / "
        f"{plan['step']}; login rows: ({plan['login_n'] + plan['login_step']} - {plan['login_n']}) / "
        f"{plan['login_step']}.",
        "",
        f"{'store':9} {'row':44} " + " ".join(f"{label:>12}" for label in labels),
    ]
    stores = sorted({store for store, _ in results}, key=STORES.index)
    for store in stores:
        for row, text, _ in ROWS:
            cells = [results[(store, label)][0][row] if (store, label) in results else float("nan") for label in labels]
            lines.append(f"{store:9} {text:44} " + " ".join(f"{c:12,.0f}" for c in cells))
    lines += ["", "Goals (ratios of the rows above):", f"{'what':62} " + " ".join(f"{label:>12}" for label in labels)]

    def goal(text: str, value: Any) -> None:
        cells = []
        for label in labels:
            try:
                cells.append(value(label))
            except KeyError:
                cells.append("-")
        lines.append(f"{text:62} " + " ".join(f"{c:>12}" for c in cells))

    def fig(store: str, label: str) -> dict[str, float]:
        return results[(store, label)][0]

    for store in stores:
        goal(
            f"protected / Flask-Login on the same store, {store}",
            lambda label, s=store: f"{fig(s, label)['plurality'] / fig(s, label)['fs-login']:.3f}",
        )
        goal(
            f"protected / hand-written check on the same store, {store}",
            lambda label, s=store: f"{fig(s, label)['plurality'] / fig(s, label)['fs-hand']:.3f}",
        )
    for store in stores:
        goal(
            f"store writes per protected request, steady, {store}",
            lambda label, s=store: f"{results[(s, label)][1]['writes']:.2f}",
        )
    for store in stores:
        goal(
            f"login / (login_user + validate call alone), {store}",
            lambda label, s=store: (
                f"{fig(s, label)['login'] / (fig(s, label)['fs-login-user'] + fig(s, label)['validate']):.3f}"
            ),
        )
    if "redis" in stores:
        goal(
            "Redis bytes per Plurality session (MEMORY USAGE)",
            lambda label: f"{results[('redis', label)][1]['memory']:,}",
        )
    for store in stores:
        goal(
            f"bearer, cached answer / flask-jwt-extended, {store}",
            lambda label, s=store: f"{fig(s, label)['bearer'] / fig(s, label)['jwt']:.3f}",
        )
    return "\n".join(lines)


# -- wall clock: gunicorn -w 2, the rows taking turns ------------------------------------

#: The rows served by gunicorn (the GET rows), and how many rounds of how many requests.
HTTP_ROWS = [row for row, _, kind in ROWS if kind == "get"]
HTTP_FULL = {"rounds": 8, "requests": 300, "concurrency": 4, "warmup": 30}
HTTP_QUICK = {"rounds": 2, "requests": 20, "concurrency": 2, "warmup": 5}


def wsgi() -> Any:
    """gunicorn's ``benchmarks.peers:wsgi()``: the app of ``PEERS_ROW`` as ``PEERS_SPEC`` says."""
    spec = json.loads(Path(os.environ["PEERS_SPEC"]).read_text())
    return build(os.environ["PEERS_ROW"], spec["store"], spec)


def _credentials(row: str, port: int, spec: dict[str, Any], tokens: list[str]) -> str:
    """The header line a request of ``row`` carries (a cookie, a bearer token)."""
    from . import loadgen

    if row == "plurality":
        status, headers, _ = loadgen.request(port, "POST", "/plurality/login", body={"token": tokens.pop()})
        if status != 200:
            raise RuntimeError(f"login answered {status}")
        return f"Cookie: {loadgen.session_cookie(headers)}"
    if row in ("fs-hand", "fs-login", "cookie-login"):
        _, headers, _ = loadgen.request(port, "POST", "/login")
        return f"Cookie: {loadgen.session_cookie(headers)}"
    if row == "jwt":
        _, _, body = loadgen.request(port, "POST", "/login")
        return f"Authorization: Bearer {body.decode()}"
    if row == "httpauth":
        return "Authorization: Bearer token-of-u1"
    return f"Authorization: Bearer {tokens.pop()}"  # bearer: the first request fills the answer cache


def throughput(quick: bool, redis_url: str | None, stores: list[str]) -> str:
    """Requests/s through ``gunicorn -w 2`` of every GET row, as ratios within a round
    (the rows take turns, in a rotating order), medians over rounds."""
    import statistics

    from . import loadgen
    from .servers import gunicorn

    plan = HTTP_QUICK if quick else HTTP_FULL
    lines = [
        f"Throughput through gunicorn -w 2 (sync workers), {plan['concurrency']} connections, "
        f"{plan['rounds']} rounds x {plan['requests']} requests per row, rows taking turns; "
        "ratios within each round, medians over rounds.",
        "",
        f"{'store':9} {'row':44} {'req/s':>8} {'x fs-login':>10} {'x fs-hand':>10}",
    ]
    with ExitStack() as stack:
        fake, redis, workdir = _servers(stack, redis_url)
        for store in stores:
            if store == "redis" and not redis:
                continue
            spec = {
                "store": store,
                "work": str(workdir / store),
                "redis_url": redis,
                "api_url": fake.url,
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
                "prefix": f"peers-http-{os.getpid()}-{store}-",
                "package": None,
            }
            Path(spec["work"]).mkdir()
            spec_path = workdir / f"{store}.json"
            spec_path.write_text(json.dumps(spec))
            tokens = [fake.issue_token() for _ in range(4)]
            ports: dict[str, int] = {}
            for row in HTTP_ROWS:
                env = {"PEERS_SPEC": str(spec_path), "PEERS_ROW": row, "PYTHONHASHSEED": "0"}
                ports[row] = stack.enter_context(gunicorn("benchmarks.peers:wsgi()", env, workers=2))
            prepared = {}
            for row in HTTP_ROWS:
                line = _credentials(row, ports[row], spec, tokens)
                raw = f"GET /p HTTP/1.1\r\nHost: 127.0.0.1:{ports[row]}\r\n{line}\r\nConnection: close\r\n\r\n"
                prepared[row] = raw.encode()
                try:
                    loadgen.blast(ports[row], [prepared[row]] * plan["warmup"], concurrency=plan["concurrency"])
                except RuntimeError as exc:
                    raise RuntimeError(f"{store} {row}: {exc}") from None
            samples: dict[str, list[float]] = {row: [] for row in HTTP_ROWS}
            order = list(HTTP_ROWS)
            for _ in range(plan["rounds"]):
                order = order[1:] + order[:1]
                for row in order:
                    batch = [prepared[row]] * plan["requests"]
                    samples[row].append(loadgen.blast(ports[row], batch, concurrency=plan["concurrency"]))
            for row, text, _ in ROWS:
                if row not in samples:
                    continue
                got = samples[row]
                by_login = statistics.median(a / b for a, b in zip(got, samples["fs-login"], strict=True))
                by_hand = statistics.median(a / b for a, b in zip(got, samples["fs-hand"], strict=True))
                lines.append(f"{store:9} {text:44} {statistics.median(got):8.0f} {by_login:10.3f} {by_hand:10.3f}")
            if store == "redis":
                import redis as redis_py

                client = redis_py.Redis.from_url(redis)
                for key in client.scan_iter(f"{spec['prefix']}*"):
                    client.delete(key)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--measure", "--facts"):
        spec = json.loads(Path(args[1]).read_text())
        if args[0] == "--measure":
            measure(spec)
        else:
            print(json.dumps(facts(spec)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few requests per row")
    parser.add_argument(
        "--compare", metavar="DIR", help="also measure the flask_plurality of this checkout (its root), in the same run"
    )
    parser.add_argument("--redis-url", help="use this Redis (its database must be yours) instead of a private one")
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)}")
    parser.add_argument("--gunicorn", action="store_true", help="wall-clock throughput through gunicorn -w 2 instead")
    options = parser.parse_args(args)
    if options.gunicorn:
        print(throughput(options.quick, options.redis_url, [s for s in options.stores.split(",") if s]), flush=True)
        return 0
    packages: list[tuple[str, str | None]] = [("this", None)]
    if options.compare:
        packages.insert(0, ("compared", options.compare))
    stores = [s for s in options.stores.split(",") if s]
    print(run(options.quick, packages, options.redis_url, stores), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
