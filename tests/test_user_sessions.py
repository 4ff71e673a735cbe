"""A user's active sessions: list them, end one, end the others, cap them (docs/sessions.rst).

In one process on the default file store; the same promises on every shared backend,
across server processes, are in tests/test_backends.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import SAME_ORIGIN, captured, error_of, login

from flask_plurality import signals
from flask_plurality.testing import FakePlurality

AGENT = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"}


def _browser(app: Flask, fake: FakePlurality, user: str = "u-1", address: str = "203.0.113.77", **headers: str) -> Any:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    response = login(client, fake.issue_token(user_id=user), headers={**SAME_ORIGIN, **AGENT, **headers})
    assert response.status_code == 200, response.get_data(as_text=True)
    return client


def _listed(client: FlaskClient) -> list[dict[str, Any]]:
    response = client.get("/plurality/sessions")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()["sessions"]  # type: ignore[no-any-return]


def test_a_user_sees_each_device_once_with_this_one_marked(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    laptop = _browser(app, fake)
    phone = _browser(app, fake, address="2001:db8:1234:5678::1", **{"User-Agent": "x" * 500})
    _browser(app, fake, user="someone-else")
    listed = _listed(laptop)
    assert len(listed) == 2  # not someone else's
    mine = [s for s in listed if s["current"]]
    assert len(mine) == 1 and mine[0]["user_agent"] == AGENT["User-Agent"]
    assert mine[0]["ip"] == "203.0.113.0/24"  # a prefix by default: privacy
    other = next(s for s in listed if not s["current"])
    assert other["ip"] == "2001:db8:1234::/48"
    assert other["user_agent"] == "x" * 200
    assert all(abs(s["created_at"] - time.time()) < 30 and s["last_seen"] >= s["created_at"] for s in listed)
    assert set(listed[0]) == {"handle", "created_at", "last_seen", "user_agent", "ip", "current", "expires_at"}
    assert [s["current"] for s in _listed(phone)].count(True) == 1
    assert {s["handle"] for s in _listed(phone)} == {s["handle"] for s in listed}


def test_a_handle_is_never_the_session_id_nor_in_the_index_in_clear(make_app: Any, fake: FakePlurality) -> None:
    from flask_plurality.stores import get_store
    from flask_plurality.user_sessions import index_key

    app = make_app()
    browser = _browser(app, fake)
    cookie = browser.get_cookie("session")
    assert cookie is not None
    (handle,) = [s["handle"] for s in _listed(browser)]
    assert handle not in cookie.value and cookie.value not in handle
    assert len(base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))) == 12  # 96 random bits
    with app.app_context():
        stored = json.dumps(get_store(app).get(index_key("u-1")))
    assert cookie.value not in stored  # nothing in the index opens the session


@pytest.mark.parametrize("setting, expected", [("full", "203.0.113.77"), ("none", None), ("prefix", "203.0.113.0/24")])
def test_the_address_is_kept_as_plurality_session_ip_says(
    make_app: Any, fake: FakePlurality, setting: str, expected: str | None
) -> None:
    browser = _browser(make_app(PLURALITY_SESSION_IP=setting), fake)
    assert _listed(browser)[0]["ip"] == expected


def test_ending_a_device_logs_it_out_and_only_it(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    laptop, phone, tablet = (_browser(app, fake) for _ in range(3))
    phone_handle = next(s["handle"] for s in _listed(phone) if s["current"])
    with captured(signals.session_ended, app) as ended:
        response = laptop.delete(f"/plurality/sessions/{phone_handle}", headers=SAME_ORIGIN)
    assert response.status_code == 200 and response.get_json() == {"ended": 1, "authenticated": True}
    assert ended == [{"user_id": "u-1", "handle": phone_handle, "reason": "ended"}]
    assert phone.get("/protected").status_code == 401
    assert laptop.get("/protected").status_code == 200 and tablet.get("/protected").status_code == 200
    assert phone_handle not in {s["handle"] for s in _listed(laptop)}
    again = laptop.delete(f"/plurality/sessions/{phone_handle}", headers=SAME_ORIGIN)
    error_of(again, 404, "not_found")


def test_a_handle_of_someone_else_is_404_and_ends_nothing(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    mallory, victim = _browser(app, fake, user="mallory"), _browser(app, fake, user="victim")
    handle = _listed(victim)[0]["handle"]
    error_of(mallory.delete(f"/plurality/sessions/{handle}", headers=SAME_ORIGIN), 404, "not_found")
    error_of(mallory.delete("/plurality/sessions/%00junk", headers=SAME_ORIGIN), 404, "not_found")
    assert victim.get("/protected").status_code == 200


def test_ending_this_device_is_a_logout(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    laptop, phone = _browser(app, fake), _browser(app, fake)
    mine = next(s["handle"] for s in _listed(laptop) if s["current"])
    response = laptop.delete(f"/plurality/sessions/{mine}", headers=SAME_ORIGIN)
    assert response.get_json() == {"ended": 1, "authenticated": False}
    assert laptop.get("/protected").status_code == 401
    assert [s["current"] for s in _listed(phone)] == [True]


def test_sign_out_everywhere_else_keeps_this_device(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    others = [_browser(app, fake) for _ in range(3)]
    here = _browser(app, fake)
    stranger = _browser(app, fake, user="stranger")
    with captured(signals.session_ended, app) as ended:
        response = here.post("/plurality/sessions/end-others", json={}, headers=SAME_ORIGIN)
    assert response.status_code == 200 and response.get_json() == {"ended": 3}
    assert [e["reason"] for e in ended] == ["ended"] * 3
    assert [b.get("/protected").status_code for b in others] == [401] * 3
    assert here.get("/protected").status_code == 200 and stranger.get("/protected").status_code == 200
    assert [s["current"] for s in _listed(here)] == [True]


def test_the_endpoints_keep_the_logout_origin_rule_and_need_a_login(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    anonymous = app.test_client()
    error_of(anonymous.get("/plurality/sessions"), 401, "login_required")
    error_of(anonymous.post("/plurality/sessions/end-others", json={}, headers=SAME_ORIGIN), 401, "login_required")
    browser, other = _browser(app, fake), _browser(app, fake)
    handle = next(s["handle"] for s in _listed(other) if s["current"])
    evil = {"Origin": "https://evil.example"}
    error_of(browser.delete(f"/plurality/sessions/{handle}", headers=evil), 403, "forbidden_origin")
    error_of(browser.post("/plurality/sessions/end-others", data={"x": "1"}), 403, "forbidden_origin")
    error_of(browser.post("/plurality/sessions/end-others", json={}, headers=evil), 403, "forbidden_origin")
    assert other.get("/protected").status_code == 200
    # A script without Origin (nothing sent at all), as for /logout.
    assert browser.delete(f"/plurality/sessions/{handle}").status_code == 200
    assert other.get("/protected").status_code == 401
    wrong = browser.put("/plurality/sessions")
    error_of(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_the_python_api(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    first, second = _browser(app, fake), _browser(app, fake)
    plurality = app.extensions["plurality"]
    with app.app_context():
        listed = plurality.sessions_of("u-1")
        assert len(listed) == 2 and not any(info.current for info in listed)
        assert plurality.end_session("u-1", listed[0].handle) is True
        assert plurality.end_session("u-1", listed[0].handle) is False
        assert plurality.end_session("not-u-1", listed[1].handle) is False
        assert [info.handle for info in plurality.sessions_of("u-1")] == [listed[1].handle]
        with pytest.raises(ValueError):
            plurality.sessions_of("")
    assert sorted(c.get("/protected").status_code for c in (first, second)) == [200, 401]
    with app.app_context(), pytest.raises(RuntimeError, match="needs a request"):
        plurality.end_other_sessions()
    with app.test_request_context():
        assert plurality.end_other_sessions() == 0  # nobody is logged in in this request


def test_revoke_user_ends_every_listed_session_at_once(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    browsers = [_browser(app, fake) for _ in range(3)]
    with captured(signals.session_ended, app) as ended, app.app_context():
        app.extensions["plurality"].revoke_user("u-1")
        assert app.extensions["plurality"].sessions_of("u-1") == []
    assert [e["reason"] for e in ended] == ["revoked"] * 3
    assert [b.get("/protected").status_code for b in browsers] == [401] * 3


def test_logout_and_expiry_leave_the_index(make_app: Any, fake: FakePlurality) -> None:
    app = make_app()
    staying = _browser(app, fake)
    leaving = _browser(app, fake)
    client = app.test_client()
    assert login(client, fake.issue_token(user_id="u-1", ttl=2)).status_code == 200
    assert len(_listed(staying)) == 3
    with captured(signals.session_ended, app) as ended:
        assert leaving.post("/plurality/logout", json={}, headers=SAME_ORIGIN).status_code == 200
        time.sleep(2.2)
        assert client.get("/protected").status_code == 401  # its stored entry expired with the token
        assert [s["current"] for s in _listed(staying)] == [True]  # and left the listing by itself
        assert [e["reason"] for e in ended] == ["logout"]
        _browser(app, fake)  # the next change of the index drops it, and says so
    assert [e["reason"] for e in ended] == ["logout", "expired"]


def test_last_seen_is_written_at_most_once_per_interval(make_app: Any, fake: FakePlurality) -> None:
    from helpers import stored_login

    from flask_plurality.logins import Login

    app = make_app(PLURALITY_LAST_SEEN_INTERVAL=2)
    browser = _browser(app, fake)
    first = stored_login(app, browser)
    assert first is not None
    for _ in range(5):
        assert browser.get("/protected").status_code == 200
    assert stored_login(app, browser) == first  # not rewritten inside the interval
    time.sleep(2.1)
    assert browser.get("/protected").status_code == 200
    later = Login.load(stored_login(app, browser))
    assert later is not None and later.seen > Login.load(first).seen  # type: ignore[union-attr]
    assert _listed(browser)[0]["last_seen"] == later.seen


@pytest.mark.parametrize("policy", ["end_oldest", "refuse"])
def test_the_limit_ends_the_least_recently_seen_or_refuses(make_app: Any, fake: FakePlurality, policy: str) -> None:
    app = make_app(PLURALITY_MAX_SESSIONS_PER_USER=2, PLURALITY_SESSION_LIMIT=policy, PLURALITY_LAST_SEEN_INTERVAL=0)
    oldest, recent = _browser(app, fake), _browser(app, fake)
    time.sleep(1.1)
    assert oldest.get("/protected").status_code == 200  # now seen after "recent"
    client = app.test_client()
    with captured(signals.session_ended, app) as ended, captured(signals.login_failed, app) as failed:
        response = login(client, fake.issue_token(user_id="u-1"))
    if policy == "refuse":
        error_of(response, 403, "too_many_sessions")
        assert failed == [{"profile": None, "reason": "too_many_sessions"}] and ended == []
        assert [c.get("/protected").status_code for c in (oldest, recent, client)] == [200, 200, 401]
    else:
        assert response.status_code == 200
        assert [e["reason"] for e in ended] == ["limit"]
        assert [c.get("/protected").status_code for c in (oldest, recent, client)] == [200, 401, 200]
    assert len(_listed(oldest)) == 2
    # Logging in again in the same browser is no new device; another user in it ends its login.
    assert login(oldest, fake.issue_token(user_id="u-1")).status_code == 200
    assert len(_listed(oldest)) == 2
    assert login(recent, fake.issue_token(user_id="u-2")).status_code == 200
    assert len(_listed(oldest)) == (1 if policy == "refuse" else 2)


def test_bad_settings_are_refused_at_init_app(make_app: Any) -> None:
    from flask_plurality import ConfigurationError

    for config in (
        {"PLURALITY_MAX_SESSIONS_PER_USER": 0},
        {"PLURALITY_SESSION_LIMIT": "oldest"},
        {"PLURALITY_SESSION_IP": "half"},
        {"PLURALITY_LAST_SEEN_INTERVAL": "often"},
    ):
        with pytest.raises(ConfigurationError, match=next(iter(config))):
            make_app(**config)


def test_the_cli_lists_and_ends_a_users_sessions(make_app: Any, fake: FakePlurality) -> None:
    from flask_plurality.cli import ExitCode

    app = make_app()
    laptop, phone = _browser(app, fake), _browser(app, fake, address="198.51.100.7")
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["plurality", "sessions", "u-1"])
    assert listed.exit_code == ExitCode.OK, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:2] == ["HANDLE", "CREATED"] and len(lines) == 3
    assert "198.51.100.0/24" in listed.output and "Firefox/120.0" in listed.output
    handle = next(s["handle"] for s in _listed(phone) if s["current"])
    assert handle in listed.output
    ended = runner.invoke(args=["plurality", "end-session", "u-1", handle])
    assert ended.exit_code == ExitCode.OK and "ended" in ended.output
    assert phone.get("/protected").status_code == 401 and laptop.get("/protected").status_code == 200
    again = runner.invoke(args=["plurality", "end-session", "u-1", handle])
    assert again.exit_code == ExitCode.NOT_FOUND == 10, again.output
    nobody = runner.invoke(args=["plurality", "sessions", "nobody"])
    assert nobody.exit_code == 0 and "no live session" in nobody.output
    assert runner.invoke(args=["plurality", "sessions", " "]).exit_code == 2


def test_sessions_ended_are_counted_by_reason(make_app: Any, fake: FakePlurality) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    app = make_app(PLURALITY_MAX_SESSIONS_PER_USER=1)
    registry = CollectorRegistry()
    app.extensions["plurality"].init_metrics(app, registry=registry)
    first = _browser(app, fake)
    second = _browser(app, fake)  # the limit ends the first
    assert first.get("/protected").status_code == 401
    second.post("/plurality/logout", json={}, headers=SAME_ORIGIN)

    def ended(reason: str) -> float:
        return registry.get_sample_value("plurality_sessions_ended_total", {"reason": reason}) or 0.0

    assert (ended("limit"), ended("logout"), ended("ended")) == (1.0, 1.0, 0.0)


def test_the_index_holds_at_most_index_max_sessions(
    make_app: Any, fake: FakePlurality, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_plurality import user_sessions

    monkeypatch.setattr(user_sessions, "INDEX_MAX", 3)
    app = make_app()
    browsers = [_browser(app, fake) for _ in range(5)]
    assert len(_listed(browsers[-1])) == 3
    assert [b.get("/protected").status_code for b in browsers] == [401, 401, 200, 200, 200]


def test_a_sealed_id_opens_only_with_the_apps_key(make_app: Any) -> None:
    from flask_plurality.user_sessions import seal, unseal

    app, other = make_app(), make_app(PLURALITY_CLIENT_SECRET="another-secret")
    sealed = seal(app, "handle-1", "session:abc")
    assert "abc" not in sealed
    assert unseal(app, "handle-1", sealed) == "session:abc"
    assert unseal(app, "handle-2", sealed) is None  # bound to its handle
    assert unseal(other, "handle-1", sealed) is None  # and to the key
    assert unseal(app, "handle-1", "!!not base64") is None


def test_a_new_session_id_keeps_its_place_in_the_index(make_app: Any, fake: FakePlurality) -> None:
    """regenerate_session() (what another login system calls, and Flask-Login's login_user
    triggers) gives the session a new id: ending it by its handle still ends it."""
    app = make_app()
    plurality = app.extensions["plurality"]

    @app.post("/password-login")
    def password_login() -> dict[str, bool]:
        plurality.regenerate_session()
        return {"ok": True}

    browser = _browser(app, fake)
    before = browser.get_cookie("session")
    assert browser.post("/password-login").status_code == 200
    after = browser.get_cookie("session")
    assert before is not None and after is not None and before.value != after.value
    (info,) = _listed(browser)
    assert info["current"]
    with app.app_context():
        assert plurality.end_session("u-1", info["handle"]) is True
    assert browser.get("/protected").status_code == 401
