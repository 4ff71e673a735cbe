"""``flask plurality ...``: check a deployment, validate a token, run the stand-in, revoke a user.

The exit codes are an interface that deploy scripts rely on, the same for every
command; they are listed in :class:`ExitCode` and in the docs (docs/cli.rst).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import secrets
import shlex
import sys
import time
import uuid
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click
import jwt
from cachelib import BaseCache, SimpleCache
from flask import Flask, current_app
from flask.cli import AppGroup

from .answers import upstream_settings
from .client import VALIDATE_PATH
from .config import client_id_problem, config, missing_credentials, not_configured, secret_hint, unknown_keys
from .exceptions import CredentialsRejected, InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .security import insecure_transport
from .state import get_extension, get_state
from .stores import CacheLibStore, Store, get_store, key, per_process_warning, redis_client, unwrap
from .tokens import read_claims

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

    from .extension import Plurality

plurality_cli = AppGroup(
    "plurality", help="Plurality login tools: check, validate, fake-server, revoke-user, sessions, end-session."
)


class ExitCode(IntEnum):
    """What ``flask plurality`` commands exit with. Click itself uses 1 (an error such as
    a port in use) and 2 (a usage error)."""

    #: Everything the command set out to prove holds.
    OK = 0
    #: ``check`` without ``--token``: Plurality is reachable and the validate route and
    #: method are right; the client credentials could not be checked.
    NOT_CHECKED = 3
    #: The token is malformed, expired, revoked or issued for another client app.
    INVALID_TOKEN = 4
    #: Plurality refused this app's client id or secret.
    CREDENTIALS_REJECTED = 5
    #: Plurality could not be reached or gave no usable answer (connection refused,
    #: timeout, 429, 5xx, garbled body, no validate route at the configured URL).
    UNREACHABLE = 6
    #: The session store (Redis, the cache directory...) cannot be written and read back.
    STORE_UNAVAILABLE = 7
    #: ``revoke-user``: the command would have no effect on the running app (the store
    #: is per process, or ``PLURALITY_REVOCATION_CHECK`` is off); nothing was written.
    NO_EFFECT = 8
    #: ``check``: ``PLURALITY_CLIENT_ID`` or ``PLURALITY_CLIENT_SECRET`` is not set (so
    #: Plurality was not asked), or a ``PLURALITY_*`` key is not a setting (a misspelling,
    #: whose default is used instead).
    NOT_CONFIGURED = 9
    #: ``end-session``: the user has no session with that handle (nothing was ended).
    NOT_FOUND = 10


_REASONS = {
    "malformed": "not a Plurality token (not sent to Plurality)",
    "rejected": "Plurality refused it (bad signature, expired or revoked)",
    "wrong_client": (
        "Plurality says it was issued for another client app; the client id and secret were accepted, "
        "so is PLURALITY_CLIENT_ID the app the login widget uses?"
    ),
}


def _exit(code: ExitCode) -> NoReturn:
    click.get_current_context().exit(int(code))
    raise AssertionError("unreachable")  # pragma: no cover - ctx.exit raises


def _token_argument(value: str) -> str:
    """``-`` reads the token from stdin: a token on the command line lands in shell history."""
    if value == "-":
        value = sys.stdin.read()
    value = value.strip()
    if not value:
        raise click.BadParameter("the token is empty")
    return value


def _why_invalid(exc: InvalidToken, token: str) -> str:
    if exc.reason == "expired":
        when = "some time ago"
        try:
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
            when = datetime.fromtimestamp(int(claims["exp"]), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError, OSError):
            pass
        return f"it expired at {when} (not sent to Plurality)"
    return _REASONS.get(exc.reason, exc.reason)


def _credentials_detail(exc: CredentialsRejected) -> str:
    """Plurality's own words ("Invalid Client Secret"), which the client puts after a
    colon, and what in the config explains them when something does."""
    message = str(exc)
    detail = message.rpartition(": ")[2] or message
    problem, hint = client_id_problem(config.client_id), secret_hint(config.client_secret)
    if problem is not None:
        detail += f"; PLURALITY_CLIENT_ID {problem}"
    if hint is not None:
        detail += f"; {hint}"
    return detail


def _unreachable_detail(exc: UpstreamUnavailable) -> str:
    hints = {
        "connection_error": "no connection to PLURALITY_API_URL (refused, reset or no route)",
        "timeout": f"no answer within PLURALITY_TIMEOUT ({config.timeout:g} s)",
        "route_not_found": f"no validate route at {config.api_url}{VALIDATE_PATH}; check PLURALITY_API_URL",
        "token_not_received": "the token did not arrive (a proxy may drop GET bodies); set PLURALITY_VALIDATE_METHOD",
        "bad_response": "answered 200 with a body that is not Plurality's",
        "rate_limited": "answered 429 (rate limited)",
        "circuit_open": "too many failures in a row; not asking again yet",
        "oversized": "answered a body larger than Plurality's answers ever are (a proxy's page?)",
        "encoded": "answered a compressed body (a proxy compressing what we asked to be sent as is?)",
        "redirect": "answered a redirect; check PLURALITY_API_URL (https, the /api path)",
        "no_user": "answered 200 without a user (Plurality has no record of this user)",
        "http_403": "answered 403 with a page that is not Plurality's (a proxy or firewall?)",
    }
    detail = hints.get(exc.reason, str(exc).rstrip("."))
    if exc.retry_after:
        detail += f"; retry after {exc.retry_after} s"
    return detail


def _junk_token() -> str:
    """JWT-shaped, unexpired, signed with a random key: Plurality answers 403 ``Invalid
    token`` before it looks at the credentials (it checks the token first)."""
    now = int(time.time())
    claims = {"id": "flask-plurality-check", "uniqueSessionId": str(uuid.uuid4()), "iat": now, "exp": now + 300}
    return jwt.encode(claims, secrets.token_urlsafe(48), algorithm="HS256")


def probe(extension: Plurality, token: str | None) -> tuple[ExitCode, str]:
    """Ask Plurality once and say exactly what the answer proves (in an app context).

    Without a token, a junk token can prove only that the API is reachable and the
    validate route and method are right. With a token, a 403 still proves nothing about
    the credentials, since Plurality checks the token first.
    """
    local: InvalidToken | None = None
    if token is not None:
        try:
            read_claims(token, max_length=config.max_token_length)
        except InvalidToken as exc:
            local = exc  # still call upstream, with the junk token, to prove reachability
    sent = token if token is not None and local is None else _junk_token()
    try:
        user = extension.client.validate(sent, upstream_settings())
    except CredentialsRejected as exc:
        return ExitCode.CREDENTIALS_REJECTED, f"credentials rejected: {_credentials_detail(exc)}"
    except UpstreamUnavailable as exc:
        return ExitCode.UNREACHABLE, f"unreachable: {_unreachable_detail(exc)}"
    except InvalidToken as exc:
        if token is None:
            return ExitCode.NOT_CHECKED, "reachable, route and method OK (credentials not checked: pass --token)"
        why = _why_invalid(local or exc, token)
        if (local or exc).reason != "wrong_client":
            why += "; credentials not checked (Plurality looks at the token first): pass a fresh token"
        return ExitCode.INVALID_TOKEN, f"token invalid or expired: {why}"
    if sent != token:
        return ExitCode.UNREACHABLE, "unreachable: the API accepted a token nobody signed; it is not Plurality"
    email = user.get("email")
    return ExitCode.OK, f"all OK: profile id {user['id']}" + (f" ({email})" if isinstance(email, str) else "")


# -- the session store --------------------------------------------------------------

#: Longest a request should wait for a stalled Redis before answering 503, in seconds.
SLOW_STORE_WARNING: Final = 3.0


def _connection_setting(kwargs: dict[str, Any], connection_class: type, name: str) -> Any:
    """A connection setting: as given (``kwargs``), else the connection class's default."""
    if name in kwargs:
        return kwargs[name]
    for cls in connection_class.__mro__:
        init = vars(cls).get("__init__")
        if init is None:
            continue
        try:
            parameter = inspect.signature(init).parameters.get(name)
        except (TypeError, ValueError):  # pragma: no cover - a C-level __init__
            continue
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def _describe_redis(client: Redis | RedisCluster, store: Any) -> tuple[str, list[str]]:
    """What :func:`describe_store` says about a Redis client: where, and its timeouts."""
    from redis.cluster import RedisCluster
    from redis.connection import Connection

    warnings: list[str] = []
    if isinstance(client, RedisCluster):
        cluster: Any = client  # redis-py's cluster client is untyped
        kwargs, connection_class = cluster.nodes_manager.connection_kwargs, Connection
        primaries = cluster.get_primaries()
        name = f"redis cluster (RedisCluster: {len(primaries)} primaries at {', '.join(n.name for n in primaries)})"
        retry = kwargs.get("retry")
    else:
        kwargs, connection_class = client.connection_pool.connection_kwargs, client.connection_pool.connection_class
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        name = f"redis ({type(client).__name__} at {where}, db {kwargs.get('db', 0)})"
        retry = client.get_retry() or kwargs.get("retry")
    timeout = _connection_setting(kwargs, connection_class, "socket_timeout")
    connect = _connection_setting(kwargs, connection_class, "socket_connect_timeout")
    tries = 1 + int(getattr(retry, "_retries", 0)) if retry is not None else 1
    worst = tries * max(float(timeout), float(connect or 0)) if timeout is not None else math.inf
    if timeout is None:
        warnings.append(
            "The Redis client has no socket_timeout: a stalled Redis holds every request forever. "
            "Pass socket_timeout=0.5, socket_connect_timeout=0.5 (see Deployment in the docs)."
        )
    elif worst > SLOW_STORE_WARNING:
        warnings.append(
            f"A stalled Redis holds a request up to {worst:g} s (socket timeout x {tries} "
            f"attempt{'s' if tries > 1 else ''}) "
            "before it answers 503; prefer socket_timeout=0.5, socket_connect_timeout=0.5 and at most "
            "one retry."
        )
    if store.acks and timeout is not None and float(timeout) <= store.acks_timeout:
        warnings.append(
            f"The Redis client's socket_timeout ({float(timeout):g} s) is not above PLURALITY_REPLICA_TIMEOUT "
            f"({store.acks_timeout:g} s): a logout waiting for a replica gives up on the socket first. "
            "Raise socket_timeout or lower PLURALITY_REPLICA_TIMEOUT."
        )
    if kwargs.get("decode_responses"):
        warnings.append(
            "The Redis client has decode_responses=True: Flask-Session stores msgpack bytes, "
            "which cannot be read back as text. Create SESSION_REDIS without it."
        )
    return name, warnings


