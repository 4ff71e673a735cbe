"""Redis as the session store, through Flask-Session's own ``SESSION_TYPE="redis"``.

Every login, check, revalidation and logout goes through Flask-Session's msgspec
serializer (msgpack and JSON) and a real Redis; what is stored is read back raw.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
import redis
from cachelib import SimpleCache
from flask import Flask
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, AppFactory, CountingRedis, logged_in_on_two, login, redis_url_or_skip

from flask_plurality import Plurality, current_profile, plurality_required
from flask_plurality.cli import describe_store
from flask_plurality.logins import Login
from flask_plurality.stores import RedisStore, store_for
from flask_plurality.testing import FakePlurality

PLAIN = (str, int, float, bool, type(None))


def assert_plain(value: Any) -> None:
    """Only what msgpack, JSON and pickle all give back unchanged."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert isinstance(value, PLAIN), f"{value!r} is not a plain JSON type"


def stored_session(redis_client: Any, client: FlaskClient, fmt: str) -> dict[str, Any]:
    """The client's session as Redis holds it, decoded with msgspec alone."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    raw = redis_client.get("session:" + cookie.value)
    assert raw is not None, "the session is not in Redis"
    if fmt == "json":
        assert raw.startswith(b"{")
        data = msgspec.json.decode(raw)
    else:
        data = msgspec.msgpack.decode(raw)
    assert isinstance(data, dict)
    assert_plain(data)
    return data


@pytest.fixture(params=["msgpack", "json"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_app(make_app: AppFactory, redis_client: Any, fmt: str) -> Flask:
    app = make_app(session_redis=redis_client, SESSION_SERIALIZATION_FORMAT=fmt)

    @app.get("/every-second")
    @plurality_required(revalidate=1)
    def every_second() -> dict[str, Any]:
        return {"id": current_profile.id}

    return app


@pytest.mark.redis
def test_login_check_and_logout_round_trip(redis_app: Flask, redis_client: Any, fake: FakePlurality, fmt: str) -> None:
    client = redis_app.test_client()
    token = fake.issue_token(email="redis@example.com")
    response = login(client, token)
    assert response.status_code == 200
    user_id = response.get_json()["profile"]["id"]

    stored = stored_session(redis_client, client, fmt)
    held = Login.load(stored["_plurality"])
    assert held is not None and held.profile.id == user_id and held.profile.email == "redis@example.com"
    assert isinstance(stored["_plurality"]["exp"], int)

    for path in ("/protected", "/async", "/items"):
        assert client.get(path).status_code == 200, path
    assert client.get("/protected").get_json() == {"id": user_id, "email": "redis@example.com"}
    assert client.get("/plurality/session").get_json()["profile"]["id"] == user_id
    assert len(fake.calls) == 1  # the checks never asked Plurality

    key = "session:" + client.get_cookie("session").value  # type: ignore[union-attr]
    assert client.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert redis_client.exists(key) == 0
    assert client.get("/protected").status_code == 401


@pytest.mark.redis
def test_session_lives_in_redis_not_in_the_app(make_app: AppFactory, redis_client: Any, fake: FakePlurality) -> None:
    """A second app instance on the same Redis (another worker) honours the login."""
    first, second = make_app(session_redis=redis_client), make_app(session_redis=redis_client)
    client, other = logged_in_on_two(first, second, fake.issue_token())
    assert other.get("/protected").status_code == 200
    assert other.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert client.get("/protected").status_code == 401


@pytest.mark.redis
def test_revalidation_and_its_shared_cache_round_trip(
    redis_app: Flask, redis_client: Any, fake: FakePlurality, fmt: str
) -> None:
    """Revalidated state survives the serializer, and a second session of the same token
    reuses the answer cached in Redis instead of asking Plurality again."""
    token = fake.issue_token()
    laptop, phone = redis_app.test_client(), redis_app.test_client()
    assert login(laptop, token).status_code == 200
    assert login(phone, token).status_code == 200
    validated_at = stored_session(redis_client, laptop, fmt)["_plurality"]["v"]
    time.sleep(1.1)  # older than the route's interval

    fake.reset_calls()
    assert laptop.get("/every-second").status_code == 200
    assert len(fake.calls) == 1
    assert stored_session(redis_client, laptop, fmt)["_plurality"]["v"] > validated_at
    answers = [key for key in redis_client.scan_iter("plurality:answer:*")]
    assert len(answers) == 1
    assert token.encode() not in redis_client.get(answers[0])

    assert phone.get("/every-second").status_code == 200  # the cached answer
    assert laptop.get("/every-second").status_code == 200  # within the interval now
    assert len(fake.calls) == 1

    fake.revoke(token)
    time.sleep(1.1)
    assert laptop.get("/every-second").status_code == 401
    assert phone.get("/every-second").status_code == 401  # the cached "no"
    assert len(fake.calls) == 2


@pytest.mark.redis
def test_everything_the_extension_stores_is_under_its_prefix(
    make_app: AppFactory, redis_client: Any, fake: FakePlurality
) -> None:
    app = make_app(session_redis=redis_client, PLURALITY_KEY_PREFIX="shop:auth:", PLURALITY_REVALIDATE=1)
    client = app.test_client()
    token, bad = fake.issue_token(), fake.issue_token()
    fake.revoke(bad)
    assert login(client, bad).status_code == 401  # failure counters, the cached "no"
    assert login(client, token).status_code == 200
    time.sleep(1.1)
    assert client.get("/protected").status_code == 200  # the cached "yes"
    with app.app_context():
        app.extensions["plurality"].revoke_user("someone-else")

    keys = sorted(key.decode() for key in redis_client.scan_iter("*"))
    own = [key for key in keys if not key.startswith("session:")]
    assert own and all(key.startswith("shop:auth:") for key in own), keys
    kinds = {key.split(":")[2] for key in own}
    assert {"answer", "revoked", "revocations"} <= kinds, kinds
    assert any("fail" in kind for kind in kinds), kinds
    for key in keys:
        assert token not in key and bad not in key
        value = redis_client.get(key) or b""
        assert token.encode() not in value or key.startswith("session:")
        assert bad.encode() not in value


@pytest.mark.redis
def test_a_redis_subclass_is_shared_too(make_app: AppFactory, redis_client: Any, fake: FakePlurality) -> None:
    counting = CountingRedis.from_url(redis_url_or_skip(), socket_timeout=1)
    counting.sent = []
    app = make_app(session_redis=counting)
    try:
        assert isinstance(store_for(app.session_interface), RedisStore)
        with app.app_context():
            app.extensions["plurality"].revoke_user("u-1")
        assert redis_client.exists("plurality:revoked:u-1") == 1
    finally:
        counting.close()


@pytest.mark.redis
def test_the_revocation_check_rides_on_the_session_read(
    make_app: AppFactory, redis_client: Any, fake: FakePlurality
) -> None:
    """While nobody is revoked, a protected request costs the session's own read and
    nothing else (no write: the session did not change, its expiry is the token's); a
    revocation of anyone costs each session one read, and the write of that check, once."""
    counting = CountingRedis.from_url(redis_url_or_skip(), socket_timeout=1)
    counting.sent = []
    app = make_app(session_redis=counting)
    plurality: Plurality = app.extensions["plurality"]
    alice, bob = app.test_client(), app.test_client()
    try:
        assert login(alice, fake.issue_token(user_id="alice")).status_code == 200
        assert login(bob, fake.issue_token(user_id="bob")).status_code == 200

        def sent_by(client: FlaskClient, status: int) -> list[str]:
            counting.sent.clear()
            assert client.get("/protected").status_code == status
            return list(counting.sent)

        assert sent_by(alice, 200) == ["MGET"]
        with app.app_context():
            plurality.revoke_user("bob")
        assert sent_by(alice, 200) == ["MGET", "GET", "SET"]  # alice's marker, once
        assert sent_by(alice, 200) == ["MGET"]
        assert sent_by(bob, 401) == ["MGET"]  # revoke_user deleted the session already (its index)
    finally:
        counting.close()


# -- describe_store: what ``flask plurality check`` reports ---------------------------


#: A client told no socket_timeout gets redis-py's default: 5 s from redis-py 8 on, none
#: before (redis>=5 is declared, and the matrix tests both).
UNTOLD = "no socket_timeout" if redis.Redis().connection_pool.connection_kwargs["socket_timeout"] is None else ""


@pytest.mark.parametrize(
    ("make_client", "warning"),
    [
        (lambda: redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5, socket_connect_timeout=0.5), None),
        (lambda: redis.Redis(host="127.0.0.1", port=1), UNTOLD or "A stalled Redis holds a request up to"),
        (lambda: redis.Redis.from_url("redis://127.0.0.1:1/0"), UNTOLD or "A stalled Redis holds a request up to 5 s"),
        (lambda: redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=None), "no socket_timeout"),
        (
            lambda: redis.Redis.from_url(
                "redis://127.0.0.1:1/0", socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True
            ),
            "decode_responses=True",
        ),
    ],
)
def test_describe_store_warns_about_redis_clients_that_hang(
    make_app: AppFactory, make_client: Any, warning: str | None
) -> None:
    """Looks at the client's settings only: nothing listens on port 1."""
    client = make_client()
    name, warnings = describe_store(make_app(session_redis=client))
    assert name == "redis (Redis at 127.0.0.1:1, db 0)"
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0], warnings
    client.close()


