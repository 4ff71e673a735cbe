"""A stand-in for Plurality's token validation API, for tests and demos.

Plurality signs its tokens with a secret no application ever sees, so a test
suite cannot mint real ones, and calling the real service from CI is slow and
flaky. :class:`FakePlurality` is a real HTTP server on loopback that signs its
own tokens and answers ``/api/user/validate`` the way the real one does (same
status codes, same plain-text versus JSON bodies, same check order), so the
extension's client code runs unchanged against it. It can also misbehave on
request (timeouts, resets, proxy errors, drip-fed or huge answers, gzip bombs,
redirects, odd ``Retry-After`` values) to exercise the unhappy paths.

Run it on its own with ``python -m flask_plurality.testing`` (or ``flask plurality fake-server``).

Demo mode (``PLURALITY_FAKE``) runs one per instance folder (:func:`shared_fake`): its
signing key, users and token links live in a small SQLite file there instead of in
memory, so every process serving that folder (gunicorn workers, a dev server the
reloader restarted) accepts the tokens any of them minted. A forked child (gunicorn
``--preload``) serves on the socket it inherited, and never waits on the parent's thread.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import html
import http
import itertools
import json
import os
import secrets
import signal
import socket
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, NoReturn, Self

import jwt
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["FakePlurality", "StandInStateError", "ValidateCall", "main", "shared_fake"]

VALIDATE_PATH: Final = "/api/user/validate"
#: The file in an instance folder that holds demo mode's signing key, users and token links.
STATE_FILE: Final = "plurality-stand-in.sqlite3"

_TEXT: Final = "text/html; charset=utf-8"  # what Express's res.send(string) sends
_JSON: Final = "application/json; charset=utf-8"
_FAULT_KINDS: Final = frozenset(
    {
        "timeout",
        "reset",
        "garbage",
        "wrong_shape",
        "no_user",
        "drip",
        "slow_headers",
        "huge",
        "huge_chunked",
        "gzip",
        "redirect",
    }
)


class _Keep:
    """Marker for "leave this field as it is" (or random for a new user)."""

    def __repr__(self) -> str:
        return "<random>"


_RANDOM: Final = _Keep()


@dataclasses.dataclass(frozen=True)
class ValidateCall:
    """One request received on the validate path, for tests to assert on."""

    method: str
    auth_ok: bool
    client_id: str | None
    token: str | None
    outcome: int
    """The status answered; 0 when no HTTP answer was sent (reset, timeout)."""


@dataclasses.dataclass
class _User:
    id: str
    email: str | None
    auth_address: str | None
    proxy_address: str | None


@dataclasses.dataclass(frozen=True)
class _Fault:
    kind: int | str
    retry_after: int | str | None


class _DropConnection(ConnectionResetError):
    """Raised from the WSGI app so werkzeug drops the request without answering.

    werkzeug treats a ``ConnectionError`` from the app as "client went away" and
    writes nothing, which is exactly the "no HTTP answer" we want.
    """


class _QuietHandler(WSGIRequestHandler):
    """No access log: tests stay quiet, and nothing about requests is printed."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _random_address() -> str:
    return "0x" + secrets.token_hex(20)


