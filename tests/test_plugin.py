"""The pytest plugin and PluralityTestClient, used the way a user's project uses them.

The README's "Testing your app" example (its ``conftest.py``, which turns the plugin on,
and its test file) is extracted byte for byte and run as a project of its own (pytester,
in a subprocess), against the README's quickstart ``app.py``, also extracted.
(``tests/test_packaging.py`` runs the same files against the built wheel.) The plugin is
opt-in: a project without that ``conftest.py`` loads nothing of the package.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_plurality import Plurality, current_profile, plurality_required
from flask_plurality.testing import FakePlurality, PluralityTestClient, config_for

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

# What a user's project has: warnings are errors.
PYTEST_INI = """
[pytest]
addopts = -p no:cacheprovider
filterwarnings =
    error
"""
OPT_IN = 'pytest_plugins = ["flask_plurality.pytest_plugin"]\n'


def readme_examples(title: str) -> list[str]:
    """The python code blocks of the README section ``title``, dedented, in order."""
    text = (ROOT / "README.rst").read_text()
    match = re.search(rf"^{re.escape(title)}\n-+\n(.*?)(?=^\S[^\n]*\n-{{3,}}\n|\Z)", text, re.M | re.S)
    assert match, f"README.rst has no section {title!r}"
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", match.group(1), re.M)
    assert blocks, f"README.rst's {title!r} has no python example"
    return [textwrap.dedent(block).strip() + "\n" for block in blocks]


def quickstart() -> str:
    """README's quickstart ``app.py``, as a user saves it."""
    return readme_examples("Quickstart")[0]


def readme_conftest_and_tests() -> tuple[str, str]:
    """README's ``conftest.py`` (the opt-in) and its ``test_app.py``."""
    conftest, tests = readme_examples("Testing your app")
    return conftest, tests


def user_project(pytester: pytest.Pytester, *, opt_in: bool = True, **tests: str) -> None:
    """A user's project: README's quickstart as ``app.py``, README's ``conftest.py``
    (unless ``opt_in=False``) and the given test modules."""
    pytester.makeini(PYTEST_INI)
    pytester.makepyfile(app=quickstart(), **tests)
    if opt_in:
        pytester.makeconftest(readme_conftest_and_tests()[0])


# -- the README example, run as it stands ------------------------------------------------


def test_readme_example_passes_as_a_project_of_its_own(pytester: pytest.Pytester) -> None:
    conftest, example = readme_conftest_and_tests()
    assert conftest == OPT_IN  # the one line a project adds
    user_project(pytester, test_readme_example=example)
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=example.count("\ndef test_"))
    result.stdout.fnmatch_lines(["*test_dashboard_shows_the_user PASSED*"])


def test_readme_example_really_tests_the_app(pytester: pytest.Pytester) -> None:
    """The same example fails against an app whose dashboard is not protected: the
    example's assertions are live, not decoration."""
    example = readme_conftest_and_tests()[1]
    user_project(pytester, test_readme_example=example)
    unprotected = quickstart().replace("    @plurality_required\n    def dashboard", "    def dashboard")
    assert unprotected != quickstart()
    pytester.makepyfile(app=unprotected)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=example.count("\ndef test_") - 2, failed=2)
    result.stdout.fnmatch_lines(["*FAILED*test_dashboard_needs_a_login*", "*FAILED*test_logout_ends_the_session*"])


@pytest.mark.parametrize("fake", ["true", "force"])
def test_readme_example_passes_with_the_quickstarts_fake_mode_still_exported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake: str
) -> None:
    """``FLASK_PLURALITY_FAKE=true`` left in the shell by the quickstart: the app reads it
    with ``from_prefixed_env()``, and the fixture's settings still win (no stand-in of
    the app's own takes the calls that ``plurality_fake`` should see)."""
    monkeypatch.setenv("FLASK_PLURALITY_FAKE", fake)
    example = readme_conftest_and_tests()[1]
    user_project(pytester, test_readme_example=example)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=example.count("\ndef test_"))


NOTHING_LOADED = """
import sys


def test_nothing_of_the_package_is_imported():
    assert sorted(name for name in sys.modules if name.startswith("flask_plurality")) == []


def test_uses_the_fixture(plurality_fake):
    pass
"""


def test_without_the_opt_in_nothing_of_the_package_loads(pytester: pytest.Pytester) -> None:
    """Installed is not enabled: a project that does not ask for the plugin gets neither
    its fixtures nor any module of the package imported into its test run."""
    pytester.makeini(PYTEST_INI)
    pytester.makepyfile(test_other_project=NOTHING_LOADED)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'plurality_fake' not found*"])


def test_the_plugin_on_the_command_line(pytester: pytest.Pytester) -> None:
    """``-p flask_plurality.pytest_plugin`` turns it on for one run, with no conftest.py."""
    user_project(pytester, opt_in=False, test_readme_example=readme_conftest_and_tests()[1])
    expected = readme_conftest_and_tests()[1].count("\ndef test_")
    pytester.runpytest_subprocess("-p", "flask_plurality.pytest_plugin").assert_outcomes(passed=expected)
    assert pytester.runpytest_subprocess().ret != 0  # and without it, the fixtures are missing


