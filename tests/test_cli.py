"""``flask plurality ...`` against the stand-in over real HTTP, via ``app.test_cli_runner()``.

Each ``check`` outcome is produced by a real upstream condition (closed port, 503,
timeout, wrong secret, revoked token...) and asserted on its line and exit code.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import redis
import requests
from cachelib import FileSystemCache, SimpleCache
from click.testing import Result
from flask import Flask
from helpers import DictSessions, free_port, login
from redis.backoff import NoBackoff
from redis.retry import Retry

from flask_plurality import Plurality
from flask_plurality.cli import ExitCode
from flask_plurality.testing import FakePlurality, config_for

AppFactory = Callable[..., Flask]
SECRET = FakePlurality.DEMO_CLIENT_SECRET
REACHABLE = "reachable, route and method OK (credentials not checked: pass --token)"


def run(app: Flask, *args: str, input: str | None = None) -> Result:
    """One ``flask plurality ...`` invocation; the client secret never shows (except the
    stand-in's published demo secret, which ``fake-server`` prints on purpose)."""
    result = app.test_cli_runner().invoke(args=["plurality", *args], input=input)
    assert SECRET not in result.output or args[0] == "fake-server"
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def last_line(result: Result) -> str:
    return result.output.strip().splitlines()[-1]


@pytest.fixture
def closed_redis() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


# -- check: each outcome ---------------------------------------------------------------


def test_check_without_token_proves_route_and_method_only(app: Flask, fake: FakePlurality) -> None:
    result = run(app, "check")
    assert result.exit_code == ExitCode.NOT_CHECKED == 3
    assert last_line(result) == REACHABLE
    [call] = fake.calls
    # A junk token Plurality refuses before looking at the credentials (the order of
    # docs/plurality-api.rst's response table).
    assert (call.method, call.outcome) == ("POST", 403)
    assert call.token is not None and jwt.get_unverified_header(call.token)["alg"] == "HS256"
    assert jwt.decode(call.token, options={"verify_signature": False})["exp"] > time.time()


def test_check_without_token_cannot_see_wrong_credentials(make_app: AppFactory) -> None:
    """The honest part: a wrong secret is invisible without a real token."""
    result = run(make_app(PLURALITY_CLIENT_SECRET="not-the-secret"), "check")
    assert result.exit_code == 3
    assert last_line(result) == REACHABLE


def test_check_with_a_good_token_is_all_ok(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="user-1", email="ada@example.com")
    result = run(app, "check", "--token", token)
    assert result.exit_code == ExitCode.OK == 0
    assert last_line(result) == "all OK: profile id user-1 (ada@example.com)"
    assert [(c.token, c.auth_ok, c.outcome) for c in fake.calls] == [(token, True, 200)]
    assert token not in result.output


def test_check_token_from_stdin(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="user-2", email=None)
    result = run(app, "check", "--token", "-", input=token + "\n")
    assert result.exit_code == 0
    assert last_line(result) == "all OK: profile id user-2"


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"PLURALITY_CLIENT_SECRET": "not-the-secret"}, "Invalid Client Secret"),
        ({"PLURALITY_CLIENT_ID": "nobody"}, "Invalid Client ID"),
    ],
)
def test_check_with_a_good_token_and_wrong_credentials(
    make_app: AppFactory, fake: FakePlurality, config: dict[str, str], said: str
) -> None:
    result = run(make_app(**config), "check", "--token", fake.issue_token())
    assert result.exit_code == ExitCode.CREDENTIALS_REJECTED == 5
    assert last_line(result).startswith(f"credentials rejected: {said}")