def _json_bytes(value: object) -> bytes:
    # JSON.stringify's exact bytes: compact, non-ASCII left as is.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _express_404(method: str, path: str) -> Response:
    """Express's default "no route" page (finalhandler), byte for byte."""
    message = html.escape(f"Cannot {method} {path}", quote=True)
    body = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        "<title>Error</title>\n"
        "</head>\n"
        "<body>\n"
        f"<pre>{message}</pre>\n"
        "</body>\n"
        "</html>\n"
    )
    response = Response(body, 404, content_type=_TEXT)
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _head(status: str, headers: Iterable[tuple[str, str]] | Any, extra: dict[str, str]) -> bytes:
    """An HTTP/1.1 status line and header section, ending the connection after the body."""
    items = headers.items() if hasattr(headers, "items") else headers
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{k}: {v}" for k, v in items if k.lower() not in ("content-length", "transfer-encoding")]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _proxy_page(status: int, retry_after: int | str | None) -> Response:
    """The small HTML error page a proxy in front of the API would send."""
    try:
        title = f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    response = Response(body, status, content_type="text/html")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _parse_basic(header: str | None) -> tuple[bool, str | None, str | None]:
    """Split an Authorization header into (present, client id, secret).

    ``present`` is False when there is no Basic header at all (Plurality's "no Basic header" answer);
    id or secret is None when the header does not decode to both ("no id/secret").
    """
    # Upstream checks ``startsWith('Basic ')`` (case-sensitive; Node strips the
    # header's trailing spaces) and then ``split(':')``: a secret containing ``:``
    # arrives cut at its first ``:``, a client id containing one never matches.
    header = header.strip() if header is not None else None
    if header is None or not header.startswith("Basic "):
        return False, None, None
    try:
        decoded = base64.b64decode(header[len("Basic ") :].strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return True, None, None
    parts = decoded.split(":")
    client_id = parts[0] or None
    secret = parts[1] if len(parts) > 1 and parts[1] else None
    return True, client_id, secret


class StandInStateError(OSError):
    """The stand-in's state file cannot be read or written (a read-only or full disk,
    a file that is not its database). The message names the file, never a key."""


Address = str | _Keep | None


def _addresses(
    current: tuple[str | None, str | None] | None, auth: Address, proxy: Address
) -> tuple[str | None, str | None]:
    """A user's wallet addresses after a login: the ones given, else the current ones,
    else random ones for a new user."""
    old = current or (_random_address(), _random_address())
    return (old[0] if isinstance(auth, _Keep) else auth, old[1] if isinstance(proxy, _Keep) else proxy)


class _MemoryBook:
    """The stand-in's records in this process's memory: what tests and the
    ``fake-server`` command use; gone with the process."""

    shared: Final = False

    def __init__(self, client_id: str, client_secret: str, signing_key: str | None) -> None:
        self.signing_key = signing_key or secrets.token_urlsafe(48)
        self._lock = threading.Lock()
        self._clients: dict[str, str] = {client_id: client_secret}
        self._users: dict[str, _User] = {}
        # uniqueSessionId -> (client id, user id): the user-to-client-app link
        self._links: dict[str, tuple[str, str]] = {}
        self._revoked: set[str] = set()

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def add_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._clients[client_id] = client_secret

    def client_secret(self, client_id: str) -> str | None:
        with self._lock:
            return self._clients.get(client_id)

    def record_login(
        self, client: str, uid: str, email: str | None, auth: Address, proxy: Address, session_id: str, exp: int
    ) -> None:
        with self._lock:
            if client not in self._clients:
                raise ValueError(f"unknown client id {client!r}; add_client() it first")
            user = self._users.get(uid)
            current = (user.auth_address, user.proxy_address) if user is not None else None
            auth_address, proxy_address = _addresses(current, auth, proxy)
            self._users[uid] = _User(uid, email, auth_address, proxy_address)
            self._links[session_id] = (client, uid)

    def link(self, session_id: str) -> tuple[str, _User] | None:
        with self._lock:
            link = self._links.get(session_id)
            user = self._users.get(link[1]) if link else None
            return (link[0], user) if link is not None and user is not None else None

    def revoke(self, token: str) -> None:
        with self._lock:
            self._revoked.add(token)

    def is_revoked(self, token: str) -> bool:
        with self._lock:
            return token in self._revoked


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT, auth_address TEXT, proxy_address TEXT);
CREATE TABLE IF NOT EXISTS links (
    session_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT NOT NULL, exp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS links_by_exp ON links (exp);
CREATE TABLE IF NOT EXISTS revoked (token_hash TEXT PRIMARY KEY);
"""


class _FileBook:
    """The stand-in's records in a SQLite file (mode 0600), shared by every process
    that opens it: the signing key is made once, by whichever process comes first.

    A connection per operation: nothing to carry across a fork or between threads,
    and SQLite's own locking (with a wait) orders the writers of several processes.
    """

    shared: Final = True

    def __init__(self, path: str, client_id: str, client_secret: str, signing_key: str | None) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # never readable by others
        except OSError as exc:
            raise StandInStateError(f"cannot create the stand-in's state file {path}: {exc.strerror}") from None
        with self._db() as db:
            db.executescript(_SCHEMA)
        with self._db(write=True) as db:
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('signing_key', ?)", (signing_key or secrets.token_urlsafe(48),)
            )
            db.execute("INSERT OR IGNORE INTO clients VALUES (?, ?)", (client_id, client_secret))
            stored = str(db.execute("SELECT value FROM meta WHERE name = 'signing_key'").fetchone()[0])
        if signing_key is not None and not hmac.compare_digest(stored.encode(), signing_key.encode()):
            raise ValueError(f"signing_key differs from the one kept in {path}")
        self.signing_key = stored

    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            try:
                # No flush to disk per commit: an OS crash may lose a demo login, never the app's data.
                db.execute("PRAGMA synchronous=OFF")
                if write:
                    db.execute("BEGIN IMMEDIATE")
                yield db
                if write:
                    db.execute("COMMIT")
            finally:
                db.close()  # without COMMIT: rolled back
        except sqlite3.Error as exc:
            raise StandInStateError(f"the stand-in's state file {self.path} cannot be used: {exc}") from None

    def after_fork(self) -> None:
        pass

    def add_client(self, client_id: str, client_secret: str) -> None:
        with self._db(write=True) as db:
            db.execute("INSERT OR REPLACE INTO clients VALUES (?, ?)", (client_id, client_secret))

    def client_secret(self, client_id: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT secret FROM clients WHERE id = ?", (client_id,)).fetchone()
        return None if row is None else str(row[0])

    def record_login(
        self, client: str, uid: str, email: str | None, auth: Address, proxy: Address, session_id: str, exp: int
    ) -> None:
        with self._db(write=True) as db:
            if db.execute("SELECT 1 FROM clients WHERE id = ?", (client,)).fetchone() is None:
                raise ValueError(f"unknown client id {client!r}; add_client() it first")
            row = db.execute("SELECT auth_address, proxy_address FROM users WHERE id = ?", (uid,)).fetchone()
            auth_address, proxy_address = _addresses(row, auth, proxy)
            db.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)", (uid, email, auth_address, proxy_address))
            # An expired token is refused before its link is looked at: its link can go.
            db.execute("DELETE FROM links WHERE exp < ?", (int(time.time()),))
            db.execute("INSERT INTO links VALUES (?, ?, ?, ?)", (session_id, client, uid, exp))

    def link(self, session_id: str) -> tuple[str, _User] | None:
        with self._db() as db:
            row = db.execute(
                "SELECT links.client_id, users.id, users.email, users.auth_address, users.proxy_address "
                "FROM links JOIN users ON users.id = links.user_id WHERE links.session_id = ?",
                (session_id,),
            ).fetchone()
        return None if row is None else (str(row[0]), _User(*row[1:]))

    def revoke(self, token: str) -> None:
        with self._db(write=True) as db:
            db.execute("INSERT OR IGNORE INTO revoked VALUES (?)", (_digest(token),))

    def is_revoked(self, token: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM revoked WHERE token_hash = ?", (_digest(token),)).fetchone() is not None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


_Book = _MemoryBook | _FileBook


class FakePlurality:
    """Plurality's validate API on a loopback port, with tokens it signs itself.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    Attributes tests may change while it runs: ``latency`` (seconds added
    before every answer), ``legacy`` (answer the older ``{"user": ...}``
    shape), ``methods`` (which methods the validate route accepts), and the
    sizes and pace of the hostile faults: ``drip_interval`` (seconds between
    two bytes of ``"drip"`` and ``"slow_headers"``), ``huge_size`` (bytes of
    ``"huge"``) and ``gzip_size`` (bytes a ``"gzip"`` bomb inflates to).
    """

    #: A UUID, as Plurality's client ids are (a published demo value, not a secret).
    DEMO_CLIENT_ID: Final = "9a3a4bda-bbc5-46e4-8f42-2e4deca35a31"
    DEMO_CLIENT_SECRET: Final = "demo-secret"  # noqa: S105 - published demo value

    def __init__(
        self,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        signing_key: str | None = None,
        hang_seconds: float = 30.0,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.host = host
        self.port = port
        if signing_key is not None and len(signing_key.encode()) < 32:
            # PyJWT warns about short HMAC keys, and that warning would turn
            # into an error in a suite run with -W error, far from the cause.
            raise ValueError("signing_key must be at least 32 bytes")
        # Users, token links, revocations and clients: in memory, or in ``state_file``
        # for every process that opens it (then the signing key is the file's).
        self._book: _Book = (
            _MemoryBook(client_id, client_secret, signing_key)
            if state_file is None
            else _FileBook(os.fspath(state_file), client_id, client_secret, signing_key)
        )
        #: The HS256 key tokens are signed with; tests may use it to forge
        #: tokens the real service could have issued (odd payloads etc.).
        self.signing_key = self._book.signing_key
        self.hang_seconds = hang_seconds
        self.latency = 0.0
        self.legacy = False
        self.methods: set[str] = {"POST", "GET"}
        self.drip_interval = 0.25
        self.huge_size = 10 * 1024 * 1024
        self.gzip_size = 256 * 1024 * 1024

        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._calls: list[ValidateCall] = []
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._owner = 0  # the process whose thread serves ``_server``

    def __repr__(self) -> str:
        # Never show the secret or the signing key.
        where = self.url if self._server is not None else "stopped"
        return f"<FakePlurality {self.client_id!r} {where}>"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self for chaining."""
        with self._lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            thread = self._serve(self._make_server(self.port))
        thread.start()
        return self

    def _make_server(self, port: int, fd: int | None = None) -> BaseWSGIServer:
        """The stand-in's HTTP server on ``port`` (on the listening socket ``fd``, if given).

        The listening socket is non-blocking: after a fork, several processes wait on it,
        and the one that is told a connection is there may find that another took it. A
        blocking ``accept`` would then wait for the next connection, and ``stop()``
        (``shutdown``) with it, for ever: a gunicorn ``--preload`` master that never
        exits. Non-blocking, that ``accept`` fails at once and the loop goes on."""
        server = make_server(self.host, port, self._wsgi, threaded=True, request_handler=_QuietHandler, fd=fd)
        server.socket.setblocking(False)
        return server

    def _serve(self, server: BaseWSGIServer) -> threading.Thread:
        """Make ``server`` this process's; the thread that will serve it (not started)."""
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakePlurality:{server.port}",
            daemon=True,
        )
        self._server, self._thread, self._owner = server, thread, os.getpid()
        with _running_lock:
            _running.add(self)
        return thread

    def _after_fork(self) -> None:
        """In a forked child (gunicorn ``--preload``): the parent's serving thread did not
        come along, and a lock it held stays held. Fresh locks; and a stand-in whose records
        are in a file serves the inherited socket here too, so a login works whichever
        process accepts the call. One in memory leaves serving to the parent: this copy of
        its records would differ from the parent's."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._book.after_fork()
        inherited = self._server
        if inherited is None or not self._book.shared:
            return
        server = self._make_server(inherited.port, fd=inherited.fileno())  # a duplicate: the copy is closed
        inherited.socket.close()
        self._serve(server).start()

    def stop(self) -> None:
        """Stop serving; returns promptly even while a call is hanging."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = None
            self._thread = None
        with _running_lock:
            _running.discard(self)
        self._stopping.set()  # wakes hanging "timeout" faults and latency waits
        if server is not None and self._owner != os.getpid():
            # Inherited through a fork and served by the parent: shutdown() would wait
            # forever for a thread that is not in this process. Close this copy only.
            server.socket.close()
            return
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, what ``PLURALITY_API_URL`` should be set to."""
        server = self._server
        if server is not None:
            port = server.port
        elif self.port:
            port = self.port
        else:
            raise RuntimeError("FakePlurality has no port until start() is called")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/api"

    @property
    def validate_url(self) -> str:
        """The full URL of the validate route, for calling it directly."""
        return self.url + "/user/validate"

    # -- state tests drive ---------------------------------------------------

    @property
    def shares_state(self) -> bool:
        """Whether users and token links are in a state file, shared with other processes."""
        return self._book.shared

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Register another client app, e.g. to test tokens of another app."""
        self._book.add_client(client_id, client_secret)

    def knows_client(self, client_id: str) -> bool:
        """Whether ``client_id`` is a client app of this stand-in."""
        return self._book.client_secret(client_id) is not None

    @staticmethod
    def user_id_for(email: str) -> str:
        """The user id a demo login with ``email`` gets, the same every time and in every
        process (``/fake/token`` and ``login_as``), as a real account's id would be."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"flask-plurality:{email}"))

    def issue_token(
        self,
        user_id: str | None = None,
        email: str | None = "demo@example.com",
        ttl: int = 86400,
        *,
        client_id: str | None = None,
        auth_address: str | _Keep | None = _RANDOM,
        proxy_address: str | _Keep | None = _RANDOM,
        iat: int | None = None,
    ) -> str:
        """Sign a token as the widget would get it after a login.

        The user record is created or updated (``email``, and the addresses
        when given; left out they keep their value, random for a new user).
        Every token gets its own ``uniqueSessionId``, bound to ``client_id``
        (the default client unless given). A negative ``ttl`` gives a token
        that has already expired.
        """
        client = self.client_id if client_id is None else client_id
        issued_at = int(time.time()) if iat is None else iat
        uid = str(uuid.uuid4()) if user_id is None else user_id
        session_id = str(uuid.uuid4())
        self._book.record_login(client, uid, email, auth_address, proxy_address, session_id, issued_at + ttl)
        payload = {
            "id": uid,
            "uniqueSessionId": session_id,
            "iat": issued_at,
            "exp": issued_at + ttl,
        }
        return jwt.encode(payload, self.signing_key, algorithm="HS256")

    def revoke(self, token: str) -> None:
        """Make upstream answer 403 ``Invalid token`` for this token from now on."""
        self._book.revoke(token)

    def fail_next(self, kind: int | str, *, times: int = 1, retry_after: int | str | None = None) -> None:
        """Answer the next ``times`` validate calls with a fault.

        ``kind``: an HTTP status (500 gives upstream's own JSON error, any other
        a proxy's HTML page; 403 is a gateway's HTML page, not Plurality's
        ``Invalid token``), with ``Retry-After`` when ``retry_after`` is set (an
        int, or any string, sent as it is: ``"²"``, ``"-1"``, an HTTP date...).
        Or one of:

        - ``"timeout"``: hang ``hang_seconds``, then close without answering;
        - ``"reset"``: TCP reset, no answer;
        - ``"garbage"``: 200, not JSON; ``"wrong_shape"``: 200, JSON without a
          user; ``"no_user"``: 200 ``{"success": true, "user": {}}`` (Plurality
          has no row for the user);
        - ``"drip"``: the real answer, its body sent one byte every
          ``drip_interval`` seconds; ``"slow_headers"``: the same with the
          status line and headers dripped too (a client that waits long enough
          gets a good answer);
        - ``"huge"``: 200, a valid answer padded to ``huge_size`` bytes, with a
          ``Content-Length``; ``"huge_chunked"``: the same, chunked, no length;
        - ``"gzip"``: 200 ``Content-Encoding: gzip``, a valid answer padded with
          whitespace to ``gzip_size`` bytes once inflated (a gzip bomb);
        - ``"redirect"``: 307 to this same URL (a client that follows it loops).

        Faults queue up in order.
        """
        if isinstance(kind, bool) or not ((isinstance(kind, int) and 400 <= kind <= 599) or kind in _FAULT_KINDS):
            raise ValueError(f"unknown fault {kind!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.extend([_Fault(kind, retry_after)] * times)

    @property
    def calls(self) -> list[ValidateCall]:
        """A copy of the validate calls received so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        """Forget the calls received so far, e.g. after a test's setup logins."""
        with self._lock:
            self._calls.clear()

    # -- the HTTP side -------------------------------------------------------

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        # Express routes ignore case and one trailing slash by default.
        on_route = path.lower().removesuffix("/") == VALIDATE_PATH
        if not on_route:
            return _express_404(request.method, path)

        if self.latency > 0:
            self._stopping.wait(self.latency)

        # Everything a call records is read up front, whatever it is answered.
        token = self._read_token(request)
        present, client_id, secret = _parse_basic(request.headers.get("Authorization"))
        known_secret = self._book.client_secret(client_id) if client_id else None
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        auth_ok = (
            known_secret is not None
            and secret is not None
            and hmac.compare_digest(known_secret.encode(), secret.encode())
        )

        def record(outcome: int) -> None:
            call = ValidateCall(request.method, auth_ok, client_id, token, outcome)
            with self._lock:
                self._calls.append(call)

        if fault is not None:
            return self._fault(
                request, fault, record, lambda: self._validate(token, present, client_id, secret, known_secret)
            )

        method = request.method
        methods = set(self.methods)
        if method == "HEAD" and "GET" in methods:
            method = "GET"  # Express answers HEAD with the GET route
        if method not in methods:
            record(404)
            return _express_404(request.method, path)

        response = self._validate(token, present, client_id, secret, known_secret)
        record(response.status_code)
        return response

    @staticmethod
    def _read_token(request: Request) -> str | None:
        # express.json() parses only application/json bodies, whatever the
        # method: the docs' curl sends its token with GET.
        if request.mimetype != "application/json":
            return None
        try:
            body: Any = json.loads(request.get_data(cache=False))
        except (ValueError, RecursionError):  # 100 000 "[" nest too deep for json: still a 401
            return None
        token = body.get("token") if isinstance(body, dict) else None
        return token if isinstance(token, str) and token else None

    def _validate(
        self,
        token: str | None,
        present: bool,
        client_id: str | None,
        secret: str | None,
        known_secret: str | None,
    ) -> Response:
        """Upstream's checks, in upstream's order (docs/plurality-api.rst, "The response table")."""
        if token is None:
            return Response("Token is missing", 401, content_type=_TEXT)
        claims = self._verify(token)
        if claims is None:
            return Response("Invalid token", 403, content_type=_TEXT)
        if not present:
            return self._json(401, {"message": "Unauthorized"})
        if client_id is None or secret is None:
            return self._json(401, {"error": "Unauthorized"})
        if known_secret is None:
            return self._json(401, {"error": "Invalid Client ID"})
        if not hmac.compare_digest(known_secret.encode(), secret.encode()):
            return self._json(401, {"error": "Invalid Client Secret"})
        link = self._book.link(str(claims.get("uniqueSessionId")))
        if link is None or link[0] != client_id:
            user_json = None
        else:
            user = link[1]
            user_json = {
                "id": user.id,
                "email": user.email,
                "authAddress": user.auth_address,
                "proxyAddress": user.proxy_address,
            }
        if user_json is None:
            return self._json(401, {"error": "user does not belong to the given client"})
        if self.legacy:
            return self._json(200, {"user": user_json})
        return self._json(200, {"success": True, "user": user_json})

    def _verify(self, token: str) -> dict[str, Any] | None:
        if self._book.is_revoked(token):
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.signing_key,
                algorithms=["HS256"],
                # jsonwebtoken, which upstream uses, does not reject a future iat.
                options={"verify_iat": False},
            )
        except jwt.InvalidTokenError:
            return None
        return claims

    @staticmethod
    def _json(status: int, value: object) -> Response:
        return Response(_json_bytes(value), status, content_type=_JSON)

    def _fault(
        self,
        request: Request,
        fault: _Fault,
        record: Callable[[int], None],
        real_answer: Callable[[], Response],
    ) -> Response:
        kind = fault.kind
        if kind == "reset":
            record(0)
            self._drop(request, reset=True)
        if kind == "timeout":
            record(0)  # recorded now: the client gives up long before we answer
            self._stopping.wait(self.hang_seconds)
            self._drop(request, reset=False)
        if kind == "garbage":
            record(200)
            return Response("<html>oops</html>", 200, content_type=_TEXT)
        if kind == "wrong_shape":
            record(200)
            return self._json(200, {"success": True})
        if kind == "no_user":
            record(200)
            return self._json(200, {"success": True, "user": {}})
        if kind in ("drip", "slow_headers"):
            real = real_answer()
            record(real.status_code)
            self._drip(request, real, headers_too=kind == "slow_headers")
        if kind in ("huge", "huge_chunked"):
            record(200)
            self._huge(request, chunked=kind == "huge_chunked")
        if kind == "gzip":
            record(200)
            self._gzip(request)
        if kind == "redirect":
            record(307)
            return Response("", 307, headers={"Location": request.url}, content_type=_TEXT)
        assert isinstance(kind, int)
        record(kind)
        if kind == 500:
            body = {"error": "An error occurred while processing your request"}
            response = self._json(500, body)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = str(fault.retry_after)
            return response
        return _proxy_page(kind, fault.retry_after)

    def _drip(self, request: Request, answer: Response, *, headers_too: bool) -> NoReturn:
        """Send ``answer`` one byte every ``drip_interval`` seconds (the body only, or
        the status line and headers too). Each byte arrives well within any per-read
        socket timeout: only a client with a deadline for the whole call gives up."""
        body = answer.get_data()
        head = _head(answer.status, answer.headers, {"Content-Length": str(len(body))})
        whole = head + body
        if headers_too:
            pieces: Iterable[bytes] = (whole[i : i + 1] for i in range(len(whole)))
        else:
            pieces = itertools.chain([head], (body[i : i + 1] for i in range(len(body))))
        self._stream(request, pieces, pace=self.drip_interval, first_at_once=not headers_too)

    def _huge(self, request: Request, *, chunked: bool) -> NoReturn:
        """A valid answer for a made-up user, padded to ``huge_size`` bytes."""
        start = _json_bytes({"success": True, "user": {"id": str(uuid.uuid4())}})[:-2] + b',"pad":"'
        end = b'"}}'
        pad = max(0, self.huge_size - len(start) - len(end))
        block = b"x" * 65536

        def body() -> Iterator[bytes]:
            yield start
            for offset in range(0, pad, len(block)):
                yield block[: min(len(block), pad - offset)]
            yield end

        if chunked:
            head = _head("200 OK", {"Content-Type": _JSON}, {"Transfer-Encoding": "chunked"})
            framed = (b"%x\r\n%s\r\n" % (len(piece), piece) for piece in body())
            self._stream(request, itertools.chain([head], framed, [b"0\r\n\r\n"]))
        head = _head("200 OK", {"Content-Type": _JSON}, {"Content-Length": str(len(start) + pad + len(end))})
        self._stream(request, itertools.chain([head], body()))

    def _gzip(self, request: Request) -> NoReturn:
        bomb = _gzip_bomb(self.gzip_size)
        extra = {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}
        head = _head("200 OK", {"Content-Type": _JSON}, extra)
        self._stream(request, itertools.chain([head], (bomb[i : i + 65536] for i in range(0, len(bomb), 65536))))

    def _stream(
        self, request: Request, pieces: Iterable[bytes], *, pace: float = 0, first_at_once: bool = False
    ) -> NoReturn:
        """Write ``pieces`` straight to the socket (``pace`` seconds before each one but
        the first when ``first_at_once``), then hang up, as the answer said it would.

        Straight to the socket, not through werkzeug: the pace is exact, and werkzeug's
        end-of-request drain (a 10 MB read buffer) does not count as the client's memory
        in the tests that measure it.
        """
        sock: socket.socket = request.environ["werkzeug.socket"]
        try:
            for n, piece in enumerate(pieces):
                if pace > 0 and not (first_at_once and n == 0) and self._stopping.wait(pace):
                    break
                sock.sendall(piece)
        except OSError:
            pass  # the client gave up: what a hostile answer is for
        self._drop(request, reset=False)

    @staticmethod
    def _drop(request: Request, *, reset: bool) -> NoReturn:
        """End the connection without an HTTP answer (a RST when ``reset``).

        SO_LINGER 0 makes the final close send RST instead of FIN. Shutting
        down the read side makes werkzeug's keep-alive loop see EOF and close
        the socket right away rather than wait for another request line.
        """
        sock: socket.socket = request.environ["werkzeug.socket"]
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)
            if reset:
                # Only marks the socket closed: the real close (RST) happens
                # when werkzeug closes its reader, before socketserver's own
                # shutdown(SHUT_WR) could send a polite FIN first.
                sock.close()
        except OSError:
            pass
        raise _DropConnection("dropped on purpose by FakePlurality")