# -- the fixtures, from a user's project ---------------------------------------------------

#: The fixture a user's project writes first: its app, with the plugin's settings.
APP_FIXTURE = """
import pytest
from flask_plurality.testing import FakePlurality, PluralityTestClient

from app import create_app


@pytest.fixture
def app(plurality_config):
    app = create_app({"TESTING": True, **plurality_config})
    app.test_client_class = PluralityTestClient
    return app
"""

PLUGIN_TESTS = (
    APP_FIXTURE
    + """
import requests


def test_fixture_is_a_running_stand_in(plurality_fake, plurality_config):
    assert isinstance(plurality_fake, FakePlurality)
    store = plurality_config.pop("SESSION_CACHELIB")
    assert plurality_config == {
        "PLURALITY_FAKE": False,  # the fixture's stand-in, even with FLASK_PLURALITY_FAKE=true exported
        "PLURALITY_API_URL": plurality_fake.url,
        "PLURALITY_CLIENT_ID": plurality_fake.client_id,
        "PLURALITY_CLIENT_SECRET": plurality_fake.client_secret,
        "SESSION_TYPE": "cachelib",
    }
    assert "plurality_sessions" in store._path
    response = requests.post(plurality_fake.validate_url, json={"token": "x.y.z"}, timeout=5)
    assert (response.status_code, response.text) == (403, "Invalid token")


def test_a_login_is_one_validate_call(app, plurality_fake):
    app.test_client().login_as(email="ada@example.com")
    assert [(c.method, c.auth_ok, c.outcome) for c in plurality_fake.calls] == [("POST", True, 200)]


def test_each_test_gets_a_fresh_stand_in(plurality_fake):
    assert plurality_fake.calls == []


earlier = []


def test_an_app_of_an_earlier_test(app):
    earlier.append(app)


def test_the_stand_in_of_an_earlier_test_is_gone(plurality_fake):
    with pytest.raises(RuntimeError, match="No stand-in serves"):
        earlier[0].test_client().login_as()


def test_a_failed_login_fails_the_test_with_the_apps_answer(app, plurality_fake):
    plurality_fake.fail_next(503)
    app.test_client().login_as(email="ada@example.com")
"""
)


def test_fixtures_in_a_users_project(pytester: pytest.Pytester) -> None:
    user_project(pytester, test_with_plugin=PLUGIN_TESTS)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: login_as(): the app answered 503 SERVICE UNAVAILABLE*upstream_unavailable*"]
    )


ISOLATION_TESTS = (
    APP_FIXTURE
    + """


def junk_logins(client, times):
    return [client.post("/plurality/login", json={"token": "not.a.token"}).status_code for _ in range(times)]


def test_four_junk_tokens_then_a_login(app):
    client = app.test_client()
    assert junk_logins(client, 4) == [401] * 4
    client.login_as(email="ada@example.com")


def test_the_eleventh_junk_token_is_throttled(app):
    assert junk_logins(app.test_client(), 11) == [401] * 10 + [429]


def test_a_login_after_the_throttled_test(app):
    client = app.test_client()
    client.login_as(email="ada@example.com")
    assert client.get("/dashboard").status_code == 200
"""
)


def test_no_state_crosses_tests_or_runs(pytester: pytest.Pytester) -> None:
    """Failed-login counters live in the session store: with a store of each test's own
    the same tests pass in every run, and nothing lands in the project's instance folder."""
    user_project(pytester, test_isolation=ISOLATION_TESTS)
    for _ in range(3):
        pytester.runpytest_subprocess().assert_outcomes(passed=3)
    assert not (pytester.path / "instance").exists()


def test_a_test_that_asks_for_the_apps_own_store_shares_it(pytester: pytest.Pytester) -> None:
    """Overriding ``plurality_store`` is how a test asks otherwise; the default store
    under the instance folder then keeps the counters, and the same tests fail: the
    isolation above is what makes them pass."""
    user_project(pytester, test_isolation=ISOLATION_TESTS)
    pytester.makeconftest(OPT_IN + "\nimport pytest\n\n@pytest.fixture\ndef plurality_store():\n    return {}\n")
    result = pytester.runpytest_subprocess("-rf")
    result.assert_outcomes(passed=1, failed=2)  # the first test's four failures count in the second
    result.stdout.fnmatch_lines(
        ["*FAILED*test_the_eleventh_junk_token_is_throttled*", "*FAILED*test_a_login_after_the_throttled_test*"]
    )
    assert "answered 429 TOO MANY REQUESTS" in result.stdout.str()
    assert (pytester.path / "instance" / "plurality_sessions").is_dir()


def test_the_plugin_can_be_turned_off_like_any_other(pytester: pytest.Pytester) -> None:
    user_project(pytester, test_off="def test_uses_it(plurality_fake):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:flask_plurality.pytest_plugin")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'plurality_fake' not found*"])


# -- PluralityTestClient, in this process --------------------------------------------------