@pytest.mark.parametrize("kind", ["default", "simple"])
def test_describe_store_for_cachelib(make_app: AppFactory, kind: str) -> None:
    if kind == "default":
        app = make_app()
        name, warnings = describe_store(app)
        assert name.startswith("cachelib FileSystemCache (") and "plurality_sessions" in name
        assert warnings == []
    else:
        app = make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache())
        name, warnings = describe_store(app)
        assert name == "cachelib SimpleCache (per process)"
        assert len(warnings) == 1 and "gunicorn -w N" in warnings[0]


@pytest.mark.redis
def test_a_logout_waits_for_replicas_only_where_there_are_some(
    make_app: AppFactory, redis_client: Any, fake: FakePlurality
) -> None:
    """A single Redis (``"auto"``) has no replica to wait for; asked to wait for one it
    has not got, a logout and a revocation are refused (503) rather than claimed, while
    a login (which ends nobody's login) never waits."""
    from helpers import SAME_ORIGIN, error_of

    from flask_plurality import SessionStoreUnavailable

    plain = make_app(session_redis=redis_client).test_client()
    assert login(plain, fake.issue_token()).status_code == 200
    assert plain.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    app = make_app(session_redis=redis_client, PLURALITY_REPLICA_ACKS=1, PLURALITY_REPLICA_TIMEOUT=0.05)
    strict = app.test_client()
    token = fake.issue_token(user_id="waits")
    assert login(strict, token).status_code == 200
    assert strict.get("/protected").status_code == 200
    error_of(strict.post("/plurality/logout", json={}, headers=SAME_ORIGIN), 503, "session_store_unavailable", token)
    with app.app_context(), pytest.raises(SessionStoreUnavailable):
        app.extensions["plurality"].revoke_user("waits")
    assert app.test_cli_runner().invoke(args=["plurality", "revoke-user", "waits"]).exit_code == 7