_bombs: dict[int, bytes] = {}
_bombs_lock = threading.Lock()


def _gzip_bomb(size: int) -> bytes:
    """A gzip body that inflates to ``size`` bytes of a valid answer padded with
    whitespace (256 MiB shrink to about 254 KiB); made once per size."""
    with _bombs_lock:
        bomb = _bombs.get(size)
        if bomb is None:
            start = _json_bytes({"success": True, "user": {"id": str(uuid.uuid4())}})[:-1]
            pad = max(0, size - len(start) - 1)
            packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip header
            parts = [packer.compress(start)]
            block = b" " * (1 << 20)
            for offset in range(0, pad, len(block)):
                parts.append(packer.compress(block[: min(len(block), pad - offset)]))
            parts += [packer.compress(b"}"), packer.flush()]
            bomb = _bombs[size] = b"".join(parts)
        return bomb


#: Stand-ins serving in this process, for the fork handler.
_running: set[FakePlurality] = set()
_running_lock = threading.Lock()

_shared: dict[str | None, FakePlurality] = {}
_shared_lock = threading.Lock()


def shared_fake(instance_path: str | os.PathLike[str] | None = None) -> FakePlurality:
    """The stand-in behind ``PLURALITY_FAKE``, started on first use and reused after.

    Without ``instance_path``: one per process, its records in memory. With it (what
    ``init_app`` passes, the app's instance folder): one per folder, its signing key,
    users and token links in the folder's ``plurality-stand-in.sqlite3``, so every
    process serving that folder accepts the others' tokens, and a restarted process
    (the debug reloader) still accepts the tokens of the one before it. Raises
    :class:`StandInStateError` when that file cannot be made or used.
    """
    folder = None if instance_path is None else os.path.realpath(instance_path)
    with _shared_lock:
        fake = _shared.get(folder)
        if fake is None:
            state_file = None if folder is None else os.path.join(folder, STATE_FILE)
            fake = FakePlurality(state_file=state_file).start()
            atexit.register(fake.stop)
            _shared[folder] = fake
        return fake