def make_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("userapp", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, PLURALITY_TIMEOUT=2.0, **config)
    Plurality(app)
    app.test_client_class = PluralityTestClient

    @app.get("/me")
    @plurality_required
    def me() -> dict[str, Any]:
        return {"id": current_profile.id, "email": current_profile.email, "wallet": current_profile.auth_address}

    return app


@pytest.fixture
def app(tmp_path: Path, plurality_config: dict[str, str]) -> Flask:
    return make_app(tmp_path, **plurality_config)


def test_login_as_goes_through_login_and_the_stand_in(app: Flask, plurality_fake: FakePlurality) -> None:
    client = app.test_client()
    assert client.get("/me").status_code == 401
    profile = client.login_as(email="ada@example.com", auth_address="0xabc")
    assert (profile.email, profile.auth_address) == ("ada@example.com", "0xabc")
    assert client.get("/me").json == {"id": profile.id, "email": "ada@example.com", "wallet": "0xabc"}
    [call] = plurality_fake.calls
    assert (call.method, call.auth_ok, call.outcome, call.token) == ("POST", True, 200, client.plurality_token)


def test_login_as_sends_a_same_origin_json_post(app: Flask, plurality_fake: FakePlurality) -> None:
    seen: list[tuple[str | None, str | None]] = []

    @app.before_request
    def spy() -> None:
        from flask import request

        seen.append((request.headers.get("Origin"), request.mimetype))

    app.test_client().login_as()
    assert seen == [("http://localhost", "application/json")]


def test_same_email_is_the_same_user_and_wallet_only_users_differ(app: Flask) -> None:
    first = app.test_client().login_as(email="ada@example.com")
    again = app.test_client().login_as(email="ada@example.com")
    assert first.id == again.id and first.unique_session_id != again.unique_session_id
    wallet_a, wallet_b = app.test_client().login_as(email=None), app.test_client().login_as(email=None)
    assert wallet_a.email is None and wallet_a.id != wallet_b.id
    chosen = app.test_client().login_as(user_id="user-42")
    assert chosen.id == "user-42"


def test_ttl_sets_when_the_login_ends(app: Flask) -> None:
    client = app.test_client()
    profile = client.login_as(ttl=120)
    assert profile.expires_at is not None and 100 < profile.expires_at - time.time() <= 120
    assert client.get("/plurality/session").json["profile"]["expires_at"] == profile.expires_at


def test_logout_through_the_real_route(app: Flask) -> None:
    client = app.test_client()
    client.login_as()
    client.logout()
    assert client.plurality_token is None
    assert client.get("/me").status_code == 401


def test_login_as_switches_users(app: Flask) -> None:
    client = app.test_client()
    client.login_as(email="ada@example.com")
    bob = client.login_as(email="bob@example.com")
    assert client.get("/me").json["id"] == bob.id


def test_login_as_works_inside_a_with_block(app: Flask) -> None:
    with app.test_client() as client:
        profile = client.login_as()
        client.get("/me")
        assert current_profile.id == profile.id


def test_login_as_refused_by_the_app_raises_with_its_answer(tmp_path: Path, plurality_fake: FakePlurality) -> None:
    app = make_app(tmp_path, **{**config_for(plurality_fake), "PLURALITY_CLIENT_SECRET": "wrong"})
    client = app.test_client()
    with pytest.raises(AssertionError, match=r"503 SERVICE UNAVAILABLE.*upstream_unavailable"):
        client.login_as()
    assert client.plurality_token is None
    assert client.get("/me").status_code == 401


def test_stand_in_given_to_the_client(tmp_path: Path) -> None:
    with FakePlurality() as mine:  # not the fixture's: the client is told which one
        app = make_app(tmp_path, **config_for(mine))
        profile = app.test_client(fake=mine).login_as(email="c@example.com")
        assert [c.outcome for c in mine.calls] == [200] and profile.email == "c@example.com"
        with pytest.raises(RuntimeError, match="No stand-in serves PLURALITY_API_URL"):
            app.test_client().login_as()


def test_stand_in_of_fake_mode(tmp_path: Path) -> None:
    app = make_app(tmp_path, PLURALITY_FAKE=True)
    client = app.test_client()
    profile = client.login_as(email="demo@example.com")
    assert client.get("/me").json["id"] == profile.id


def test_login_as_needs_cookies_and_an_app_with_the_extension(app: Flask, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="use_cookies=True"):
        app.test_client(use_cookies=False).login_as()
    bare = Flask("bare", instance_path=str(tmp_path / "bare"))
    with pytest.raises(RuntimeError, match="init_app"):
        PluralityTestClient(bare).login_as()


def test_login_as_follows_the_url_prefix_and_server_name(tmp_path: Path, plurality_fake: FakePlurality) -> None:
    app = make_app(
        tmp_path,
        **config_for(plurality_fake),
        PLURALITY_URL_PREFIX="/auth",
        SERVER_NAME="app.example",
        PREFERRED_URL_SCHEME="https",
    )
    client = app.test_client()
    client.login_as()
    assert client.get("/me").status_code == 200
