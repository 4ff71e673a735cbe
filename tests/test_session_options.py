"""Every Flask-Session option keeps every guarantee.

The conformance guarantees (logout is final, even against a request in flight; the
failed-login throttle is exact; a revocation reaches every worker; keys are bounded)
run again under each of Flask-Session's options (``backend_app.OPTIONS``: a signed
cookie, permanent or not, no refresh on each request, another key prefix, longer ids,
msgpack and JSON) on the files and Redis families (the signer and JSON on memcached and
PostgreSQL too), and under each way an app gets cachelib's size threshold on files. A
representative subset per option, in one process (two apps on one store stand for two
workers, served over real HTTP where requests must overlap), keeps the run short;
``tests/test_backends.py`` runs the whole set per family.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
import requests.adapters
from helpers import SAME_ORIGIN, all_at_once, logged_in_on_two, login, login_over_http

from flask_plurality.testing import FakePlurality, live_server

if TYPE_CHECKING:
    from backends import OptionBackend

pytest_plugins = ["backends"]

#: Sessions per round of the in-flight race; two rounds (one releasing the held
#: requests as the logouts go out, one after they answered).
BATCH = 12


def test_a_login_is_shared_and_a_logout_ends_it_everywhere(option_backend: OptionBackend, fake: FakePlurality) -> None:
    browser, other = logged_in_on_two(option_backend.make_app(), option_backend.make_app(), fake.issue_token())
    assert other.get("/protected").status_code == 200
    assert browser.post("/note?value=kept").get_json() == {"note": "kept"}
    assert other.get("/note").get_json() == {"note": "kept"}  # the app's own data, through the option
    assert browser.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
    assert other.get("/protected").status_code == 401
    assert browser.get("/protected").status_code == 401


def _http(pool: int) -> requests.Session:
    """A client that keeps no cookie: each request names the session it is for."""
    http = requests.Session()
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=pool))
    return http


def test_logout_is_final_against_requests_in_flight(
    option_backend: OptionBackend, fake: FakePlurality, tmp_path: Path
) -> None:
    """A request of the session is let in on worker B and held while the session logs
    out on worker A; then it ends and Flask-Session saves the session it read. With a
    signed cookie every such save used to be unconditional: each session came back."""
    a_app = option_backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=10 * BATCH)
    b_app = option_backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=10 * BATCH)
    http = _http(2 * BATCH)
    resurrected: Counter[int] = Counter()
    held_statuses: Counter[int] = Counter()
    with live_server(a_app) as a, live_server(b_app) as b:
        for round_ in range(2):
            cookies = all_at_once(BATCH, lambda _n: login_over_http(http, a, fake.issue_token()))
            release, entered = tmp_path / f"release-{round_}", [tmp_path / f"in-{round_}-{n}" for n in range(BATCH)]

            def held(
                n: int, cookies: list[str] = cookies, release: Path = release, entered: list[Path] = entered
            ) -> int:
                url = f"{b}/slow?entered={entered[n]}&release={release}"
                return http.get(url, cookies={"session": cookies[n]}, timeout=30).status_code

            statuses: list[int] = []
            slow = threading.Thread(
                target=lambda held=held, statuses=statuses: statuses.extend(all_at_once(BATCH, held))
            )
            slow.start()
            deadline = time.monotonic() + 30
            while not all(path.exists() for path in entered):
                assert time.monotonic() < deadline, "the held requests never got in"
                time.sleep(0.005)

            def logout(
                n: int, cookies: list[str] = cookies, release: Path = release, racing: bool = round_ == 1
            ) -> int:
                if racing:  # the held requests end as the logouts go out: save and delete race
                    release.touch()
                url = f"{a}/plurality/logout"
                return http.post(url, json={}, headers={"Origin": a}, cookies={"session": cookies[n]}).status_code

            assert all_at_once(BATCH, logout) == [200] * BATCH
            release.touch()
            slow.join(60)
            held_statuses.update(statuses)
            for n, cookie in enumerate(cookies):
                answer = http.get(f"{(a, b)[n % 2]}/plurality/session", cookies={"session": cookie}, timeout=10)
                if answer.status_code != 401:
                    resurrected[answer.status_code] += 1
    http.close()
    assert held_statuses == {200: 2 * BATCH}  # every held request had been let in
    assert resurrected == {}


def test_concurrent_bad_logins_reach_plurality_at_most_the_limit(
    option_backend: OptionBackend, fake: FakePlurality
) -> None:
    limit, attempts = 10, 40
    tokens = [fake.issue_token() for _ in range(attempts)]
    for token in tokens:
        fake.revoke(token)  # each one reaches Plurality, which says no
    apps = [option_backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=limit) for _ in range(2)]
    http = _http(attempts)
    with live_server(apps[0]) as one, live_server(apps[1]) as two:
        fake.reset_calls()

        def attempt(n: int) -> int:
            base = (one, two)[n % 2]
            response = http.post(f"{base}/plurality/login", json={"token": tokens[n]}, headers={"Origin": base})
            return response.status_code

        statuses = Counter(all_at_once(attempts, attempt))
    http.close()
    assert set(statuses) <= {401, 429}
    assert 1 <= len(fake.calls) <= limit
    assert statuses[401] == len(fake.calls)


def test_revoke_user_takes_effect_on_every_worker(option_backend: OptionBackend, fake: FakePlurality) -> None:
    first, second = option_backend.make_app(), option_backend.make_app()
    browser, other = logged_in_on_two(first, second, fake.issue_token(user_id="revoked"))
    bystander, _ = logged_in_on_two(first, second, fake.issue_token(user_id="someone-else"))
    assert other.get("/protected").status_code == 200
    admin = option_backend.make_app()  # a third process's view of the store
    with admin.app_context():
        admin.extensions["plurality"].revoke_user("revoked")
    assert other.get("/protected").status_code == 401
    assert browser.get("/protected").status_code == 401
    assert bystander.get("/protected").status_code == 200


def test_a_forged_token_a_year_long_leaves_nothing_longer_than_a_day(
    option_backend: OptionBackend, fake: FakePlurality
) -> None:
    from backends import live_entries

    app = option_backend.make_app(PLURALITY_LOGIN_MAX_FAILURES=1000)
    browser = app.test_client()
    assert login(browser, fake.issue_token(ttl=600)).status_code == 200
    for _ in range(5):
        token = fake.issue_token(ttl=365 * 86400)
        fake.revoke(token)
        assert login(app.test_client(), token).status_code == 401
    entries = live_entries(option_backend.backend, app)
    assert entries, "the refusals should be remembered"
    assert max(entries.values()) <= 86400 + 60, entries
    assert min(entries.values()) > 0


# -- cachelib's size threshold ---------------------------------------------------------------

THRESHOLD_CASES = pytest.mark.parametrize("threshold", ["cachelib-default", "filesystem", "filesystemcache"])


@pytest.mark.slow
@THRESHOLD_CASES
def test_600_logins_stay_logged_in_under_the_default_threshold(
    threshold: str, fake: FakePlurality, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cachelib prunes a directory over 500 files whether the entries expired or not:
    599 of 600 users were logged out. The threshold Flask-Session chose is made 0."""
    app = _files_app(threshold, fake, tmp_path, monkeypatch, PLURALITY_LOGIN_MAX_FAILURES=10)
    browsers = []
    for _ in range(600):
        browser = app.test_client()
        assert login(browser, fake.issue_token(), environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200
        browsers.append(browser)
    statuses = Counter(browser.get("/protected").status_code for browser in browsers)
    assert statuses == {200: 600}


@THRESHOLD_CASES
def test_the_failed_login_throttle_survives_the_default_threshold(
    threshold: str, fake: FakePlurality, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 refused logins, a limit of 10, with 550 files already in the directory (over
    the threshold of 500): the counter used to be pruned, and 60 of 60 reached Plurality."""
    app = _files_app(threshold, fake, tmp_path, monkeypatch, PLURALITY_LOGIN_MAX_FAILURES=10)
    from flask_plurality.stores import get_store

    store = get_store(app)
    for n in range(550):
        store.set(f"filler:{n}", n, 600)
    fake.reset_calls()
    for _ in range(60):
        token = fake.issue_token()
        fake.revoke(token)
        assert login(app.test_client(), token).status_code in (401, 429)
    assert len(fake.calls) <= 10


def _files_app(
    threshold: str, fake: FakePlurality, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: Any
) -> Any:
    import warnings

    from cachelib.file import FileSystemCache
    from helpers import build_app

    sessions = tmp_path / "sessions"
    sessions.mkdir()
    if threshold == "cachelib-default":
        monkeypatch.chdir(sessions)  # Flask-Session's own cache: ./flask_session
        config.update(SESSION_TYPE="cachelib")
    elif threshold == "filesystem":
        config.update(SESSION_TYPE="filesystem", SESSION_FILE_DIR=str(sessions))
    else:
        config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(str(sessions)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="flask_session")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="flask_session")
        return build_app(fake, str(tmp_path / "instance"), **config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SESSION_TYPE": "filesystem", "SESSION_FILE_THRESHOLD": 100}, "SESSION_FILE_THRESHOLD = 100"),
        ({"SESSION_TYPE": "cachelib", "threshold": 1000}, "threshold=1000"),
    ],
)
def test_a_threshold_the_app_chose_is_refused_with_what_to_set(
    config: dict[str, Any], message: str, fake: FakePlurality, tmp_path: Path
) -> None:
    import warnings

    from cachelib.file import FileSystemCache
    from flask import Flask

    from flask_plurality import ConfigurationError, Plurality
    from flask_plurality.testing import config_for

    config = dict(config)
    if "threshold" in config:
        config["SESSION_CACHELIB"] = FileSystemCache(str(tmp_path / "s"), threshold=config.pop("threshold"))
    else:
        config["SESSION_FILE_DIR"] = str(tmp_path / "s")
    app = Flask("refused", instance_path=str(tmp_path))
    app.config.update(TESTING=True, **config_for(fake), **config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="flask_session")
        with pytest.raises(ConfigurationError, match=r"(?i)threshold") as refused:
            Plurality(app)
    assert message in str(refused.value)
    assert "=0" in str(refused.value).replace(" ", "") or "to 0" in str(refused.value)
    assert "plurality" not in app.extensions


# -- the session cookie's lifetime -------------------------------------------------------------


def test_a_session_without_a_login_keeps_a_browser_session_cookie(fake: FakePlurality, tmp_path: Path) -> None:
    from helpers import build_app

    app = build_app(fake, str(tmp_path))

    @app.post("/remember")
    def remember() -> dict[str, Any]:
        from flask import session

        session["theme"] = "dark"
        return {}

    assert app.config["SESSION_PERMANENT"] is False
    browser = app.test_client()
    response = browser.post("/remember")
    assert response.status_code == 200
    cookie = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert cookie and "Expires" not in cookie[0]  # gone when the browser closes


def test_a_login_cookie_lasts_to_the_tokens_expiry(fake: FakePlurality, tmp_path: Path) -> None:
    from email.utils import parsedate_to_datetime

    from helpers import build_app

    app = build_app(fake, str(tmp_path))
    exp = time.time() + 3600
    token = fake.issue_token(ttl=3600)
    response = login(app.test_client(), token)
    assert response.status_code == 200
    header = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))
    expires = next(part.split("=", 1)[1] for part in header.split("; ") if part.startswith("Expires="))
    assert abs(parsedate_to_datetime(expires).timestamp() - exp) <= 2  # not 31 days


def test_an_apps_own_session_permanent_is_kept(fake: FakePlurality, tmp_path: Path) -> None:
    from helpers import build_app

    app = build_app(fake, str(tmp_path), SESSION_PERMANENT=True)
    assert app.config["SESSION_PERMANENT"] is True
    response = app.test_client().post("/plurality/login", json={"token": "x"}, headers=SAME_ORIGIN)
    assert response.status_code in (400, 401)


# -- values the serializer cannot encode --------------------------------------------------------


class Opaque:
    """An object of the app's own: no serializer but pickle knows it."""


def _flash_app(fake: FakePlurality, tmp_path: Path, **config: Any) -> Any:
    from babel.support import LazyProxy
    from flask import flash, session
    from helpers import build_app

    app = build_app(fake, str(tmp_path), PROPAGATE_EXCEPTIONS=False, **config)

    @app.post("/flash")
    def flash_lazy() -> dict[str, Any]:
        """As Flask-Login flashes its message: a lazy string (babel's, as Flask-Babel's)."""
        flash(LazyProxy(lambda: "Please log in to access this page."), "message")
        return {}

    @app.post("/object")
    def store_object() -> dict[str, Any]:
        session["thing"] = {"nested": [Opaque()]}
        return {}

    return app


def _assert_500_not_503(response: Any, caplog: pytest.LogCaptureFixture, key: str, type_name: str) -> None:
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert "session_store_unavailable" not in response.get_data(as_text=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "flask_plurality" and r.levelname == "ERROR"]
    assert any(repr(key) in line and type_name in line for line in lines), lines
    assert not any("store failed" in line for line in lines), lines
    assert not any("Please log in" in r.getMessage() for r in caplog.records)  # never the value itself


@pytest.mark.redis
def test_a_lazy_string_under_msgpack_is_a_500_naming_the_key(
    fake: FakePlurality, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import redis
    from helpers import redis_url_or_skip

    client = redis.Redis.from_url(redis_url_or_skip(), socket_timeout=2)
    app = _flash_app(fake, tmp_path, SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX="lazy:")
    browser = app.test_client()
    assert login(browser, fake.issue_token()).status_code == 200
    response = browser.post("/flash")
    _assert_500_not_503(response, caplog, "_flashes", "LazyProxy")
    assert browser.get("/protected").status_code == 200  # the login is intact
    client.close()


def test_the_test_helpers_store_refuses_what_msgpack_refuses(
    fake: FakePlurality, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The plugin's store used pickle, which takes a lazy string: an app's tests passed
    and production (Redis, msgpack) answered 503 to every flash."""
    from flask_plurality.testing import store_config

    app = _flash_app(fake, tmp_path, **store_config(tmp_path / "store"))
    browser = app.test_client()
    assert login(browser, fake.issue_token()).status_code == 200
    _assert_500_not_503(browser.post("/flash"), caplog, "_flashes", "LazyProxy")
    caplog.clear()
    _assert_500_not_503(browser.post("/object"), caplog, "thing", "Opaque")
    assert browser.get("/protected").status_code == 200


def test_the_test_helpers_store_follows_the_apps_serialization_format(fake: FakePlurality, tmp_path: Path) -> None:
    from flask import session

    from flask_plurality.testing import store_config

    config = store_config(tmp_path / "store")
    app = _flash_app(fake, tmp_path, SESSION_SERIALIZATION_FORMAT="json", **config)

    @app.post("/pair")
    def pair() -> dict[str, Any]:
        session["pair"] = (1, 2)
        return {}

    @app.get("/pair")
    def read_pair() -> dict[str, Any]:
        return {"type": type(session["pair"]).__name__}

    browser = app.test_client()
    assert browser.post("/pair").status_code == 200
    assert browser.get("/pair").get_json() == {"type": "list"}  # read back as Redis would
    assert config["SESSION_CACHELIB"].serializer.format == "json"


def test_an_object_pickle_cannot_take_is_a_500_on_the_default_store(
    fake: FakePlurality, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = _flash_app(fake, tmp_path)

    @app.post("/lock")
    def lock() -> dict[str, Any]:
        from flask import session

        session["lock"] = threading.Lock()
        return {}

    browser = app.test_client()
    assert login(browser, fake.issue_token()).status_code == 200
    _assert_500_not_503(browser.post("/lock"), caplog, "lock", "lock")
    assert browser.get("/protected").status_code == 200
    leftovers = [p.name for p in (tmp_path / "plurality_sessions").iterdir() if p.name.startswith("tmp")]
    assert leftovers == []  # no half-written file left behind


def test_store_config_is_what_the_plugin_gives(plurality_config: dict[str, Any]) -> None:
    from flask_plurality.stores.files import SessionFormatSerializer

    assert isinstance(plurality_config["SESSION_CACHELIB"].serializer, SessionFormatSerializer)
