"""A request that was already running when the user logged out must not undo the logout.

Flask-Session writes the session back at the end of every request
(SESSION_REFRESH_EACH_REQUEST), from the copy it read at the start: without care, a
slow request that began before the logout would store the logged-out session again.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from helpers import SAME_ORIGIN, AppFactory

from flask_plurality import plurality_required
from flask_plurality.testing import FakePlurality, live_server


@pytest.fixture(params=["cachelib", "redis"])
def store_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "redis":
        return {"session_redis": request.getfixturevalue("redis_client")}
    return {}


def test_a_slow_request_does_not_resurrect_a_logged_out_session(
    make_app: AppFactory, fake: FakePlurality, store_config: dict[str, Any]
) -> None:
    app = make_app(**store_config)
    entered, release = threading.Event(), threading.Event()

    @app.get("/slow")
    @plurality_required
    def slow() -> str:
        entered.set()
        release.wait(10)
        return "done"

    with live_server(app) as base:
        browser = requests.Session()
        origin = {"Origin": base}
        assert browser.post(f"{base}/plurality/login", json={"token": fake.issue_token()}, headers=origin).ok
        cookie = browser.cookies.get("session")

        result: dict[str, Any] = {}
        in_flight = threading.Thread(
            target=lambda: result.update(r=requests.get(f"{base}/slow", cookies={"session": cookie}, timeout=10))
        )
        in_flight.start()
        assert entered.wait(10)
        assert browser.post(f"{base}/plurality/logout", json={}, headers=origin).json() == {"authenticated": False}
        release.set()
        in_flight.join(10)

        assert result["r"].status_code == 200  # it was let in before the logout
        replay = requests.get(f"{base}/plurality/session", cookies={"session": cookie}, timeout=5)
        assert replay.status_code == 401  # and did not store the session again
        assert requests.get(f"{base}/protected", cookies={"session": cookie}, timeout=5).status_code == 401
        browser.close()


def test_sessions_still_refresh_while_they_exist(make_app: AppFactory, fake: FakePlurality) -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/plurality/login", json={"token": fake.issue_token()}, headers=SAME_ORIGIN).status_code == 200
    with client.session_transaction() as sess:
        sess["cart"] = ["apple"]
    for _ in range(3):
        assert client.get("/protected").status_code == 200
    with client.session_transaction() as sess:
        assert sess["cart"] == ["apple"]  # written back on every request, nothing lost
