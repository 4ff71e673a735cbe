"""The conformance suite: docs/stores.rst's promises, the same tests on every session backend.

Every test here runs once per backend family of ``tests/backend_app.FAMILIES``, against
real servers (``tests/backends.py`` starts them or skips, and fails in CI, when one is
missing). Two apps built on the same backend stand for two workers or machines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
import requests.adapters
from helpers import SAME_ORIGIN, captured, error_of, logged_in_on_two, login, login_over_http, store_writes

from flask_plurality.testing import FakePlurality

if TYPE_CHECKING:
    from backends import Backend

pytest_plugins = ["backends"]


def test_a_login_is_shared_and_a_logout_ends_it_everywhere(backend: Backend, fake: FakePlurality) -> None:
    """With pymemcache's default ``noreply``, this failed on memcached: the login's write
    reached memcached after the next request, on another connection, had read."""
    browser, other = logged_in_on_two(backend.make_app(), backend.make_app(), fake.issue_token())
    assert other.get("/protected").status_code == 200  # the second worker sees the login
    assert browser.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
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


def test_a_steady_protected_request_writes_nothing_to_the_store(backend: Backend, fake: FakePlurality) -> None:
    """Flask-Session rewrites a session on every request (SESSION_REFRESH_EACH_REQUEST),
    but a Plurality login's entry and cookie expire at its token's exp: rewriting an
    unchanged one changes nothing. So a protected request writes nothing and sends no
    cookie; the app's own change to the session is still written, and a logout still
    ends the session everywhere."""
    app = backend.make_app()
    browser = app.test_client()
    with store_writes(app) as writes:
        assert login(browser, fake.issue_token()).status_code == 200
        assert "save_session" in writes  # the login itself is stored
        writes.clear()
        for _ in range(5):
            response = browser.get("/protected")
            assert response.status_code == 200
            assert "Set-Cookie" not in response.headers
            assert "Cookie" in response.headers.get("Vary", "")  # the answer depends on it
        assert writes == []

        assert browser.post("/note?value=kept").status_code == 200  # the app's own change
        assert writes == ["save_session"]
        other: Any = backend.make_app().test_client()
        other.set_cookie("session", browser.get_cookie("session").value)
        assert other.get("/note").get_json() == {"note": "kept"}  # written, shared
        writes.clear()
        assert [browser.get("/protected").status_code for _ in range(3)] == [200] * 3
        assert writes == []

    assert browser.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert other.get("/protected").status_code == 401  # the entry is gone


def test_a_session_without_a_login_keeps_flask_sessions_refresh(backend: Backend) -> None:
    """Only a Plurality login's session is pinned to its token; any other session is
    saved as Flask-Session saves it (refreshed on every request, so it slides)."""
    app = backend.make_app()
    browser = app.test_client()
    with store_writes(app) as writes:
        assert browser.post("/note?value=anonymous").status_code == 200
        writes.clear()
        assert browser.get("/note").get_json() == {"note": "anonymous"}
        assert writes == ["save_session"]


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


#: How a race ends a session: (the http session, server A, the race's number, its cookie) -> status.
Ending = Callable[[requests.Session, str, int, str], int]


def _logout(http: requests.Session, a: str, n: int, cookie: str) -> int:
    url, origin = f"{a}/plurality/logout", {"Origin": a}
    return http.post(url, json={}, headers=origin, cookies={"session": cookie}, timeout=30).status_code


def _race_round(
    http: requests.Session,
    a: str,
    b: str,
    fake: FakePlurality,
    where: Path,
    round_: int,
    end: Ending = _logout,
    users: list[str | None] | None = None,
) -> tuple[list[str], list[int]]:
    """One round of BATCH races: (the sessions' cookies, the held requests' statuses)."""
    racing = round_ % 2 == 1
    users = users or [None] * BATCH
    cookies = _in_threads([partial(login_over_http, http, a, fake.issue_token(user_id=u)) for u in users])
    release = where / f"release-{round_}"
    entered = [where / f"entered-{round_}-{n}" for n in range(BATCH)]

    def held(n: int) -> int:
        url = f"{b}/slow?entered={entered[n]}&release={release}"
        return http.get(url, cookies={"session": cookies[n]}, timeout=30).status_code

    def logout(n: int) -> int:
        if racing:  # release the held requests as the endings go out: save and delete race
            release.touch()
        return end(http, a, n, cookies[n])

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
    Afterwards the old cookie must be refused (asked of either server): zero resurrections."""
    statuses, resurrected = _finality_races(backend, fake, tmp_path, RACES)
    print(f"\n{backend.name}: {RACES} races, resurrections {dict(resurrected)}, held requests {dict(statuses)}")
    assert statuses == {200: RACES}  # every held request had been let in
    assert resurrected == {}


