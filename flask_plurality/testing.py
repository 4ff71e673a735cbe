"""Testing an app that uses flask-plurality: a test client that logs in through the
real flow, a live-server helper, and (re-exported from :mod:`flask_plurality.fake`)
the stand-in for Plurality's validate API.

Run the stand-in on its own with ``python -m flask_plurality.testing``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import ssl
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cachelib import FileSystemCache
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from .fake import _RANDOM, FakePlurality, ValidateCall, _Keep, _QuietHandler, main, shared_fake
from .profile import Profile
from .stores.files import SessionFormatSerializer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment
    from werkzeug.datastructures import Headers

__all__ = [
    "FakePlurality",
    "PluralityTestClient",
    "ValidateCall",
    "config_for",
    "live_server",
    "main",
    "shared_fake",
    "store_config",
]


@contextlib.contextmanager
def live_server(
    app: WSGIApplication, *, access_log: bool = False, ssl_context: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Serve ``app`` on a free loopback port (werkzeug's threaded server, in a thread)
    and yield its base URL: for browser tests and tests that need real concurrency.
    With ``ssl_context``, over HTTPS."""
    handler = None if access_log else _QuietHandler
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=handler, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if ssl_context is not None else 'http'}://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- testing an app that uses flask-plurality -------------------------------------------

# Stand-ins that PluralityTestClient may find by URL (the pytest fixture registers its own).
_tracked: dict[str, FakePlurality] = {}
_tracked_lock = threading.Lock()


@contextlib.contextmanager
def _track(fake: FakePlurality) -> Iterator[FakePlurality]:
    """Let :meth:`PluralityTestClient.login_as` find ``fake`` from an app's API URL."""
    url = fake.url
    with _tracked_lock:
        _tracked[url] = fake
    try:
        yield fake
    finally:
        with _tracked_lock:
            if _tracked.get(url) is fake:
                del _tracked[url]


def config_for(fake: FakePlurality) -> dict[str, Any]:
    """The config keys that point an app at ``fake``: set them before ``init_app``.

    ``PLURALITY_FAKE`` is off in them: an app that reads ``FLASK_PLURALITY_FAKE=true``
    from the environment (left exported after trying the quickstart) would otherwise
    start a stand-in of its own and leave ``fake`` unasked."""
    return {
        "PLURALITY_FAKE": False,
        "PLURALITY_API_URL": fake.url,
        "PLURALITY_CLIENT_ID": fake.client_id,
        "PLURALITY_CLIENT_SECRET": fake.client_secret,
    }


