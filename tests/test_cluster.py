"""Redis Cluster as the sessions' store: the client kept as given, a primary killed under
load, a slot migration under load, and logouts that a failover cannot undo.

One cluster for the whole run (tests/backends.py: three primaries with a replica each, on
free ports of the suite's range); the conformance suite runs on it too
(tests/test_backends.py, family ``redis-cluster``). Tests that kill or move part of it
leave it whole again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
import requests.adapters
from backend_app import build, dispose
from flask import Flask
from helpers import (
    SAME_ORIGIN,
    check_logouts_survive_a_failover,
    error_of,
    login,
    login_over_http,
    steady_traffic,
)

from flask_plurality import SessionStoreUnavailable
from flask_plurality.testing import FakePlurality, config_for

if TYPE_CHECKING:
    from backends import RedisClusterGroup

pytest_plugins = ["backends"]

_prefixes = iter(range(1, 1_000_000))
#: Slots the reshard test moves (redis-cli takes the source's lowest first).
SLOTS_MOVED = 1000


def _spec(cluster: RedisClusterGroup) -> dict[str, Any]:
    return {
        "family": "redis-cluster",
        "prefix": f"c{next(_prefixes)}-{time.time_ns() % 10**6}:",
        "startup": cluster.startup,
    }


@pytest.fixture
def cluster_app(redis_cluster: RedisClusterGroup, fake: FakePlurality, tmp_path: Path) -> Iterator[Flask]:
    app = build(_spec(redis_cluster), config_for(fake), str(tmp_path))
    yield app
    dispose(app)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
    yield session
    session.close()


def _session_key(app: Flask, cookie: str) -> str:
    return f"{app.config['SESSION_KEY_PREFIX']}{cookie}"


def test_the_cluster_client_is_used_as_given(cluster_app: Flask, fake: FakePlurality) -> None:
    """Flask-Session 0.8 alone would use Redis() on localhost instead."""
    from flask_plurality.cli import describe_store
    from flask_plurality.stores import get_store

    cluster = cluster_app.config["SESSION_REDIS"]
    assert cluster_app.session_interface.inner.client is cluster  # type: ignore[attr-defined]
    browser = cluster_app.test_client()
    assert login(browser, fake.issue_token(user_id="on-the-cluster")).status_code == 200
    assert browser.get("/protected").get_json() == {"id": "on-the-cluster"}
    cookie = browser.get_cookie("session")
    assert cookie is not None
    assert cluster.exists(_session_key(cluster_app, cookie.value)) == 1  # on the cluster, not on localhost
    with cluster_app.app_context():
        assert get_store().acks == 1  # type: ignore[attr-defined]  # "auto" on a cluster
        name, warnings = describe_store(cluster_app)
    assert name.startswith("redis cluster (RedisCluster: 3 primaries at 127.0.0.1:")
    assert warnings == []


def test_an_app_that_set_up_flask_session_itself_gets_its_cluster_client_back(
    redis_cluster: RedisClusterGroup, fake: FakePlurality, tmp_path: Path
) -> None:
    from backend_app import session_config
    from flask_session import Session

    from flask_plurality import Plurality

    app = Flask("own-session", instance_path=str(tmp_path))
    app.config.update(TESTING=True, **config_for(fake))
    session_config(app, _spec(redis_cluster))
    with pytest.warns(RuntimeWarning, match="No valid Redis instance"):
        Session(app)  # Flask-Session swaps the cluster client for Redis() on localhost...
    Plurality(app)  # ...and init_app puts it back
    try:
        assert app.session_interface.inner.client is app.config["SESSION_REDIS"]  # type: ignore[attr-defined]
        assert login(app.test_client(), fake.issue_token()).status_code == 200
    finally:
        dispose(app)


def test_revoke_user_refuses_what_no_replica_acknowledged(
    redis_cluster: RedisClusterGroup, cluster_app: Flask, fake: FakePlurality
) -> None:
    browser = cluster_app.test_client()
    assert login(browser, fake.issue_token(user_id="revoked-on-a-cluster")).status_code == 200
    replicas = [p for p in redis_cluster.servers if p not in redis_cluster.primary_ports()]
    for port in replicas:
        redis_cluster.servers[port].pause()
    try:
        with cluster_app.app_context(), pytest.raises(SessionStoreUnavailable):
            cluster_app.extensions["plurality"].revoke_user("revoked-on-a-cluster")
        result = cluster_app.test_cli_runner().invoke(args=["plurality", "revoke-user", "revoked-on-a-cluster"])
        assert result.exit_code == 7, result.output
    finally:
        for port in replicas:
            redis_cluster.servers[port].resume()
    redis_cluster.wait_healthy()
    with cluster_app.app_context():
        cluster_app.extensions["plurality"].revoke_user("revoked-on-a-cluster")  # replicas back: it takes
    assert browser.get("/protected").status_code == 401


@pytest.mark.slow
def test_a_logout_holds_when_the_primary_is_killed_right_after(
    redis_cluster: RedisClusterGroup, cluster_app: Flask, fake: FakePlurality
) -> None:
    cluster = cluster_app.config["SESSION_REDIS"]
    on: dict[int, list[Any]] = {}
    for n in range(200):  # two sessions whose entries live on the same primary
        browser = cluster_app.test_client()
        assert login(browser, fake.issue_token(user_id=f"u{n}")).status_code == 200
        cookie = browser.get_cookie("session")
        assert cookie is not None
        primary = int(cluster.get_node_from_key(_session_key(cluster_app, cookie.value)).port)
        on.setdefault(primary, []).append(browser)
        if len(on[primary]) == 2:
            break
    held, unconfirmed = on[primary]
    replica = redis_cluster.replica_of(primary)
    redis_cluster.wait_replicated()
    try:
        check_logouts_survive_a_failover(
            held,
            unconfirmed,
            replica_port=replica,
            kill_primary=lambda: redis_cluster.kill(primary),
            promoted=lambda: replica in redis_cluster.primary_ports(),
        )
    finally:
        redis_cluster.restart(primary)  # back as the promoted one's replica
        redis_cluster.wait_healthy()


def _logged_in(
    http: requests.Session, servers: list[str], fake: FakePlurality, count: int
) -> tuple[list[str], list[str]]:
    users = [f"user-{n}-{time.time_ns() % 10**6}" for n in range(count)]
    cookies = [
        login_over_http(http, servers[n % len(servers)], fake.issue_token(user_id=u)) for n, u in enumerate(users)
    ]
    return cookies, users


def _server_options(spec: dict[str, Any], fake: FakePlurality, tmp_path: Path) -> list[dict[str, Any]]:
    options = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        options.append(
            {"spec": spec, "plurality": config_for(fake), "instance_path": str(tmp_path / name), "config": {}}
        )
    return options


def _all_still_in(http: requests.Session, servers: list[str], cookies: list[str], users: list[str]) -> list[bool]:
    answers = [
        http.get(f"{servers[n % len(servers)]}/protected", cookies={"session": c}, timeout=10)
        for n, c in enumerate(cookies)
    ]
    return [a.status_code == 200 and a.json() == {"id": users[n]} for n, a in enumerate(answers)]


@pytest.mark.slow
def test_a_primary_killed_under_load_costs_seconds_of_503_never_a_500_or_a_wrong_user(
    redis_cluster: RedisClusterGroup, fake: FakePlurality, tmp_path: Path, http: requests.Session
) -> None:
    from backends import app_servers, wait_until
    from redis.cluster import ClusterNode, RedisCluster

    spec = _spec(redis_cluster)
    with RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in spec["startup"]]) as admin:
        # The primary of the revocation epoch's slot: every protected request reads it.
        victim = int(admin.get_node_from_key(f"{spec['prefix']}plurality:revocations:epoch").port)
    replica = redis_cluster.replica_of(victim)
    try:
        with app_servers(_server_options(spec, fake, tmp_path)) as servers:
            cookies, users = _logged_in(http, servers, fake, 12)
            redis_cluster.wait_replicated()  # every login has reached a replica
            with steady_traffic(http, servers, cookies, users) as traffic:
                time.sleep(1.0)
                killed = time.monotonic()
                redis_cluster.kill(victim)
                wait_until(lambda: replica in redis_cluster.primary_ports(), 30, "the cluster to promote the replica")
                promoted = time.monotonic()
                traffic.wait_clean()
            survived = _all_still_in(http, servers, cookies, users)
            new_cookies, new_users = _logged_in(http, servers[::-1], fake, 2)
            new_ones = _all_still_in(http, servers, new_cookies, new_users)
    finally:
        redis_cluster.restart(victim)
        redis_cluster.wait_healthy()
    counts, window = traffic.counts(), traffic.failing_after(killed)
    print(
        f"\nRedis Cluster primary killed: {counts} during the run; promoted after {promoted - killed:.1f} s; "
        f"last non-200 {window:.1f} s after the kill; wrong users {traffic.wrong_users()}"
    )
    assert counts.get(500, 0) == 0 and set(counts) <= {200, 503}
    assert traffic.wrong_users() == 0
    assert counts.get(200, 0) > 0
    assert window <= 15  # a few seconds of 503s: node timeout 1 s, then the election
    assert survived == [True] * len(cookies)  # replicated sessions survived
    assert new_ones == [True, True]  # and the promoted primary takes new logins


@pytest.mark.slow
def test_a_slot_migration_under_load_loses_no_login_and_answers_no_500(
    redis_cluster: RedisClusterGroup, fake: FakePlurality, tmp_path: Path, http: requests.Session
) -> None:
    from backends import app_servers, reshard
    from redis.crc import key_slot

    source, target = redis_cluster.primary_ports()[:2]
    first = next(n["first_slot"] for n in redis_cluster.nodes() if n["port"] == source)
    while True:  # a prefix whose revocation epoch (read by every request) is in a moving slot
        spec = _spec(redis_cluster)
        if first <= key_slot(f"{spec['prefix']}plurality:revocations:epoch".encode()) < first + SLOTS_MOVED:
            break
    before = redis_cluster.redirections()
    with app_servers(_server_options(spec, fake, tmp_path)) as servers:
        cookies, users = _logged_in(http, servers, fake, 80)
        during: list[tuple[str, str]] = []
        login_statuses: list[int] = []
        stop = threading.Event()

        def keep_logging_in() -> None:
            n = 0
            while not stop.is_set():
                user = f"during-{n}"
                response = http.post(
                    f"{servers[n % 2]}/plurality/login",
                    json={"token": fake.issue_token(user_id=user)},
                    headers={"Origin": servers[n % 2]},
                    timeout=10,
                )
                login_statuses.append(response.status_code)
                if response.status_code == 200:
                    during.append((str(response.cookies["session"]), user))
                n += 1

        logins = threading.Thread(target=keep_logging_in)
        with steady_traffic(http, servers, cookies, users) as traffic:
            logins.start()
            started = time.monotonic()
            moved = reshard(redis_cluster, source, target, SLOTS_MOVED)
            took = time.monotonic() - started
            stop.set()
            logins.join(30)
        assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
        kept = _all_still_in(http, servers, cookies, users)
        kept_during = _all_still_in(http, servers, [c for c, _ in during], [u for _, u in during])
    redirected = {kind: n - before[kind] for kind, n in redis_cluster.redirections().items()}
    redis_cluster.wait_healthy()
    counts = traffic.counts()
    logins_counted = {s: login_statuses.count(s) for s in sorted(set(login_statuses))}
    print(
        f"\nRedis Cluster reshard of {SLOTS_MOVED} slots in {took:.1f} s: protected {counts}, logins {logins_counted}, "
        f"redirections answered {redirected}, wrong users {traffic.wrong_users()}"
    )
    assert set(counts) == {200} and set(login_statuses) == {200}  # no 500, and nothing else either
    assert traffic.wrong_users() == 0
    assert kept == [True] * len(cookies) and kept_during == [True] * len(during)
    assert during  # logins went on during the migration


def test_a_503_for_a_logout_no_replica_acknowledged_names_no_secret(
    redis_cluster: RedisClusterGroup, cluster_app: Flask, fake: FakePlurality
) -> None:
    """The answer is the documented store outage, not a 500 or a stack trace."""
    token = fake.issue_token()
    browser = cluster_app.test_client()
    assert login(browser, token).status_code == 200
    replicas = [p for p in redis_cluster.servers if p not in redis_cluster.primary_ports()]
    for port in replicas:
        redis_cluster.servers[port].pause()
    try:
        error_of(
            browser.post("/plurality/logout", json={}, headers=SAME_ORIGIN), 503, "session_store_unavailable", token
        )
    finally:
        for port in replicas:
            redis_cluster.servers[port].resume()
    redis_cluster.wait_healthy()


def test_a_session_in_a_slot_being_migrated_is_read_and_logged_out_through_ask(
    redis_cluster: RedisClusterGroup, cluster_app: Flask, fake: FakePlurality
) -> None:
    """A slot held half-way through a migration (its keys already on the importing node):
    the source answers ASK, for the session read and for the logout's delete and WAIT."""
    import redis

    cluster = cluster_app.config["SESSION_REDIS"]
    browser = cluster_app.test_client()
    assert login(browser, fake.issue_token(user_id="moving")).status_code == 200
    cookie = browser.get_cookie("session")
    assert cookie is not None
    name = _session_key(cluster_app, cookie.value)
    slot, source = cluster.keyslot(name), int(cluster.get_node_from_key(name).port)
    target = next(p for p in redis_cluster.primary_ports() if p != source)
    ids = {n["port"]: n["id"] for n in redis_cluster.nodes()}
    before = redis_cluster.redirections()
    with redis.Redis(port=source) as src, redis.Redis(port=target) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        try:
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", name)
            assert browser.get("/protected").get_json() == {"id": "moving"}
            assert browser.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
            assert browser.get("/protected").status_code == 401
        finally:
            for port in redis_cluster.primary_ports():
                with redis.Redis(port=port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        assert dst.exists(name) == 0  # the delete reached the node that holds the slot now
    assert redis_cluster.redirections()["ASK"] - before["ASK"] >= 2  # the read and the delete
    redis_cluster.wait_healthy()
