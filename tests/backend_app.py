"""An app configured for one session backend, from a JSON-able description ("spec").

The same builder serves the in-process tests and the app-server subprocesses of the
conformance races (``python tests/backend_app.py``), so both talk to the store the same
way. A spec is a dict: ``{"family": ..., <where the server is>..., "prefix": ...}``;
``tests/backends.py`` makes them for the servers it starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from flask import Flask, request, session

from flask_plurality import Plurality, current_profile, plurality_required
from flask_plurality.tokens import unverified_claims, with_header

#: Every family the conformance suite runs against, in docs/stores.rst's table order.
FAMILIES = (
    "cachelib-file",
    "cachelib-redis",
    "cachelib-memcached",
    "redis",
    "redis-password",
    "redis-socket",
    "redis-sentinel",
    "redis-cluster",
    "sqlalchemy-postgresql",
    "sqlalchemy-mariadb",
    "memcached",
)

#: Flask-Session's own options, each run over the guarantees (tests/test_session_options.py)
#: on the files and Redis families: how sessions are named, signed, encoded and kept.
OPTIONS: dict[str, dict[str, Any]] = {
    "signer": {"SESSION_USE_SIGNER": True, "SECRET_KEY": "conformance-signer-key"},
    "permanent": {"SESSION_PERMANENT": True},
    "not-permanent": {"SESSION_PERMANENT": False},
    "no-refresh": {"SESSION_REFRESH_EACH_REQUEST": False},
    "custom-prefix": {"SESSION_KEY_PREFIX": "custom:"},
    "id-length-64": {"SESSION_ID_LENGTH": 64},
    "msgpack": {"SESSION_SERIALIZATION_FORMAT": "msgpack"},
    "json": {"SESSION_SERIALIZATION_FORMAT": "json"},
}

#: How an app gets cachelib's size threshold of 500 on files (spec ``"threshold"``):
#: SESSION_TYPE "cachelib" without a cache (Flask-Session builds one in ./flask_session),
#: SESSION_TYPE "filesystem", or ``FileSystemCache(dir)`` as Flask-Session's docs show.
THRESHOLDS = ("cachelib-default", "filesystem", "filesystemcache")

#: Store clients give up after this long: an outage is a 503 soon, not a hung request.
CLIENT_TIMEOUT = 1.0


def _redis_client(spec: dict[str, Any]) -> Any:
    import redis

    timeouts = {"socket_timeout": CLIENT_TIMEOUT, "socket_connect_timeout": CLIENT_TIMEOUT}
    if spec["family"] == "redis-sentinel":
        from redis.sentinel import Sentinel

        sentinel = Sentinel([tuple(s) for s in spec["sentinels"]], sentinel_kwargs=timeouts, **timeouts)
        return sentinel.master_for(spec["service"], **timeouts)
    if spec["family"] == "redis-cluster":
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        nodes = [ClusterNode(host, port) for host, port in spec["startup"]]
        # One retry (after reading the slot map again), as docs/deployment.rst advises:
        # a node that died is a 503 within seconds, not after four rounds of timeouts.
        return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 1), **timeouts)
    if spec["family"] == "redis-socket":
        return redis.Redis(unix_socket_path=spec["path"], db=0, **timeouts)
    return redis.Redis.from_url(spec["url"], **timeouts)


def _memcached_client(server: str, **kwargs: Any) -> Any:
    """pymemcache's pooled (thread-safe) client with its defaults (``noreply``, Nagle):
    as a user writes it; the extension must cope with those defaults."""
    from pymemcache.client.base import PooledClient

    host, port = server.rsplit(":", 1)
    return PooledClient((host, int(port)), connect_timeout=CLIENT_TIMEOUT, timeout=CLIENT_TIMEOUT, **kwargs)


def session_config(app: Flask, spec: dict[str, Any]) -> None:
    """Point ``app``'s Flask-Session at the backend ``spec`` describes (before ``init_app``)."""
    family, prefix = spec["family"], spec.get("prefix", "")
    app.config.update(SESSION_KEY_PREFIX=f"{prefix}session:", PLURALITY_KEY_PREFIX=f"{prefix}plurality:")
    if family == "cachelib-file":
        from cachelib.file import FileSystemCache

        threshold = spec.get("threshold")
        if threshold == "cachelib-default":  # the spec's path is ./flask_session, where it goes
            app.config.update(SESSION_TYPE="cachelib")
        elif threshold == "filesystem":
            app.config.update(SESSION_TYPE="filesystem", SESSION_FILE_DIR=spec["path"])
        elif threshold == "filesystemcache":
            app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(spec["path"]))
        else:
            app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(spec["path"], threshold=0))
    elif family == "cachelib-redis":
        from cachelib.redis import RedisCache

        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=RedisCache(host=_redis_client(spec)))
    elif family == "cachelib-memcached":
        from cachelib.memcached import MemcachedCache
        from pymemcache import serde

        client = _memcached_client(spec["server"], serde=serde.pickle_serde)
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=MemcachedCache(client))
    elif family.startswith("redis"):
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=_redis_client(spec))
    elif family.startswith("sqlalchemy"):
        from flask_sqlalchemy import SQLAlchemy

        app.config.update(
            SQLALCHEMY_DATABASE_URI=spec["url"],
            SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, "pool_size": 8, "max_overflow": 8},
            SESSION_TYPE="sqlalchemy",
            SESSION_SQLALCHEMY_TABLE=spec.get("table", "sessions"),
        )
        db = SQLAlchemy()
        db.init_app(app)
        app.config["SESSION_SQLALCHEMY"] = db
    elif family == "memcached":
        app.config.update(SESSION_TYPE="memcached", SESSION_MEMCACHED=_memcached_client(spec["server"]))
    else:
        raise ValueError(f"unknown backend family {family!r}")