def store_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The config keys for a session store in ``directory``: the file store ``init_app``
    sets up by default, somewhere other than the app's instance folder.

    For tests: sessions, failed-login counters, cached answers and revocations live in
    the session store, so a store of each test's own keeps them from crossing tests and
    runs (the ``plurality_config`` fixture uses it). Entries are written with
    Flask-Session's serializer in the app's ``SESSION_SERIALIZATION_FORMAT`` (msgpack by
    default), the one Redis, memcached and SQL sessions go through, so a value the app's
    real store would refuse makes the test fail with the same 500."""
    cache = FileSystemCache(os.fspath(directory), threshold=0, mode=0o600)
    # Sessions encoded as Flask-Session encodes them for Redis, memcached and SQL (msgpack,
    # or the app's SESSION_SERIALIZATION_FORMAT), not pickle: a value production refuses
    # fails here too.
    cache.serializer = SessionFormatSerializer()
    return {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": cache}


class PluralityTestClient(FlaskClient):
    """A Flask test client that logs in the way a browser does, through the real flow.

    :meth:`login_as` mints a token with the stand-in, posts it to the app's
    ``/login`` as the page would (JSON, the app's own ``Origin``), and the app
    validates it over HTTP with the stand-in. Nothing writes the session behind the
    extension's back, so a test fails when a real login would.

    Use it like Flask-Login's ``FlaskLoginClient``: ``app.test_client_class =
    PluralityTestClient``. The stand-in is the one passed as ``app.test_client(fake=...)``,
    else the app's own in fake mode (``PLURALITY_FAKE``), else the ``plurality_fake``
    fixture's whose URL is the app's ``PLURALITY_API_URL``.
    """

    def __init__(self, *args: Any, fake: FakePlurality | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The stand-in that mints tokens; ``None``: found from the app (see the class).
        self.plurality_fake = fake
        #: The token of the last :meth:`login_as`, e.g. to ``plurality_fake.revoke()`` it.
        self.plurality_token: str | None = None

    def run_wsgi_app(self, environ: WSGIEnvironment, buffered: bool = False) -> tuple[Iterable[bytes], str, Headers]:
        """Each request in a fresh :class:`contextvars.Context`, as a server runs it: its
        own app context, hence its own ``g``, even while the test holds an app context
        across requests (``self.ctx = app.app_context(); self.ctx.push()`` in ``setUp``),
        which Flask would otherwise reuse and share between clients. ``with client:``
        still keeps the last request's context (Flask pushes it again after the request)."""
        return contextvars.Context().run(super().run_wsgi_app, environ, buffered)

    def _stand_in(self) -> FakePlurality:
        if self.plurality_fake is not None:
            return self.plurality_fake
        app = self.application
        state = app.extensions.get("plurality.state")
        if state is None:
            raise RuntimeError("flask-plurality is not set up on this app: call Plurality.init_app(app) first.")
        if getattr(state, "fake", None) is not None:
            return state.fake  # type: ignore[no-any-return]
        url = str(app.config.get("PLURALITY_API_URL", "")).rstrip("/")
        with _tracked_lock:
            fake = _tracked.get(url)
        if fake is None:
            raise RuntimeError(
                f"No stand-in serves PLURALITY_API_URL={url!r}: use the plurality_fake fixture and "
                "plurality_config, set PLURALITY_FAKE = True (FLASK_PLURALITY_FAKE=true), "
                "or pass app.test_client(fake=...)."
            )
        return fake

    def _post_json(self, endpoint: str, body: dict[str, Any]) -> TestResponse:
        app = self.application
        prefix = str(app.config["PLURALITY_URL_PREFIX"]).rstrip("/")
        origin = f"{app.config['PREFERRED_URL_SCHEME']}://{app.config.get('SERVER_NAME') or 'localhost'}"
        return self.post(f"{prefix}/{endpoint}", json=body, headers={"Origin": origin})

    def login_as(
        self,
        email: str | None = "user@example.com",
        user_id: str | None = None,
        *,
        ttl: int = 86400,
        auth_address: str | _Keep | None = _RANDOM,
        proxy_address: str | _Keep | None = _RANDOM,
    ) -> Profile:
        """Log in as a Plurality user through the app's real ``/login``; return the profile.

        Without ``user_id`` the id is derived from ``email``, so logging in twice with the
        same email is the same user (``email=None`` is a new wallet-only user each time).
        Raises :class:`AssertionError` with the app's answer when the login fails.
        """
        if self._cookies is None:
            raise RuntimeError("login_as() needs cookies: create the client with use_cookies=True.")
        fake = self._stand_in()
        if user_id is None and email is not None:
            user_id = fake.user_id_for(email)  # the id demo mode's /fake/token gives this email
        client_id = str(self.application.config.get("PLURALITY_CLIENT_ID") or fake.client_id)
        token = fake.issue_token(
            user_id,
            email,
            ttl,
            client_id=client_id if fake.knows_client(client_id) else fake.client_id,
            auth_address=auth_address,
            proxy_address=proxy_address,
        )
        response = self._post_json("login", {"token": token})
        body = response.get_json(silent=True)
        if response.status_code != 200 or not isinstance(body, dict):
            raise AssertionError(f"login_as(): the app answered {response.status} {response.get_data(as_text=True)}")
        profile = Profile.from_session(body.get("profile"))
        if profile is None:
            raise AssertionError(f"login_as(): no profile in the app's answer {body!r}")
        self.plurality_token = token
        return profile

    def logout(self) -> None:
        """Log out through the app's real ``/logout``, as the page would."""
        response = self._post_json("logout", {})
        if response.status_code != 200:
            raise AssertionError(f"logout(): the app answered {response.status} {response.get_data(as_text=True)}")
        self.plurality_token = None


if __name__ == "__main__":
    raise SystemExit(main())