def test_check_with_a_revoked_token(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.revoke(token)
    result = run(app, "check", "--token", token)
    assert result.exit_code == ExitCode.INVALID_TOKEN == 4
    assert last_line(result).startswith("token invalid or expired: Plurality refused it")
    assert "credentials not checked" in last_line(result)
    assert [c.outcome for c in fake.calls] == [403]


def test_check_with_an_expired_token_still_proves_reachability(app: Flask, fake: FakePlurality) -> None:
    expired = fake.issue_token(ttl=-60)
    result = run(app, "check", "--token", expired)
    assert result.exit_code == 4
    assert "token invalid or expired: it expired at " in last_line(result)
    [call] = fake.calls  # the junk token went up instead: Plurality was still asked
    assert call.token != expired and call.outcome == 403


def test_check_with_a_token_of_another_app_says_credentials_are_fine(app: Flask, fake: FakePlurality) -> None:
    fake.add_client("other-app", "other-secret")
    result = run(app, "check", "--token", fake.issue_token(client_id="other-app"))
    assert result.exit_code == 4
    assert "issued for another client app; the client id and secret were accepted" in last_line(result)


def test_check_with_junk_refuses_it_and_asks_plurality_with_its_own(app: Flask, fake: FakePlurality) -> None:
    result = run(app, "check", "--token", "hello")
    assert result.exit_code == 4
    assert last_line(result).startswith("token invalid or expired: not a Plurality token")
    assert [c.token for c in fake.calls] != ["hello"] and len(fake.calls) == 1


def test_check_unreachable_on_a_closed_port(make_app: AppFactory) -> None:
    result = run(make_app(PLURALITY_API_URL=f"http://127.0.0.1:{free_port()}/api"), "check")
    assert result.exit_code == ExitCode.UNREACHABLE == 6
    assert last_line(result) == "unreachable: no connection to PLURALITY_API_URL (refused, reset or no route)"


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (503, "unreachable: Plurality answered HTTP 503"),
        (500, "unreachable: Plurality answered HTTP 500"),
        (429, "unreachable: answered 429 (rate limited); retry after 7 s"),
        ("timeout", "unreachable: no answer within PLURALITY_TIMEOUT (0.5 s)"),
        ("reset", "unreachable: no connection to PLURALITY_API_URL (refused, reset or no route)"),
        ("garbage", "unreachable: answered 200 with a body that is not Plurality's"),
    ],
)
def test_check_unreachable_when_plurality_misbehaves(
    make_app: AppFactory, fake: FakePlurality, fault: int | str, said: str
) -> None:
    app = make_app(PLURALITY_TIMEOUT=0.5)
    fake.fail_next(fault, retry_after=7 if fault == 429 else None)
    result = run(app, "check", "--token", fake.issue_token())
    assert result.exit_code == 6
    assert last_line(result) == said


def test_check_unreachable_without_a_validate_route(app: Flask, fake: FakePlurality) -> None:
    fake.methods = set()
    result = run(app, "check")
    assert result.exit_code == 6
    assert last_line(result) == f"unreachable: no validate route at {fake.url}/user/validate; check PLURALITY_API_URL"


def test_check_notes_a_get_only_route(app: Flask, fake: FakePlurality) -> None:
    fake.methods = {"GET"}
    result = run(app, "check")
    assert result.exit_code == 3
    assert "note: the validate route answers GET here" in result.output
    assert [(c.method, c.outcome) for c in fake.calls] == [("POST", 404), ("GET", 403)]


# -- check: the store and config warnings -----------------------------------------------


def test_check_names_the_default_store_without_warnings(app: Flask) -> None:
    result = run(app, "check")
    [store_line] = [line for line in result.output.splitlines() if line.startswith("session store:  ")]
    assert "FileSystemCache" in store_line and f"{app.instance_path}/plurality_sessions" in store_line
    assert "warning" not in result.output
    assert result.output.splitlines()[:2] == [
        f"Plurality API:  {app.config['PLURALITY_API_URL']}/user/validate (method auto)",
        f"client id:      {FakePlurality.DEMO_CLIENT_ID}",
    ]


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({}, None),
        ({"WEB_CONCURRENCY": "4"}, "WEB_CONCURRENCY=4"),
        ({"GUNICORN_CMD_ARGS": "--bind 0.0.0.0:80 --workers 3"}, "GUNICORN_CMD_ARGS asks for 3 workers"),
        ({"GUNICORN_CMD_ARGS": "-w=2"}, "GUNICORN_CMD_ARGS asks for 2 workers"),
        ({"WEB_CONCURRENCY": "1", "GUNICORN_CMD_ARGS": "-w 1"}, None),
    ],
)
def test_check_warns_about_a_per_process_store(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], hint: str | None
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache())
    result = run(app, "check")
    assert result.exit_code == 3  # a warning does not change the outcome
    assert result.output.count("session store:  cachelib SimpleCache") == 1
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert "SimpleCache" in warnings[0]  # store.describe_store()'s own warning
    assert warnings[1:] == (
        [f"warning: {hint}: the per-process store above is split between the workers"] if hint else []
    )