#: Races per backend for ``end_session`` (the same race as a logout's, fewer rounds).
END_RACES = 2 * BATCH


def test_end_session_is_final_against_requests_in_flight_on_another_process(
    backend: Backend, fake: FakePlurality, tmp_path: Path
) -> None:
    """The race above, each session ended by ``plurality.end_session`` in a third process
    (where an admin's tool or the "Your devices" page of another worker runs) instead of
    its own logout: zero resurrections."""
    plurality_app = backend.make_app()
    plurality = plurality_app.extensions["plurality"]

    def end_session(http: requests.Session, a: str, n: int, cookie: str) -> int:
        with plurality_app.app_context():
            (info,) = plurality.sessions_of(users[n])
            return 200 if plurality.end_session(users[n], info.handle) else 404

    users: list[str | None] = []
    statuses, resurrected = _finality_races(backend, fake, tmp_path, END_RACES, end_session, users)
    print(f"\n{backend.name}: {END_RACES} end_session races, resurrections {dict(resurrected)}")
    assert statuses == {200: END_RACES}
    assert resurrected == {}


def _finality_races(
    backend: Backend,
    fake: FakePlurality,
    where: Path,
    races: int,
    end: Ending = _logout,
    users: list[str | None] | None = None,
) -> tuple[Counter[int], Counter[int]]:
    """``races`` sessions ended while a request of theirs is held on the other server:
    (the held requests' statuses, the statuses of the old cookies asked afterwards
    that were not 401). ``users``, when given, is filled with one new user per session."""
    from backends import app_servers

    statuses: Counter[int] = Counter()
    resurrected: Counter[int] = Counter()
    # 40 logins at once from one address: more than the failed-login limit counts in advance.
    options = backend.server_options(PLURALITY_LOGIN_MAX_FAILURES=10 * BATCH)
    with app_servers([options, {**options, "instance_path": backend.server_options()["instance_path"]}]) as (a, b):
        http = requests.Session()
        http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # each request names its cookie
        http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=2 * BATCH))
        for round_ in range(races // BATCH):
            if users is not None:
                users[:] = [f"racer-{round_}-{n}" for n in range(BATCH)]
            cookies, held = _race_round(http, a, b, fake, where, round_, end, users)
            statuses.update(held)
            for n, cookie in enumerate(cookies):  # one shared store: either server can tell
                base = (a, b)[n % 2]
                answer = http.get(f"{base}/plurality/session", cookies={"session": cookie}, timeout=10)
                if answer.status_code != 401:
                    resurrected[answer.status_code] += 1
        http.close()
    return statuses, resurrected


# -- 2. no silent loss: a failing store answers 503 -------------------------------------


def test_a_failing_store_answers_503_and_loses_nothing_silently(backend: Backend, fake: FakePlurality) -> None:
    """Read-only directory, cut connection or stopped server: login, logout, protected
    routes and the app's own session writes answer 503; revoke_user raises and the CLI
    exits 7. Once the store is back, what was there is intact and the logout that
    answered 503 did not happen (it said so)."""
    from flask_plurality import SessionStoreUnavailable

    spec = backend.proxied_spec() if backend.proxied_spec is not None else None
    app = backend.make_app(spec)
    browser = app.test_client()
    user = "outage-user"
    assert login(browser, fake.issue_token(user_id=user)).status_code == 200
    assert browser.post("/note?value=before").status_code == 200
    with backend.outage():
        error_of(login(app.test_client(), fake.issue_token()), 503, "session_store_unavailable")
        if backend.name == "cachelib-file":
            # A read-only directory still reads, and a steady protected request writes
            # nothing: it is served. Any write fails (below).
            assert browser.get("/protected").status_code == 200
        else:
            error_of(browser.get("/protected"), 503, "session_store_unavailable")
        error_of(browser.post("/note?value=lost"), 503, "session_store_unavailable")
        error_of(browser.post("/plurality/logout", json={}, headers=SAME_ORIGIN), 503, "session_store_unavailable")
        with app.app_context(), pytest.raises(SessionStoreUnavailable):
            app.extensions["plurality"].revoke_user(user)
        result = app.test_cli_runner().invoke(args=["plurality", "revoke-user", user])
        assert result.exit_code == 7, result.output
    deadline = time.monotonic() + 30  # a Sentinel group may be electing a primary still
    while (status := browser.get("/protected").status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 200  # the logout answered 503: not logged out
    assert browser.get("/note").get_json() == {"note": "before"}  # the 503 write is not half there


# -- 3. revocation reaches every process ----------------------------------------------------


def test_revoke_user_takes_effect_on_every_process(backend: Backend, fake: FakePlurality) -> None:
    from backends import app_servers

    user = "revoked-user"
    http = requests.Session()
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    with app_servers([backend.server_options(), backend.server_options()]) as (a, b):
        cookie = login_over_http(http, a, fake.issue_token(user_id=user))
        other = login_over_http(http, a, fake.issue_token(user_id="someone-else"))
        for base in (a, b):
            assert http.get(f"{base}/protected", cookies={"session": cookie}, timeout=10).status_code == 200
        app = backend.make_app()  # a third process's view of the store: where the admin runs it
        with app.app_context():
            app.extensions["plurality"].revoke_user(user)
        for base in (b, a):
            assert http.get(f"{base}/protected", cookies={"session": cookie}, timeout=10).status_code == 401
            assert http.get(f"{base}/protected", cookies={"session": other}, timeout=10).status_code == 200
        # A later login works, everywhere (its token issued after the revocation's second).
        again = login_over_http(http, b, fake.issue_token(user_id=user, iat=int(time.time()) + 1))
        for base in (a, b):
            assert http.get(f"{base}/protected", cookies={"session": again}, timeout=10).status_code == 200
    http.close()


#: Rounds of "log in, revoke, log in again with the same token" through real servers.
REVOKED_TOKEN_ROUNDS = 10


def test_a_revoked_users_old_token_cannot_log_in_again_on_any_process(backend: Backend, fake: FakePlurality) -> None:
    """Each round: a user logs in on one server, is revoked on the other, and the token
    (stolen, or still in the widget) is posted to /login again, to both. Every one of those
    logins must be refused with 401 token_revoked, and a token issued after the revocation
    must log in."""
    from backends import app_servers

    http = requests.Session()
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    outcomes: Counter[str] = Counter()
    options = backend.server_options(PLURALITY_LOGIN_MAX_FAILURES=1000)  # each refusal counts for this client
    with app_servers([options, {**options, "instance_path": backend.server_options()["instance_path"]}]) as servers:
        for round_ in range(REVOKED_TOKEN_ROUNDS):
            first, second = servers[round_ % 2], servers[1 - round_ % 2]
            user = f"revoked-{round_}-{time.time_ns()}"
            token = fake.issue_token(user_id=user)
            cookie = login_over_http(http, first, token)
            revoked = http.post(f"{second}/revoke", json={"user_id": user}, timeout=10)
            assert revoked.status_code == 200, revoked.text
            for base in (first, second):
                again = http.post(
                    f"{base}/plurality/login", json={"token": token}, headers={"Origin": base}, timeout=10
                )
                body = again.json() if again.headers.get("Content-Type") == "application/json" else {}
                refused = (again.status_code, body.get("error")) == (401, "token_revoked")
                outcomes["refused" if refused and "session" not in again.cookies else "let in"] += 1
                old = http.get(f"{base}/protected", cookies={"session": cookie}, timeout=10)
                outcomes["old session out" if old.status_code == 401 else "old session kept"] += 1
            fresh = login_over_http(http, second, fake.issue_token(user_id=user, iat=int(time.time()) + 1))
            works = http.get(f"{first}/protected", cookies={"session": fresh}, timeout=10).ok
            outcomes["fresh login works" if works else "fresh login fails"] += 1
    http.close()
    assert outcomes == {
        "refused": 2 * REVOKED_TOKEN_ROUNDS,
        "old session out": 2 * REVOKED_TOKEN_ROUNDS,
        "fresh login works": REVOKED_TOKEN_ROUNDS,
    }


# -- 4. throttles are exact under concurrency ------------------------------------------------


def test_64_concurrent_bad_logins_reach_plurality_at_most_the_limit(backend: Backend, fake: FakePlurality) -> None:
    from backends import app_servers

    limit = 10
    tokens = [fake.issue_token() for _ in range(64)]
    for token in tokens:
        fake.revoke(token)  # well formed and unexpired: each reaches Plurality, which says no
    http = requests.Session()
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
    options = backend.server_options(PLURALITY_LOGIN_MAX_FAILURES=limit)
    with app_servers([options, {**options, "instance_path": backend.server_options()["instance_path"]}]) as servers:
        fake.reset_calls()
        start = threading.Barrier(64)

        def attempt(n: int) -> int:
            base = servers[n % 2]
            start.wait()
            url, origin = f"{base}/plurality/login", {"Origin": base}
            return http.post(url, json={"token": tokens[n]}, headers=origin, timeout=30).status_code

        statuses = Counter(_in_threads([partial(attempt, n) for n in range(64)]))
    http.close()
    asked = len(fake.calls)
    print(f"\n{backend.name}: 64 concurrent bad logins: {dict(statuses)}, {asked} reached Plurality (limit {limit})")
    assert set(statuses) <= {401, 429}
    assert asked <= limit
    assert statuses[401] == asked  # every one that was asked was refused by Plurality
    assert statuses[401] >= 1


# -- 5. bounded keys, and expired ones removed ---------------------------------------------


def test_a_forged_token_a_year_long_leaves_nothing_longer_than_a_day(backend: Backend, fake: FakePlurality) -> None:
    from backends import live_entries

    app = backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=1000)
    for _ in range(20):
        token = fake.issue_token(ttl=365 * 86400)
        fake.revoke(token)
        assert login(app.test_client(), token).status_code == 401
    entries = live_entries(backend, app)
    assert entries, "the refusals should be remembered"
    assert max(entries.values()) <= 86400 + 60, entries
    assert min(entries.values()) > 0


def test_every_entry_has_a_bounded_ttl_and_expired_ones_are_removed(backend: Backend, fake: FakePlurality) -> None:
    from backends import live_entries, stored_anything

    from flask_plurality.stores import get_store
    from flask_plurality.user_sessions import index_key

    app = backend.make_app()
    browser = app.test_client()
    answer = login(browser, fake.issue_token(ttl=3))
    assert answer.status_code == 200
    assert browser.post("/note?value=x").status_code == 200
    with app.app_context():
        index = index_key(answer.get_json()["profile"]["id"])
    if backend.name == "cachelib-file":  # a file named after the key
        index = Path(app.session_interface.inner.cache._get_filename(index)).name  # type: ignore[attr-defined]
    with app.app_context():
        app.extensions["plurality"].revoke_user("someone")
    entries = live_entries(backend, app)
    assert [name for name in entries if name.endswith(index)]  # the user's index, which expires with the session
    assert len(entries) >= 4  # the session, its index, the user's revocation stamp, the epoch
    assert max(entries.values()) <= 2 * 86400 + 5  # revocations: the longest-lived, 2 days
    assert min(entries.values()) > 0
    time.sleep(4.2)  # the session (capped at its token's 3 s) has expired
    sweep = getattr(get_store(app), "sweep", None)
    if sweep is not None:  # files and SQL rows: the hourly sweep (its work, run now)
        sweep()
    left = live_entries(backend, app)
    if "memcached" in backend.name:
        # memcached keeps a counter taken back to 0 until its window (300 s) ends: deleting
        # it at 0 could lose another worker's count in between. Bounded all the same.
        zeros = {k: v for k, v in left.items() if ":fail-" in k}
        assert zeros and max(zeros.values()) <= 300
        left = {k: v for k, v in left.items() if k not in zeros}
        entries = {k: v for k, v in entries.items() if ":fail-" not in k}
    assert len(left) == len(entries) - 2  # only the two revocation entries are left: no index either
    assert all(ttl > 2 * 86400 - 60 for ttl in left.values()), left
    if "memcached" not in backend.name:
        assert stored_anything(backend, app) == len(left)  # nothing expired lies around


# -- 6. a user's sessions: listed, ended, capped on every worker ------------------------------


def test_a_users_sessions_are_listed_and_ended_from_any_worker(backend: Backend, fake: FakePlurality) -> None:
    worker_a, worker_b = backend.make_app(), backend.make_app()
    user = "devices-user"
    laptop, phone, tablet = (worker_a.test_client() for _ in range(3))
    for browser in (laptop, phone, tablet):
        assert login(browser, fake.issue_token(user_id=user)).status_code == 200
    assert login(worker_b.test_client(), fake.issue_token(user_id="someone-else")).status_code == 200
    laptop_on_b = worker_b.test_client()
    laptop_on_b.set_cookie("session", laptop.get_cookie("session").value)  # type: ignore[union-attr]
    listed = laptop_on_b.get("/plurality/sessions").get_json()["sessions"]
    assert len(listed) == 3 and [s["current"] for s in listed].count(True) == 1
    phone_handle = next(s["handle"] for s in phone.get("/plurality/sessions").get_json()["sessions"] if s["current"])
    ended = laptop_on_b.delete(f"/plurality/sessions/{phone_handle}", headers=SAME_ORIGIN)
    assert ended.status_code == 200, ended.get_data(as_text=True)
    assert phone.get("/protected").status_code == 401  # on the other worker
    assert tablet.get("/protected").status_code == 200
    assert laptop_on_b.post("/plurality/sessions/end-others", json={}, headers=SAME_ORIGIN).get_json() == {"ended": 1}
    assert tablet.get("/protected").status_code == 401 and laptop.get("/protected").status_code == 200
    with worker_b.app_context():  # a third view: where an admin's command runs
        (only,) = worker_b.extensions["plurality"].sessions_of(user)
        assert only.handle != phone_handle and not only.current
        assert len(worker_b.extensions["plurality"].sessions_of("someone-else")) == 1


#: Logins at once, and the limit they meet.
CONCURRENT_LOGINS, LIMIT = 20, 3


def _alive_after_concurrent_logins(
    http: Any, bases: list[str], user: str, fake: FakePlurality
) -> tuple[Counter[int], int, int]:
    """CONCURRENT_LOGINS logins of ``user`` at once, alternating between ``bases`` (server
    URLs, or test clients' ""): (their statuses, how many sessions are alive, how many listed)."""
    tokens = [fake.issue_token(user_id=user) for _ in range(CONCURRENT_LOGINS)]
    start = threading.Barrier(CONCURRENT_LOGINS)
    clients = http if isinstance(http, list) else None

    def attempt(k: int) -> tuple[int, Any]:
        base = bases[k % len(bases)]
        start.wait()
        if clients is not None:  # Flask test clients, one browser each
            return login(clients[k], tokens[k]).status_code, clients[k]
        answer = http.post(f"{base}/plurality/login", json={"token": tokens[k]}, headers={"Origin": base}, timeout=30)
        return answer.status_code, answer.cookies.get("session")

    answers = _in_threads([partial(attempt, k) for k in range(CONCURRENT_LOGINS)])

    def get(k: int, who: Any, path: str) -> Any:
        if clients is not None:
            return who.get(path)
        return http.get(f"{bases[k % len(bases)]}{path}", cookies={"session": str(who)}, timeout=10)

    alive = [(k, who) for k, (status, who) in enumerate(answers) if status == 200]
    alive = [(k, who) for k, who in alive if get(k, who, "/plurality/session").status_code == 200]
    listed = get(*alive[0], "/plurality/sessions")
    sessions = listed.get_json() if clients is not None else listed.json()
    return Counter(status for status, _ in answers), len(alive), len(sessions["sessions"])


def test_the_session_limit_is_exact_under_20_concurrent_logins(backend: Backend, fake: FakePlurality) -> None:
    """20 logins of one user at once through two server processes, a limit of 3: exactly
    3 sessions are alive afterwards, and listed; the 17 oldest ended."""
    from backends import app_servers

    options = backend.server_options(PLURALITY_MAX_SESSIONS_PER_USER=LIMIT, PLURALITY_LOGIN_MAX_FAILURES=100)
    http = requests.Session()
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENT_LOGINS))
    with app_servers([options, {**options, "instance_path": backend.server_options()["instance_path"]}]) as pair:
        outcome = _alive_after_concurrent_logins(http, pair, "limited", fake)
    http.close()
    print(f"\n{backend.name}: {CONCURRENT_LOGINS} logins at once, limit {LIMIT}, end_oldest: {outcome}")
    assert outcome == (Counter({200: CONCURRENT_LOGINS}), LIMIT, LIMIT)