def describe_store(app: Flask) -> tuple[str, list[str]]:
    """(what holds the sessions, warnings about it) for ``flask plurality check``.

    Looks at the configuration and the store ``init_app`` found; it never connects.
    """
    inner = unwrap(app.session_interface)
    client = redis_client(inner)
    if client is not None:
        return _describe_redis(client, get_store(app))
    store = get_store(app)
    warnings = [per_process_warning(store)] if isinstance(store, CacheLibStore) else []
    cache = getattr(inner, "cache", None)
    if isinstance(cache, BaseCache):
        kind = type(cache).__name__
        if isinstance(cache, SimpleCache):
            return f"cachelib {kind} (per process)", warnings
        where = getattr(cache, "_path", None)
        return (f"cachelib {kind} ({where})" if where else f"cachelib {kind}"), warnings
    if store.shared:  # sqlalchemy, memcached: shared through its own store
        return f"{type(inner).__name__} ({type(store).__name__})", warnings
    return type(inner).__name__, warnings


def _store_works() -> tuple[Store | None, str | None]:
    """Write, read back and delete a probe key; (store, None) or (None, what failed)."""
    try:
        store = get_store()
        probe_key = key("check", secrets.token_hex(8))
        store.set(probe_key, 1, 30)
        value = store.get(probe_key)
        store.delete(probe_key)
    except SessionStoreUnavailable:
        return None, "cannot be reached"
    if value != 1:
        return None, "a value written to it could not be read back"
    return store, None