def test_check_warns_when_only_the_extensions_keys_are_per_process(fake: FakePlurality, tmp_path: Any) -> None:
    app = Flask("other", instance_path=str(tmp_path))
    app.config.update(TESTING=True, **config_for(fake))
    app.session_interface = DictSessions(app)
    Plurality(app)
    result = run(app, "check")
    assert result.exit_code == 3
    assert "session store:  DictSessions" in result.output
    [warning] = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert "DictSessions" in warning and "per process" in warning


def test_check_on_redis(make_app: AppFactory, redis_client: Any) -> None:
    result = run(make_app(session_redis=redis_client), "check")
    assert result.exit_code == 3
    kwargs = redis_client.connection_pool.connection_kwargs
    [store_line] = [line for line in result.output.splitlines() if line.startswith("session store:  ")]
    assert store_line.startswith("session store:  redis") and f"{kwargs['host']}:{kwargs['port']}" in store_line
    assert "per process" not in result.output
    assert redis_client.keys("plurality:check:*") == []  # the probe key was removed


def test_check_store_unavailable_wins_but_plurality_is_still_checked(
    make_app: AppFactory, closed_redis: redis.Redis, fake: FakePlurality
) -> None:
    result = run(make_app(session_redis=closed_redis), "check", "--token", fake.issue_token(user_id="u"))
    assert result.exit_code == ExitCode.STORE_UNAVAILABLE == 7
    assert "session store UNAVAILABLE: cannot be reached" in result.output
    assert last_line(result) == "all OK: profile id u (demo@example.com)"


def test_check_store_that_cannot_keep_a_value(make_app: AppFactory, tmp_path: Any) -> None:
    app = make_app()
    store_dir = tmp_path / "sessions"
    store_dir.mkdir()
    app.session_interface.inner.cache._path = str(store_dir / "missing" / "deeper")  # type: ignore[attr-defined]
    result = run(app, "check")
    assert result.exit_code == 7
    # cachelib's set returns False here; the store raises on it (no silent loss: docs/stores.rst).
    assert "session store UNAVAILABLE" in result.output


@pytest.mark.parametrize(
    ("config", "warning"),
    [
        ({"PLURALITY_VERIFY_TLS": False}, "warning: PLURALITY_VERIFY_TLS is off"),
        ({"PLURALITY_FAKE": True}, "warning: PLURALITY_FAKE is on: a local stand-in at http://127.0.0.1:"),
    ],
)
def test_check_warns_about_risky_settings(make_app: AppFactory, config: dict[str, Any], warning: str) -> None:
    result = run(make_app(**config), "check")
    assert result.exit_code == 3
    assert warning in result.output


def test_check_warns_about_plain_http_to_another_host(make_app: AppFactory, fake: FakePlurality) -> None:
    # 0.0.0.0 is not a loopback address, though Linux connects it to this machine.
    app = make_app(PLURALITY_API_URL=fake.url.replace("127.0.0.1", "0.0.0.0"))
    result = run(app, "check")
    assert "warning: PLURALITY_API_URL is not HTTPS (http://0.0.0.0)" in result.output
    assert result.exit_code == 3


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_check_accepts_plain_http_on_loopback(make_app: AppFactory, fake: FakePlurality, host: str) -> None:
    result = run(make_app(PLURALITY_API_URL=fake.url.replace("127.0.0.1", host)), "check")
    assert result.exit_code == 3
    assert "not HTTPS" not in result.output


@pytest.mark.filterwarnings("ignore:The 'use_signer' option is deprecated:DeprecationWarning")
def test_check_warns_about_a_signer_without_secret_key(make_app: AppFactory, tmp_path: Any) -> None:
    signed = {
        "SESSION_TYPE": "cachelib",
        "SESSION_CACHELIB": FileSystemCache(str(tmp_path)),
        "SESSION_USE_SIGNER": True,
    }
    result = run(make_app(**signed), "check")
    assert "warning: SESSION_USE_SIGNER is on but SECRET_KEY is not set" in result.output
    result = run(make_app(**signed, SECRET_KEY="k" * 32), "check")
    assert "SECRET_KEY" not in result.output