def test_the_refusing_session_limit_is_exact_under_20_concurrent_logins(backend: Backend, fake: FakePlurality) -> None:
    """The same with ``PLURALITY_SESSION_LIMIT = "refuse"``, through two apps (two store
    clients) in threads: exactly 3 logins succeed, 17 are refused with 403."""
    config = {"PLURALITY_MAX_SESSIONS_PER_USER": LIMIT, "PLURALITY_SESSION_LIMIT": "refuse"}
    workers = [backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=100, **config) for _ in range(2)]
    browsers = [workers[k % 2].test_client() for k in range(CONCURRENT_LOGINS)]
    outcome = _alive_after_concurrent_logins(browsers, ["", ""], "refused", fake)
    print(f"\n{backend.name}: {CONCURRENT_LOGINS} logins at once, limit {LIMIT}, refuse: {outcome}")
    assert outcome == (Counter({200: LIMIT, 403: CONCURRENT_LOGINS - LIMIT}), LIMIT, LIMIT)


# -- 7. never the wrong server ----------------------------------------------------------------


def test_the_shim_fits_every_backend(backend: Backend) -> None:
    from flask_plurality.flask_session_shim import shim

    app = backend.make_app()
    assert shim.missing(app.session_interface.inner) == []  # type: ignore[attr-defined]