def _workers_hint() -> str | None:
    """What the environment says about worker processes; the CLI cannot know for sure."""
    value = os.environ.get("WEB_CONCURRENCY", "").strip()
    if value.isdigit() and int(value) > 1:
        return f"WEB_CONCURRENCY={value}"
    try:
        args = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    except ValueError:
        return None
    for i, arg in enumerate(args):
        match = re.fullmatch(r"(?:-w|--workers)(?:=?(\d+))?", arg)
        if match:
            count = match.group(1) or (args[i + 1] if i + 1 < len(args) else "")
            if count.isdigit() and int(count) > 1:
                return f"GUNICORN_CMD_ARGS asks for {count} workers"
    return None


def config_warnings(app: Flask, store: Store | None) -> list[str]:
    """Settings that work in development and hurt in production (docs/cli.rst lists them)."""
    warnings = list(describe_store(app)[1])
    problem = client_id_problem(config.client_id)
    if problem is not None:
        warnings.append(f"PLURALITY_CLIENT_ID {problem}")
    hint = _workers_hint()
    if store is not None and not store.shared and hint:
        warnings.append(f"{hint}: the per-process store above is split between the workers")
    if app.config.get("SESSION_USE_SIGNER") and not app.config.get("SECRET_KEY"):
        warnings.append("SESSION_USE_SIGNER is on but SECRET_KEY is not set: every session will fail")
    warnings += insecure_transport(app.config)
    if config.fake:
        warnings.append(f"PLURALITY_FAKE is on: a local stand-in at {config.api_url} approves logins, not Plurality")
    return warnings


