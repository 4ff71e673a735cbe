"""The conformance suite: SPEC 7's promises, the same tests on every session backend.

Every test here runs once per backend family of ``tests/backend_app.FAMILIES``, against
real servers (``tests/backends.py`` starts them or skips, and fails in CI, when one is
missing). Two apps built on the same backend stand for two workers or machines.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import requests.adapters
from helpers import login

from flask_plurality.testing import FakePlurality

if TYPE_CHECKING:
    from backends import Backend

pytest_plugins = ["backends"]


def test_a_login_is_shared_and_a_logout_ends_it_everywhere(backend: Backend, fake: FakePlurality) -> None:
    """With pymemcache's default ``noreply``, this failed on memcached: the login's write
    reached memcached after the next request, on another connection, had read."""
    first, second = backend.make_app(), backend.make_app()
    browser = first.test_client()
    assert login(browser, fake.issue_token()).status_code == 200
    cookie = browser.get_cookie("session")
    assert cookie is not None
    other = second.test_client()
    other.set_cookie("session", cookie.value)
    assert other.get("/protected").status_code == 200  # the second worker sees the login
    assert browser.post("/plurality/logout", json={}, headers={"Origin": "http://localhost"}).status_code == 200
    assert other.get("/protected").status_code == 401
    assert browser.get("/protected").status_code == 401


def test_the_apps_own_session_data_is_kept(backend: Backend, fake: FakePlurality) -> None:
    app = backend.make_app()
    browser = app.test_client()
    assert login(browser, fake.issue_token()).status_code == 200
    assert browser.post("/note?value=hello").get_json() == {"note": "hello"}
    other: Any = backend.make_app().test_client()
    other.set_cookie("session", browser.get_cookie("session").value)
    assert other.get("/note").get_json() == {"note": "hello"}


# -- 1. logout is final, even against requests already running -----------------------

#: Races per backend: sessions logged out while a request of theirs is in flight.
RACES = 200
#: Sessions raced at once (a round); RACES / BATCH rounds.
BATCH = 40


def _in_threads(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run every job at once in a thread of its own; their results, in order."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = jobs[n]()
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


def _login_over_http(http: requests.Session, base: str, token: str) -> str:
    response = http.post(f"{base}/plurality/login", json={"token": token}, headers={"Origin": base}, timeout=10)
    assert response.status_code == 200, response.text
    cookie = response.cookies.get("session")
    assert cookie
    return str(cookie)


def _race_round(
    http: requests.Session, a: str, b: str, fake: FakePlurality, where: Path, round_: int
) -> tuple[list[str], list[int]]:
    """One round of BATCH races: (the sessions' cookies, the held requests' statuses)."""
    racing = round_ % 2 == 1
    cookies = _in_threads([partial(_login_over_http, http, a, fake.issue_token()) for _ in range(BATCH)])
    release = where / f"release-{round_}"
    entered = [where / f"entered-{round_}-{n}" for n in range(BATCH)]

    def held(n: int) -> int:
        url = f"{b}/slow?entered={entered[n]}&release={release}"
        return http.get(url, cookies={"session": cookies[n]}, timeout=30).status_code

    def logout(n: int) -> int:
        if racing:  # release the held requests as the logouts go out: save and delete race
            release.touch()
        url, origin = f"{a}/plurality/logout", {"Origin": a}
        return http.post(url, json={}, headers=origin, cookies={"session": cookies[n]}, timeout=30).status_code

    held_statuses: list[int] = []
    slow = threading.Thread(target=lambda: held_statuses.extend(_in_threads([partial(held, n) for n in range(BATCH)])))
    slow.start()
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in entered):
        assert time.monotonic() < deadline, "the held requests never got in"
        time.sleep(0.005)
    assert _in_threads([partial(logout, n) for n in range(BATCH)]) == [200] * BATCH
    release.touch()
    slow.join(60)
    return cookies, held_statuses


def test_logout_is_final_against_requests_in_flight_on_another_process(
    backend: Backend, fake: FakePlurality, tmp_path: Path
) -> None:
    """RACES times: a request of the session is let in on server B and held; the session
    logs out on server A; then the held request ends (and Flask-Session saves the session
    it read). Half the rounds release the held requests only once the logouts answered,
    half at the same moment the logouts are sent, so the save and the delete really race.
    Afterwards the old cookie must be refused on both servers: zero resurrections."""
    from backends import app_servers

    statuses: Counter[int] = Counter()
    resurrected: Counter[int] = Counter()
    # 40 logins at once from one address: more than the failed-login limit counts in advance.
    options = backend.server_options(PLURALITY_LOGIN_MAX_FAILURES=10 * BATCH)
    with app_servers([options, {**options, "instance_path": backend.server_options()["instance_path"]}]) as (a, b):
        http = requests.Session()
        http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # each request names its cookie
        http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=2 * BATCH))
        for round_ in range(RACES // BATCH):
            cookies, held = _race_round(http, a, b, fake, tmp_path, round_)
            statuses.update(held)
            for cookie in cookies:
                for base in (a, b):
                    answer = http.get(f"{base}/plurality/session", cookies={"session": cookie}, timeout=10)
                    if answer.status_code != 401:
                        resurrected[answer.status_code] += 1
        http.close()
    print(f"\n{backend.name}: {RACES} races, resurrections {dict(resurrected)}, held requests {dict(statuses)}")
    assert statuses == {200: RACES}  # every held request had been let in
    assert resurrected == {}