def test_the_stores_own_operations_are_atomic(backend: Backend) -> None:
    """Two workers' stores (two clients), 16 threads each: one ``add`` wins, no count is
    lost, and a counter taken back to zero starts a new window."""
    from flask_plurality.stores import get_store

    stores = [get_store(backend.make_app()), get_store(backend.make_app())]
    prefix = backend.spec["prefix"]
    wins = _in_threads([partial(stores[n % 2].add, f"{prefix}marker", n, 30) for n in range(32)])
    assert wins.count(True) == 1
    counts = _in_threads([partial(stores[n % 2].incr, f"{prefix}counter", 60) for n in range(32)])
    assert sorted(count for count, _ in counts) == list(range(1, 33))
    assert all(0 < left <= 60 for _, left in counts)
    assert stores[0].peek(f"{prefix}counter")[0] == 32
    _in_threads([partial(stores[n % 2].decr, f"{prefix}counter") for n in range(32)])
    assert stores[1].peek(f"{prefix}counter")[0] == 0
    assert stores[0].incr(f"{prefix}counter", 60)[0] == 1


def test_a_session_client_flask_session_would_replace_is_refused(fake: FakePlurality, tmp_path: Path) -> None:
    """Flask-Session 0.8 swaps a SESSION_REDIS that is not a redis.Redis for Redis() on
    localhost (and likewise for memcached and SQLAlchemy), with only a warning. A
    RedisCluster is kept as given instead (tests/test_cluster.py)."""
    from flask import Flask

    from flask_plurality import ConfigurationError, Plurality
    from flask_plurality.testing import config_for

    cases = [
        ({"SESSION_TYPE": "redis", "SESSION_REDIS": object()}, "not a redis.Redis client"),
        ({"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": object()}, "not a memcached client"),
        ({"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": object()}, "not a flask_sqlalchemy.SQLAlchemy"),
    ]
    for config, message in cases:
        app = Flask("refused", instance_path=str(tmp_path))
        app.config.update(TESTING=True, **config_for(fake), **config)
        with pytest.raises(ConfigurationError, match=message):
            Plurality(app)
        assert "plurality" not in app.extensions