# -- the commands --------------------------------------------------------------------


@plurality_cli.command("check")
@click.option(
    "--token",
    metavar="TOKEN",
    help="A fresh pluralityToken (e.g. from the browser console) to prove the client credentials; "
    "'-' reads it from stdin.",
)
def check_command(token: str | None) -> None:
    """Check the configuration, the session store and Plurality, and say what was proven.

    Exit codes: 0 all OK, 3 reachable but credentials not checked (no --token), 4 token
    invalid or expired, 5 credentials rejected, 6 unreachable, 7 session store unavailable,
    9 a credential is not set or a PLURALITY_* key is not a setting.
    """
    if token is not None:
        token = _token_argument(token)
    extension = get_extension()
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    missing = missing_credentials(app.config)
    click.echo(f"Plurality API:  {config.api_url}{VALIDATE_PATH} (method {config.validate_method.lower()})")
    click.echo(f"client id:      {config.client_id or '(not set)'}")
    click.echo(f"session store:  {describe_store(app)[0]}")
    store, store_problem = _store_works()
    if store_problem:
        click.echo(f"session store UNAVAILABLE: {store_problem}")
    for warning in config_warnings(app, store):
        click.echo(f"warning: {warning}")
    unknown = unknown_keys(app.config)
    for line in unknown:
        click.echo(f"error: {line}")
    if missing:  # nothing can be asked of Plurality
        click.echo(f"not configured: {not_configured(missing)}")
        _exit(ExitCode.NOT_CONFIGURED)
    code, message = probe(extension, token)
    found = extension.client._methods.get(config.api_url)
    if code in (ExitCode.OK, ExitCode.NOT_CHECKED, ExitCode.INVALID_TOKEN) and found:
        click.echo(f"note: the validate route answers {found} here; PLURALITY_VALIDATE_METHOD={found} saves a call")
    click.echo(message)
    if store_problem:
        _exit(ExitCode.STORE_UNAVAILABLE)
    if unknown and code in (ExitCode.OK, ExitCode.NOT_CHECKED):
        _exit(ExitCode.NOT_CONFIGURED)  # what was checked works, but not as the app's author meant
    _exit(code)


_DEMO_MODE_NOTE = (
    "note: this app runs in demo mode (PLURALITY_FAKE), so the stand-in that checked the token "
    "was started by this very command, with a signing key of its own: a token from "
    "'flask plurality fake-server' or from a running demo app is signed with another key, and "
    "only that process can accept it. To check such a token here, point the app at that "
    "fake-server instead: PLURALITY_API_URL, PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET as "
    "it printed them, and PLURALITY_FAKE off (PLURALITY_FAKE = False, or FLASK_PLURALITY_FAKE=false)."
)


@plurality_cli.command("validate")
@click.argument("token")
def validate_command(token: str) -> None:
    """Ask Plurality about TOKEN ('-' reads it from stdin); print the profile as JSON.

    Exit codes: 0 valid, 4 invalid or expired, 5 credentials rejected, 6 unreachable,
    7 session store unavailable.
    """
    token = _token_argument(token)
    try:
        profile = get_extension().validate(token)
    except InvalidToken as exc:
        click.echo(f"token invalid or expired: {_why_invalid(exc, token)}", err=True)
        if exc.reason == "rejected" and get_state().fake is not None:
            click.echo(_DEMO_MODE_NOTE, err=True)
        _exit(ExitCode.INVALID_TOKEN)
    except CredentialsRejected as exc:
        click.echo(f"credentials rejected: {_credentials_detail(exc)}", err=True)
        _exit(ExitCode.CREDENTIALS_REJECTED)
    except UpstreamUnavailable as exc:
        click.echo(f"unreachable: {_unreachable_detail(exc)}", err=True)
        _exit(ExitCode.UNREACHABLE)
    except SessionStoreUnavailable:
        click.echo("session store unavailable: it caches Plurality's answers", err=True)
        _exit(ExitCode.STORE_UNAVAILABLE)
    click.echo(json.dumps(profile.to_json(), indent=2))


