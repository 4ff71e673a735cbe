"""Many processes, one Redis: a login made through any of them is honoured by all of
them, and so is a logout. Real gunicorn workers and app processes over real HTTP; the
Plurality stand-in runs in this test process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import fan_out, redis_url_or_skip
from helpers import gunicorn as serve

from flask_plurality.testing import FakePlurality

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@contextmanager
def gunicorn(fake: FakePlurality, workers: int, log: Path) -> Iterator[str]:
    """``gunicorn -w N 'scaleout_app:create_app()'`` on a free port; yields its base URL."""
    env = {
        **os.environ,
        "SCALEOUT_SECRET_KEY": "the-same-key-in-every-process",
        "SCALEOUT_API_URL": fake.url,
        "SCALEOUT_CLIENT_ID": fake.client_id,
        "SCALEOUT_CLIENT_SECRET": fake.client_secret,
        "SCALEOUT_REDIS_URL": redis_url_or_skip(),
    }
    with serve("scaleout_app:create_app()", env, workers, log) as base:
        yield base


def sign_in(base: str, fake: FakePlurality) -> tuple[str, str]:
    """Log in through one request; return (session cookie value, user id)."""
    response = requests.post(f"{base}/plurality/login", json={"token": fake.issue_token()}, timeout=10)
    assert response.status_code == 200, response.text
    return response.cookies["session"], response.json()["profile"]["id"]


def ask(base: str, cookie: str) -> tuple[int, int | None, str | None]:
    """GET /whoami on a new connection: (status, pid that answered, user)."""
    response = requests.get(f"{base}/whoami", cookies={"session": cookie}, timeout=10)
    if response.status_code != 200:
        return response.status_code, None, None
    body = response.json()
    return 200, body["pid"], body["user"]


def pids_of(base: str, times: int) -> set[int]:
    return {r["pid"] for r in fan_out(lambda: requests.get(f"{base}/pid", timeout=10).json(), times)}


def test_three_gunicorn_workers_share_logins_and_logouts(
    fake: FakePlurality, redis_client: Any, tmp_path: Path
) -> None:
    with gunicorn(fake, 3, tmp_path / "gunicorn.log") as base:
        workers = pids_of(base, 30)
        assert len(workers) == 3
        cookie, user = sign_in(base, fake)

        answers = fan_out(lambda: ask(base, cookie), 200)
        assert [status for status, _, _ in answers] == [200] * 200
        assert {who for _, _, who in answers} == {user}
        assert {pid for _, pid, _ in answers} == workers  # every worker honoured it
        assert len(fake.calls) == 1  # the login's; the workers never asked again

        logout = requests.post(f"{base}/plurality/logout", cookies={"session": cookie}, json={}, timeout=10)
        assert logout.status_code == 200
        after = fan_out(lambda: ask(base, cookie), 200)
        assert [status for status, _, _ in after] == [401] * 200  # at once, in every worker
        assert pids_of(base, 30) == workers  # the same workers, still up


def test_two_app_processes_on_two_ports_share_logins_and_logouts(
    fake: FakePlurality, redis_client: Any, tmp_path: Path
) -> None:
    with gunicorn(fake, 1, tmp_path / "a.log") as first, gunicorn(fake, 1, tmp_path / "b.log") as second:
        assert pids_of(first, 4).isdisjoint(pids_of(second, 4))
        cookie, user = sign_in(first, fake)

        answers = fan_out(lambda: ask(first, cookie), 100) + fan_out(lambda: ask(second, cookie), 100)
        assert [status for status, _, _ in answers] == [200] * 200
        assert {who for _, _, who in answers} == {user}

        logout = requests.post(f"{second}/plurality/logout", cookies={"session": cookie}, json={}, timeout=10)
        assert logout.status_code == 200
        after = fan_out(lambda: ask(first, cookie), 100) + fan_out(lambda: ask(second, cookie), 100)
        assert [status for status, _, _ in after] == [401] * 200
        assert len(fake.calls) == 1