def dispose(app: Flask) -> None:
    """Close what the app opened to its store (SQL connection pools above all)."""
    db = app.config.get("SESSION_SQLALCHEMY")
    if db is not None:
        with app.app_context():
            db.engine.dispose()
    cache = app.config.get("SESSION_CACHELIB")
    clients = [app.config.get("SESSION_REDIS"), app.config.get("SESSION_MEMCACHED")]
    clients += [getattr(cache, name, None) for name in ("_client", "_write_client", "_read_client")]
    for client in clients:
        close = getattr(client, "close", None)
        if close is not None:
            close()


def build(spec: dict[str, Any], plurality_config: dict[str, Any], instance_path: str, **config: Any) -> Flask:
    """An app on ``spec``'s backend with the routes the conformance tests use."""
    app = Flask("backendapp", instance_path=instance_path)
    app.config.update(TESTING=True, PLURALITY_TIMEOUT=2.0, **plurality_config)
    session_config(app, spec)
    app.config.update(config)
    with warnings.catch_warnings():
        # Flask-Session warns about what some options are (deprecated, a default cache).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="flask_session")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="flask_session")
        Plurality(app)

    @app.get("/protected")
    @plurality_required
    def protected() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/bare")
    def bare() -> dict[str, Any]:
        """The benchmarks' baseline: a hand-written check of the session (``/guarded``
        with the same body is the decorator's cost)."""
        if "_plurality" not in session:
            return {"error": "login_required"}
        return {"ok": True}

    @app.get("/guarded")
    @plurality_required
    def guarded() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/bare-user")
    def bare_user() -> dict[str, Any]:
        """The hand-written check reading the user's id (``/protected``'s body) from the session."""
        login = session.get("_plurality")
        if login is None:
            return {"error": "login_required"}
        # The stored login keeps the user's id in the token's claims (or, when Plurality's
        # answer had another one, in "u"): read it as a hand-written check would.
        user = login.get("u") or {}
        return {"id": user.get("id") or unverified_claims(with_header(login["t"]))["id"]}

    @app.get("/slow")
    @plurality_required
    def slow() -> dict[str, Any]:
        """Let in, then hold the request until the test says so: ``entered`` and
        ``release`` are files (the test and the servers are different processes)."""
        Path(request.args["entered"]).touch()
        release = Path(request.args["release"])
        deadline = time.monotonic() + 15
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        return {"id": current_profile.id}

    @app.post("/note")
    def note() -> dict[str, Any]:
        """A view of the app's own that writes to the session."""
        session["note"] = request.args.get("value", "x")
        return {"note": session["note"]}

    @app.get("/note")
    def read_note() -> dict[str, Any]:
        return {"note": session.get("note")}

    @app.post("/revoke")
    def revoke() -> dict[str, Any]:
        """Test-only: an admin action, ``plurality.revoke_user`` for the posted user id."""
        app.extensions["plurality"].revoke_user(str(request.get_json()["user_id"]))
        return {"revoked": True}

    @app.get("/pid")
    def pid() -> dict[str, Any]:
        return {"pid": os.getpid()}

    return app


def main() -> None:
    """Serve the app described by ``$BACKEND_APP`` (JSON) on a free loopback port, print
    ``PORT <n>`` once listening, and serve until killed."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    options = json.loads(os.environ["BACKEND_APP"])
    app = build(options["spec"], options["plurality"], options["instance_path"], **options.get("config", {}))

    class Quiet(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    print(f"PORT {server.port}", flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