@plurality_cli.command("revoke-user")
@click.argument("user_id")
def revoke_user_command(user_id: str) -> None:
    """Log USER_ID out everywhere: each of their sessions fails on its next request.

    Exit codes: 0 revoked, 7 session store unavailable, 8 it would have no effect (the
    store is per process, or PLURALITY_REVOCATION_CHECK is off).
    """
    user_id = _user_id_argument(user_id)
    extension = get_extension()
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if not config.revocation_check:
        click.echo("not revoked: PLURALITY_REVOCATION_CHECK is off, so the app never looks at revocations", err=True)
        _exit(ExitCode.NO_EFFECT)
    try:
        if not get_store().shared:
            click.echo(
                f"not revoked: the session store is per process ({describe_store(app)[0]}); "
                "a revocation made here cannot reach the running app",
                err=True,
            )
            _exit(ExitCode.NO_EFFECT)
        ended = extension.revoke_user(user_id)
    except SessionStoreUnavailable:
        click.echo(f"not revoked: the session store is unavailable ({describe_store(app)[0]})", err=True)
        _exit(ExitCode.STORE_UNAVAILABLE)
    if not ended:
        # A typo revokes a user nobody is: say so, instead of a "revoked" that reads as done.
        click.echo(
            f"revoked: user {user_id} had no live session; their tokens issued until now are refused "
            "(a Plurality user id is a UUID: current_profile.id, the token's 'id' claim)"
        )
        return
    click.echo(
        f"revoked: {ended} live session{'s' if ended != 1 else ''} of user {user_id} ended, and their tokens "
        "issued until now are refused"
    )


def _user_id_argument(user_id: str) -> str:
    user_id = user_id.strip()
    if not user_id:
        raise click.BadParameter("the user id is empty", param_hint="USER_ID")
    return user_id


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


@plurality_cli.command("sessions")
@click.argument("user_id")
def sessions_command(user_id: str) -> None:
    """List USER_ID's live sessions (a table, the most recently seen first).

    Exit codes: 0 listed (also none), 7 session store unavailable.
    """
    user_id = _user_id_argument(user_id)
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        found = get_extension().sessions_of(user_id)
    except SessionStoreUnavailable:
        click.echo(f"not listed: the session store is unavailable ({describe_store(app)[0]})", err=True)
        _exit(ExitCode.STORE_UNAVAILABLE)
    if not found:
        click.echo(f"user {user_id} has no live session")
        return
    rows = [("HANDLE", "CREATED (UTC)", "LAST SEEN (UTC)", "IP", "USER AGENT")]
    rows += [
        (info.handle, _when(info.created_at), _when(info.last_seen), info.ip or "-", (info.user_agent or "-")[:60])
        for info in found
    ]
    widths = [max(len(row[n]) for row in rows) for n in range(4)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)), row[4]]))


@plurality_cli.command("end-session")
@click.argument("user_id")
@click.argument("handle")
def end_session_command(user_id: str, handle: str) -> None:
    """End USER_ID's session HANDLE (from `flask plurality sessions`), as final as a logout.

    Exit codes: 0 ended, 7 session store unavailable, 10 no such session of that user.
    """
    user_id = _user_id_argument(user_id)
    handle = handle.strip()
    if not handle:
        raise click.BadParameter("the handle is empty", param_hint="HANDLE")
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        ended = get_extension().end_session(user_id, handle)
    except SessionStoreUnavailable:
        click.echo(f"not ended: the session store is unavailable ({describe_store(app)[0]})", err=True)
        _exit(ExitCode.STORE_UNAVAILABLE)
    if not ended:
        click.echo(f"not ended: user {user_id} has no live session {handle}", err=True)
        _exit(ExitCode.NOT_FOUND)
    click.echo(f"ended: session {handle} of user {user_id} is logged out")


@plurality_cli.command("fake-server", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port to listen on; default: a free one.")
def fake_server_command(host: str, port: int) -> None:
    """Run the stand-in for Plurality's validate API in the foreground (Ctrl-C stops it).

    Prints its URL, the demo credentials and a sample token. Fake logins: never point a
    production app at it.
    """
    from .fake import main

    try:
        status = main(["--host", host, "--port", str(port)])
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sys.stdout.flush()
    click.get_current_context().exit(status)
