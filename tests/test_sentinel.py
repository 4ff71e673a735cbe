"""Redis behind Sentinel: a failover (the primary killed, the replica promoted) keeps the
sessions that were replicated and costs a few seconds of 503s, never a 500.

A Sentinel group of its own (tests/backends.py: one primary, one replica, three
sentinels, on free ports of the suite's range), two app-server processes with clients from
``Sentinel(...).master_for(...)``, and steady traffic from four threads while the
primary is killed with SIGKILL.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

import pytest
import requests
import requests.adapters

from flask_plurality.testing import FakePlurality, config_for

pytest_plugins = ["backends"]
pytestmark = pytest.mark.slow


def _login(http: requests.Session, base: str, token: str) -> str:
    response = http.post(f"{base}/plurality/login", json={"token": token}, headers={"Origin": base}, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.cookies["session"])


def test_a_failover_keeps_replicated_sessions_with_seconds_of_503_and_no_500(
    fake: FakePlurality, backend_dir: Path, tmp_path: Path
) -> None:
    import redis
    from backends import app_servers, start_sentinel_group, wait_until

    group = start_sentinel_group("b", backend_dir / "sentinel-b")
    primary_port, replica_port = group.ports
    spec = {"family": "redis-sentinel", "prefix": "failover:", "sentinels": group.addresses, "service": group.service}
    options = [
        {"spec": spec, "plurality": config_for(fake), "instance_path": str(tmp_path / name), "config": {}}
        for name in ("a", "b")
    ]
    for option in options:
        Path(option["instance_path"]).mkdir()
    http = requests.Session()
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
    seen: list[tuple[float, int]] = []
    try:
        with app_servers(options) as servers:
            cookies = [_login(http, servers[n % 2], fake.issue_token()) for n in range(8)]
            with redis.Redis(port=primary_port, socket_timeout=5) as primary:
                assert primary.wait(1, 5000) >= 1  # every login has reached the replica
            stop = threading.Event()

            def traffic(n: int) -> None:
                i = n
                while not stop.is_set():
                    base, cookie = servers[i % 2], cookies[i % len(cookies)]
                    try:
                        status = http.get(f"{base}/protected", cookies={"session": cookie}, timeout=10).status_code
                    except requests.RequestException:
                        status = -1  # no answer at all: counted, must not happen
                    seen.append((time.monotonic(), status))
                    i += 1
                    time.sleep(0.02)

            threads = [threading.Thread(target=traffic, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            assert group.primary.process is not None
            killed = time.monotonic()
            group.primary.process.kill()  # SIGKILL: no goodbye to anyone
            wait_until(lambda: group.master_port() == replica_port, 30, "the sentinels to promote the replica")
            promoted = time.monotonic()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until three clean seconds of 200s
                time.sleep(0.5)
                recent = [status for at, status in seen if at > time.monotonic() - 3]
                if recent and all(status == 200 for status in recent):
                    break
            stop.set()
            for thread in threads:
                thread.join(30)
            after = [
                http.get(f"{servers[n % 2]}/protected", cookies={"session": c}, timeout=10)
                for n, c in enumerate(cookies)
            ]
            new_login = _login(http, servers[1], fake.issue_token())
            again = http.get(f"{servers[0]}/protected", cookies={"session": new_login}, timeout=10).status_code
    finally:
        http.close()
        group.stop()
    counts = Counter(status for _, status in seen)
    failing = [at for at, status in seen if status != 200]
    window = (max(failing) - killed) if failing else 0.0
    print(
        f"\nSentinel failover: {dict(counts)} during the run; promoted after {promoted - killed:.1f} s; "
        f"last non-200 {window:.1f} s after the kill"
    )
    assert counts[500] == 0
    assert set(counts) <= {200, 503}
    assert counts[200] > 0 and counts[503] >= 0
    assert window <= 15  # a few seconds of 503s: down-after 1 s, then the election
    assert [r.status_code for r in after] == [200] * len(cookies)  # replicated sessions survived
    assert again == 200  # and the promoted primary takes new logins


def test_a_logout_holds_when_the_primary_is_killed_right_after(
    fake: FakePlurality, backend_dir: Path, tmp_path: Path
) -> None:
    """Redis replicates asynchronously: a logout waits for the replica (WAIT), or is a 503."""
    from backend_app import build, dispose
    from backends import caught_up, start_sentinel_group, wait_until
    from helpers import check_logouts_survive_a_failover, login

    group = start_sentinel_group("c", backend_dir / "sentinel-c")
    primary_port, replica_port = group.ports
    spec = {"family": "redis-sentinel", "prefix": "held:", "sentinels": group.addresses, "service": group.service}
    app = build(spec, config_for(fake), str(tmp_path))
    try:
        held, unconfirmed = app.test_client(), app.test_client()
        for n, browser in enumerate((held, unconfirmed)):
            assert login(browser, fake.issue_token(user_id=f"user-{n}")).status_code == 200
        wait_until(lambda: caught_up(primary_port), 15, "the replica to catch up")

        def kill_primary() -> None:
            assert group.primary.process is not None
            group.primary.process.kill()

        check_logouts_survive_a_failover(
            held,
            unconfirmed,
            replica_port=replica_port,
            kill_primary=kill_primary,
            promoted=lambda: group.master_port() == replica_port,
        )
    finally:
        dispose(app)
        group.stop()