def test_check_with_an_empty_token_is_a_usage_error(app: Flask, fake: FakePlurality) -> None:
    result = run(app, "check", "--token", "  ")
    assert result.exit_code == 2
    assert "the token is empty" in result.output
    assert fake.calls == []


# -- validate ------------------------------------------------------------------------------


def test_validate_prints_the_profile(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token(user_id="user-7", email="ada@example.com", auth_address="0xa", proxy_address="0xb")
    result = run(app, "validate", token)
    assert result.exit_code == 0
    profile = json.loads(result.stdout)
    assert profile == {
        "id": "user-7",
        "email": "ada@example.com",
        "auth_address": "0xa",
        "proxy_address": "0xb",
        "unique_session_id": jwt.decode(token, options={"verify_signature": False})["uniqueSessionId"],
        "expires_at": jwt.decode(token, options={"verify_signature": False})["exp"],
    }
    assert len(fake.calls) == 1


def test_validate_from_stdin(app: Flask, fake: FakePlurality) -> None:
    result = run(app, "validate", "-", input=fake.issue_token(user_id="user-8"))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["id"] == "user-8"


def test_validate_refused_token(app: Flask, fake: FakePlurality) -> None:
    token = fake.issue_token()
    fake.revoke(token)
    result = run(app, "validate", token)
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr == "token invalid or expired: Plurality refused it (bad signature, expired or revoked)\n"
    assert token not in result.output


@pytest.mark.parametrize(
    ("token", "said"),
    [("not-a-token", "not a Plurality token (not sent to Plurality)"), (None, "(not sent to Plurality)")],
)
def test_validate_junk_and_expired_without_asking(
    app: Flask, fake: FakePlurality, token: str | None, said: str
) -> None:
    result = run(app, "validate", token or fake.issue_token(ttl=-5))
    assert result.exit_code == 4
    assert result.stderr.startswith("token invalid or expired: ") and said in result.stderr
    assert fake.calls == []


def test_validate_wrong_credentials(make_app: AppFactory, fake: FakePlurality) -> None:
    result = run(make_app(PLURALITY_CLIENT_SECRET="nope"), "validate", fake.issue_token())
    assert result.exit_code == 5
    assert result.stderr == "credentials rejected: Invalid Client Secret\n"


def test_validate_unreachable(make_app: AppFactory, fake: FakePlurality) -> None:
    fake.fail_next(502)
    result = run(make_app(), "validate", fake.issue_token())
    assert result.exit_code == 6
    assert result.stderr == "unreachable: Plurality answered HTTP 502\n"


def test_validate_store_unavailable(make_app: AppFactory, closed_redis: redis.Redis, fake: FakePlurality) -> None:
    result = run(make_app(session_redis=closed_redis), "validate", fake.issue_token())
    assert result.exit_code == 7
    assert result.stderr.startswith("session store unavailable")


def test_validate_needs_a_token(app: Flask) -> None:
    assert run(app, "validate").exit_code == 2
    assert run(app, "validate", "").exit_code == 2


# -- revoke-user ---------------------------------------------------------------------------


def test_revoke_user_logs_out_existing_sessions(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    assert login(client, fake.issue_token(user_id="user-9")).status_code == 200
    other = app.test_client()
    assert login(other, fake.issue_token(user_id="someone-else")).status_code == 200
    result = run(app, "revoke-user", "user-9")
    assert result.exit_code == 0
    assert result.stdout == (
        "revoked: 1 live session of user user-9 ended, and their tokens issued until now are refused\n"
    )
    assert result.stderr == ""
    assert client.get("/protected").status_code == 401
    assert other.get("/protected").status_code == 200
    assert login(client, fake.issue_token(user_id="user-9", iat=int(time.time()) + 1)).status_code == 200  # a new login
    assert client.get("/protected").status_code == 200


def test_revoke_user_says_when_the_user_had_no_session(app: Flask, fake: FakePlurality) -> None:
    """A typo revokes a user nobody is: the answer says nothing was logged out."""
    client = app.test_client()
    user_id = str(uuid.uuid4())
    for _ in range(2):
        assert login(app.test_client(), fake.issue_token(user_id=user_id)).status_code == 200
    assert login(client, fake.issue_token(user_id=user_id)).status_code == 200
    result = run(app, "revoke-user", user_id[:-1])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.startswith(f"revoked: user {user_id[:-1]} had no live session;")
    assert client.get("/protected").status_code == 200
    result = run(app, "revoke-user", user_id)
    assert result.stdout.startswith(f"revoked: 3 live sessions of user {user_id} ended")
    assert client.get("/protected").status_code == 401


def test_revoke_user_on_redis(make_app: AppFactory, fake: FakePlurality, redis_client: Any) -> None:
    app = make_app(session_redis=redis_client)
    client = app.test_client()
    assert login(client, fake.issue_token(user_id="user-10")).status_code == 200
    assert run(app, "revoke-user", "user-10").exit_code == 0
    assert redis_client.exists("plurality:revoked:user-10") == 1
    assert client.get("/protected").status_code == 401


def test_revoke_user_refuses_a_per_process_store(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache())
    client = app.test_client()
    assert login(client, fake.issue_token(user_id="user-11")).status_code == 200
    result = run(app, "revoke-user", "user-11")
    assert result.exit_code == ExitCode.NO_EFFECT == 8
    assert "not revoked: the session store is per process" in result.stderr
    assert client.get("/protected").status_code == 200  # nothing was written


def test_revoke_user_refuses_when_revocations_are_not_checked(make_app: AppFactory, fake: FakePlurality) -> None:
    result = run(make_app(PLURALITY_REVOCATION_CHECK=False), "revoke-user", "user-12")
    assert result.exit_code == 8
    assert "PLURALITY_REVOCATION_CHECK is off" in result.stderr


def test_revoke_user_store_unavailable(make_app: AppFactory, closed_redis: redis.Redis) -> None:
    result = run(make_app(session_redis=closed_redis), "revoke-user", "user-13")
    assert result.exit_code == 7
    assert result.stderr.startswith("not revoked: the session store is unavailable (")
    assert f"127.0.0.1:{closed_redis.connection_pool.connection_kwargs['port']}" in result.stderr


def test_revoke_user_needs_an_id(app: Flask) -> None:
    result = run(app, "revoke-user", " ")
    assert result.exit_code == 2
    assert "the user id is empty" in result.output


# -- fake-server ---------------------------------------------------------------------------


def test_fake_server_serves_until_stopped(app: Flask) -> None:
    port = free_port()
    answers: list[tuple[int, str]] = []

    def poke_then_stop() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = requests.post(
                    f"http://127.0.0.1:{port}/api/user/validate", json={"token": "a.b.c"}, timeout=5
                )
            except requests.ConnectionError:
                time.sleep(0.05)
                continue
            answers.append((response.status_code, response.text))
            break
        # What Ctrl-C or a process manager does; the command's own handler stops it.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    poker = threading.Thread(target=poke_then_stop)
    poker.start()
    try:
        result = run(app, "fake-server", "--port", str(port))
    finally:
        poker.join()
    assert answers == [(403, "Invalid token")]
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Plurality stand-in running at http://127.0.0.1:{port}/api")
    assert f"  PLURALITY_API_URL=http://127.0.0.1:{port}/api" in lines
    assert f"  PLURALITY_CLIENT_ID={FakePlurality.DEMO_CLIENT_ID}" in lines
    token = lines[lines.index("Sample token (user demo@example.com, valid 24 hours):") + 1].strip()
    assert jwt.decode(token, options={"verify_signature": False})["exp"] > time.time()
    assert lines[-1] == "Stopped."


def test_fake_server_on_a_port_in_use(app: Flask) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run(app, "fake-server", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 1
    assert "in use" in result.output
    assert "Traceback" not in result.output


def test_fake_server_rejects_a_bad_port(app: Flask) -> None:
    result = run(app, "fake-server", "--port", "70000")
    assert result.exit_code == 2
    assert "70000" in result.output


# -- the group -------------------------------------------------------------------------------


def test_group_lists_every_command(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0
    for command in ("check", "validate", "revoke-user", "fake-server"):
        assert f"  {command} " in result.output