def _after_fork_in_child() -> None:
    """A fork keeps the stand-ins' objects but none of their threads: take them over."""
    global _running_lock, _shared_lock, _bombs_lock
    _running_lock, _shared_lock, _bombs_lock = threading.Lock(), threading.Lock(), threading.Lock()
    for fake in list(_running):
        fake._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until Ctrl-C (or SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="python -m flask_plurality.testing",
        description="Serve a stand-in for Plurality's token validation API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=0, help="default: a random free port")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then
    # never turns Ctrl-C into KeyboardInterrupt.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    fake = FakePlurality(host=args.host, port=args.port)
    try:
        fake.start()
        token = fake.issue_token()
        print(
            f"Plurality stand-in running at {fake.url}  (fake logins, not for production)\n"
            f"  PLURALITY_API_URL={fake.url}\n"
            f"  PLURALITY_CLIENT_ID={fake.client_id}\n"
            f"  PLURALITY_CLIENT_SECRET={fake.client_secret}\n"
            "Sample token (user demo@example.com, valid 24 hours):\n"
            f"  {token}\n"
            "Try it:\n"
            f"  curl -X POST {fake.validate_url} -H 'Content-Type: application/json' "
            f'-u {fake.client_id}:{fake.client_secret} -d \'{{"token": "{token}"}}\'\n'
            "Press Ctrl-C to stop.",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    finally:
        fake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