def test_revoke_user_on_a_per_process_store_is_refused_and_leaves_nothing(
    fake: FakePlurality, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cachelib import SimpleCache
    from helpers import build_app

    from flask_plurality import ConfigurationError

    app = build_app(fake, str(tmp_path), SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache())
    assert any("inside each process" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    browser = app.test_client()
    assert login(browser, fake.issue_token(user_id="u1")).status_code == 200
    with app.app_context(), pytest.raises(ConfigurationError, match="per process"):
        app.extensions["plurality"].revoke_user("u1")
    assert app.test_cli_runner().invoke(args=["plurality", "revoke-user", "u1"]).exit_code == 8
    assert browser.get("/protected").status_code == 200  # nothing was half revoked
    later = app.test_client()
    assert login(later, fake.issue_token(user_id="u1")).status_code == 200  # nor refuses a later login
    assert later.get("/protected").status_code == 200


# -- 8. junk cookies are nobody, not an outage ----------------------------------------------


def test_a_session_cookie_no_backend_could_hold_is_no_session(
    backend: Backend, fake: FakePlurality, caplog: pytest.LogCaptureFixture
) -> None:
    """On memcached such cookies answered 503 on protected routes and on ``/login``,
    logged an ERROR and counted a store failure every time (PostgreSQL: one with NUL):
    a planted cookie blocked its victim's login and flooded alerts. Now each is a
    missing session on every backend: anonymous, and a login on it gets a fresh id."""
    from backends import JUNK_SESSION_IDS

    from flask_plurality import signals

    app = backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=1000)
    token = fake.issue_token()
    outcomes: Counter[str] = Counter()
    with captured(signals.store_failed, app) as failures:
        for junk in JUNK_SESSION_IDS:
            browser = app.test_client()
            browser.set_cookie("session", junk)
            protected = browser.get("/protected")
            error_of(protected, 401, "login_required")
            anonymous = browser.get("/plurality/session")
            error_of(anonymous, 401, "login_required")
            browser.set_cookie("session", junk)
            logged_in = login(browser, token)
            cookie = browser.get_cookie("session")
            fresh = logged_in.status_code == 200 and cookie is not None and cookie.value != junk
            outcomes["fresh login" if fresh else f"login {logged_in.status_code}"] += 1
            assert browser.get("/protected").status_code == 200
    assert outcomes == {"fresh login": len(JUNK_SESSION_IDS)}
    assert failures == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
