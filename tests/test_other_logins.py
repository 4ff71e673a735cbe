"""Other login systems beside Plurality's: ``plurality.regenerate_session()`` for an app's
own login code, Flask-Login's signals followed for the app ``init_app`` set up only, an
app without Flask-Login installed, and a store that fails while a login changes its id."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from backends import Proxy
from flask import Flask, session
from flask_login import LoginManager, UserMixin, login_user
from flask_session import Session
from helpers import AppFactory, error_of, redis_url_or_skip, stored_session

ROOT = Path(__file__).resolve().parents[1]


class Member(UserMixin):
    def __init__(self, id: str) -> None:
        self.id = id


def with_own_login(app: Flask) -> Flask:
    """The app's own login code: a session key, then ``regenerate_session()``."""

    @app.get("/visit")
    def visit() -> dict[str, Any]:
        session["seen"] = True
        return {}

    @app.post("/own-login")
    def own_login() -> dict[str, Any]:
        session["member"] = "m-1"
        app.extensions["plurality"].regenerate_session()
        return {}

    return app


def sid(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def test_regenerate_session_gives_another_login_system_a_new_id(make_app: AppFactory) -> None:
    app = with_own_login(make_app())
    client = app.test_client()
    client.get("/visit")
    planted = sid(client)
    assert client.post("/own-login").status_code == 200
    assert sid(client) != planted
    assert stored_session(app, planted) is None
    assert stored_session(app, sid(client)) == {"seen": True, "member": "m-1"}  # a browser-session cookie


def test_regenerate_session_leaves_an_empty_session_and_needs_a_request(make_app: AppFactory) -> None:
    app = make_app()
    plurality = app.extensions["plurality"]
    with app.test_request_context():
        plurality.regenerate_session()  # nothing to steal: no id is made or stored
        assert not session
    with app.app_context(), pytest.raises(RuntimeError, match="needs a request"):
        plurality.regenerate_session()


def test_flask_login_is_followed_only_on_the_app_init_app_set_up(make_app: AppFactory, tmp_path: Path) -> None:
    ours = make_app()
    other = Flask("other")  # Flask-Session without Plurality: its sessions are not ours to touch
    other.config.update(SESSION_TYPE="cachelib", SECRET_KEY="x")
    from cachelib.file import FileSystemCache

    other.config["SESSION_CACHELIB"] = FileSystemCache(str(tmp_path / "other"), threshold=0)
    Session(other)
    for app in (ours, other):
        manager = LoginManager(app)
        manager.user_loader(Member)

        @app.get("/visit", endpoint="visit")
        def visit() -> dict[str, Any]:
            session["seen"] = True
            return {}

        @app.post("/password-login", endpoint="password_login")
        def password_login() -> dict[str, Any]:
            login_user(Member("m-1"))
            return {}

    changed = {}
    for app in (ours, other):
        client = app.test_client()
        client.get("/visit")
        before = sid(client)
        client.post("/password-login")
        changed[app.name] = sid(client) != before
    assert changed == {"testapp": True, "other": False}


def test_without_flask_login_installed_the_extension_works(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["flask_login"] = None  # not installed: importing it raises ImportError
        from flask import Flask
        from flask_plurality import Plurality
        from flask_plurality.testing import FakePlurality, config_for, store_config
        with FakePlurality() as fake:
            app = Flask("app")
            app.config.update(TESTING=True, **config_for(fake), **store_config(sys.argv[1]))
            Plurality(app)
            client = app.test_client()
            same = {"Origin": "http://localhost"}
            assert client.post("/plurality/login", json={"token": fake.issue_token()}, headers=same).status_code == 200
            assert client.get("/plurality/session").status_code == 200
            assert client.post("/plurality/logout", json={}, headers=same).status_code == 200
            assert client.get("/plurality/session").status_code == 401
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_importing_the_package_does_not_import_flask_login() -> None:
    code = "import sys, flask_plurality; print('flask_login' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# -- a store that fails while a login changes its id ------------------------------------------


@pytest.fixture
def proxied_redis() -> Iterator[tuple[Proxy, redis.Redis]]:
    """A Redis client for the sessions that reaches the test database through a
    :class:`Proxy`, which a test cuts to take the store away."""
    admin = redis.Redis.from_url(redis_url_or_skip())
    admin.flushdb()
    where = admin.connection_pool.connection_kwargs
    front = Proxy(("127.0.0.1", int(where.get("port", 6379))))
    sessions = redis.Redis(
        host="127.0.0.1", port=front.port, db=where.get("db", 0), socket_timeout=1, socket_connect_timeout=1
    )
    yield front, sessions
    sessions.close()
    front.close()
    admin.flushdb()
    admin.close()


@pytest.mark.redis
def test_a_login_whose_old_id_cannot_be_deleted_is_refused_with_a_503(
    make_app: AppFactory, proxied_redis: tuple[Proxy, redis.Redis]
) -> None:
    proxy, sessions = proxied_redis
    app = make_app(session_redis=sessions)
    manager = LoginManager(app)
    manager.user_loader(Member)

    @app.get("/visit")
    def visit() -> dict[str, Any]:
        session["seen"] = True
        return {}

    @app.post("/password-login")
    def password_login() -> dict[str, Any]:
        proxy.cut()  # the store goes away after the session was read
        login_user(Member("m-1"), remember=True)
        return {"welcome": True}

    client = app.test_client()
    client.get("/visit")
    planted = sid(client)
    response = client.post("/password-login")
    error_of(response, 503, "session_store_unavailable")
    assert "Set-Cookie" not in response.headers  # neither a session id nor a remember-me cookie
    proxy.restore()
    assert stored_session(app, planted) == {"seen": True}  # not logged in
