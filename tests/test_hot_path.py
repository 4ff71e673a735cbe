"""What makes a protected request cheap, and why it stays right.

- the stored login is parsed once per change of what is stored (``stored_login``);
- the revocation epoch on files is one ``access`` of a marker file (``FileStore.still_current``);
- ``current_profile`` reads the profile directly;
- Flask's context is read once (``flask_context``).

``benchmarks/backends.py`` measures the cost; these tests hold the behaviour.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cachelib.file import FileSystemCache
from flask import Flask, current_app, request, session
from helpers import AppFactory, age_session, login, run_benchmark

from flask_plurality import SessionStoreUnavailable, current_profile, logins
from flask_plurality.flask_context import current_request, request_context, request_scope
from flask_plurality.logins import Login
from flask_plurality.profile import Profile
from flask_plurality.revocation import REVOCATION_EPOCH
from flask_plurality.stores.files import FileStore
from flask_plurality.testing import FakePlurality

ROOT = Path(__file__).resolve().parent.parent

# -- Flask's context, read once -------------------------------------------------------------


def test_request_context_is_what_the_proxies_give(app: Flask) -> None:
    with app.test_request_context("/protected"):
        context = request_context()
        assert context == (
            current_app._get_current_object(),  # type: ignore[attr-defined]
            request._get_current_object(),  # type: ignore[attr-defined]
            session._get_current_object(),  # type: ignore[attr-defined]
        )
        assert current_request() is request._get_current_object()  # type: ignore[attr-defined]
        assert request_scope() is request.__dict__


def test_outside_a_request_flask_says_so(app: Flask) -> None:
    assert current_request() is None and request_scope() is None
    with pytest.raises(RuntimeError, match="outside of application context"):
        request_context()
    with app.app_context():
        assert current_request() is None and request_scope() is None  # an app context is not a request
        with pytest.raises(RuntimeError, match="outside of request context"):
            request_context()


# -- the stored login, parsed once per change --------------------------------------------------


def test_a_session_is_parsed_once_until_what_is_stored_changes(
    app: Flask, fake: FakePlurality, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    original = Login.load.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Login], data: Any) -> Login | None:
        if isinstance(data, dict):  # a stored login to parse (None: there is none)
            built.append(data.get("exp"))
        return original(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(Login, "load", classmethod(counting))
    client = app.test_client()
    assert login(client, fake.issue_token(email="old@example.com")).status_code == 200
    for _ in range(5):
        response = client.get("/protected")
        assert response.status_code == 200
        assert response.get_json()["email"] == "old@example.com"
    assert len(built) == 1, built  # parsed once for five requests

    # Plurality now has another email: the next revalidation stores it, and every
    # request after it sees the new profile, not the one parsed before.
    fake.issue_token(user_id=client.get("/protected").get_json()["id"], email="new@example.com")
    assert client.post("/sensitive", headers={"Origin": "http://localhost"}).status_code == 200
    for _ in range(3):
        assert client.get("/protected").get_json()["email"] == "new@example.com"
    assert len(built) == 2, built


def test_a_changed_stored_value_is_parsed_again(app: Flask, fake: FakePlurality) -> None:
    """Whatever changes what is stored (here: the test client, as another writer would)
    is seen by the next request: the cached login is used only for an equal value."""
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert client.get("/protected").status_code == 200
    with client.session_transaction() as sess:
        data = dict(sess["_plurality"])
        data["exp"] = int(time.time()) - 1  # expired, as stored
        sess["_plurality"] = data
    response = client.get("/protected")
    assert response.status_code == 401
    assert response.get_json()["error"] == "login_required"

    assert login(client, fake.issue_token()).status_code == 200
    with client.session_transaction() as sess:
        data = dict(sess["_plurality"])
        data["u"] = "junk"  # Plurality's user object, as stored
        sess["_plurality"] = data
    assert client.get("/protected").status_code == 401


def test_the_cache_of_parsed_logins_is_bounded(app: Flask, fake: FakePlurality) -> None:
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert client.get("/protected").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.value in logins._parsed
    entry = logins._parsed.get(cookie.value)
    assert entry is not None
    number = 0
    while cookie.value in logins._parsed:  # other sessions' logins push it out, oldest first
        logins._parsed.put(f"other-{number}", entry, 4096)
        number += 1
    assert logins._parsed.size <= logins.PARSED_MAX_BYTES
    assert number == len(logins._parsed)  # one at a time: everything else is still there
    response = client.get("/protected")  # parsed again, still right
    assert response.status_code == 200 and response.get_json()["id"]
    assert cookie.value in logins._parsed
    assert "other-0" not in logins._parsed  # the least recently used made room
    assert logins._parsed.size <= logins.PARSED_MAX_BYTES


def test_revalidation_does_not_change_a_login_other_requests_hold(app: Flask, fake: FakePlurality) -> None:
    """Logins are shared between requests of a session: a revalidation writes a new one."""
    client = app.test_client()
    assert login(client, fake.issue_token()).status_code == 200
    assert client.get("/protected").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    held = logins._parsed.get(cookie.value)[1]  # type: ignore[index]
    before = (held.validated_at, held.checked_epoch, held.profile)
    age_session(client, 3600)
    assert client.post("/sensitive", headers={"Origin": "http://localhost"}).status_code == 200
    assert (held.validated_at, held.checked_epoch, held.profile) == before


# -- current_profile -------------------------------------------------------------------------


def test_current_profile_behaves_as_the_profile_and_as_nobody(app: Flask, fake: FakePlurality) -> None:
    seen: dict[str, Any] = {}

    @app.get("/inspect")
    def inspect_profile() -> dict[str, Any]:
        from flask_plurality.logins import request_profile

        profile = request_profile()
        seen.update(
            truthy=bool(current_profile),
            same=current_profile._get_current_object() is profile,  # type: ignore[attr-defined]
            equal=current_profile == profile,
            is_profile=isinstance(current_profile, Profile),
            email=current_profile.email,
            json=current_profile.to_json() == (profile.to_json() if profile else None),
        )
        return {}

    client = app.test_client()
    with app.test_request_context("/"):
        assert not current_profile
        assert current_profile.id is None
        assert current_profile.to_json() is None
        assert repr(current_profile) == "<AnonymousProfile>"
    assert login(client, fake.issue_token(email="me@example.com")).status_code == 200
    assert client.get("/inspect").status_code == 200
    assert seen == {
        "truthy": True,
        "same": True,
        "equal": True,
        "is_profile": True,
        "email": "me@example.com",
        "json": True,
    }
    with app.test_request_context("/"):
        for name in ("no_such_field", ""):  # what getattr() and templates may ask
            with pytest.raises(AttributeError):
                getattr(current_profile, name)


# -- the revocation epoch on files ---------------------------------------------------------------


def test_file_markers_follow_the_epoch_across_processes(tmp_path: Path) -> None:
    """Two FileStores on one directory stand for two processes."""
    directory = str(tmp_path / "sessions")
    one, two = FileStore(FileSystemCache(directory, threshold=0)), FileStore(FileSystemCache(directory, threshold=0))
    key = "plurality:" + REVOCATION_EPOCH
    assert one.still_current(key, None) and two.still_current(key, None)
    one.set_rarely_written(key, "1-aa", 60)
    assert not two.still_current(key, None)  # a revocation happened
    assert two.get_rarely_written(key) == "1-aa" and two.still_current(key, "1-aa")
    two.set_rarely_written(key, "2-bb", 60)
    assert not one.still_current(key, "1-aa")
    assert one.still_current(key, "2-bb") and not one.still_current(key, "3-cc")
    assert not one.still_current(key, 7)  # not a value it writes: unsure, so False
    markers = os.listdir(one._marker_dir)
    assert len(markers) == 1, markers  # the older value's marker is gone
    assert one.get(key) == "2-bb"
    # cachelib never sees the markers as entries (nor counts, lists or sweeps them).
    assert all(not path.startswith(one._marker_dir) for path in one.cache._list_dir())


def test_a_failed_epoch_write_leaves_no_marker_claiming_the_old_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """revoke_user raises when the store fails; sessions must then read the value itself,
    never trust a marker of a value that may no longer be the current one."""
    store = FileStore(FileSystemCache(str(tmp_path), threshold=0))
    key = "plurality:" + REVOCATION_EPOCH
    store.set_rarely_written(key, "1-aa", 60)
    assert store.still_current(key, "1-aa")

    def failing(*args: Any) -> None:
        raise SessionStoreUnavailable("The session store is unavailable.")

    monkeypatch.setattr(store, "_put", failing)
    with pytest.raises(SessionStoreUnavailable):
        store.set_rarely_written(key, "2-bb", 60)
    assert not store.still_current(key, "1-aa") and not store.still_current(key, "2-bb")
    assert store.get_rarely_written(key) == "1-aa"  # what readers compare with instead


def test_an_expired_epoch_file_is_removed_when_read(tmp_path: Path) -> None:
    store = FileStore(FileSystemCache(str(tmp_path), threshold=0))
    key = "plurality:" + REVOCATION_EPOCH
    store.set_rarely_written(key, "1-aa", 1)
    assert os.listdir(store._marker_dir)
    path = store.cache._get_filename(key)
    os.utime(path, (time.time() - 10, time.time() - 10))  # mtime changes: read again
    with open(path, "r+b") as raw:  # cachelib's expiry header: long past
        raw.write((1).to_bytes(4, sys.byteorder))
    assert not store.still_current(key, None)
    assert store.get_rarely_written(key) is None
    assert not os.path.exists(path)
    assert os.listdir(store._marker_dir) == []  # nothing of an expired epoch stays behind
    assert store.still_current(key, None) and not store.still_current(key, "1-aa")


def test_revoked_on_files_is_refused_by_another_instance_at_once(
    make_app: AppFactory, fake: FakePlurality, tmp_path: Path
) -> None:
    directory = str(tmp_path / "shared")

    def one() -> Flask:
        return make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(directory, threshold=0))

    first, second = one(), one()
    user = "user-" + str(time.time_ns())
    client = second.test_client()
    assert login(client, fake.issue_token(user_id=user)).status_code == 200
    for round_ in range(3):  # each revocation moves the epoch; the cheap check sees every one
        assert client.get("/protected").status_code == 200
        with first.app_context():
            first.extensions["plurality"].revoke_user(user)
        assert client.get("/protected").status_code == 401, round_
        # Signing in again: a token issued after the revocation's second.
        assert login(client, fake.issue_token(user_id=user, iat=int(time.time()) + 1)).status_code == 200
    assert client.get("/protected").status_code == 200


# -- the benchmark's round trips --------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_decorator_adds_no_store_round_trip_on_any_backend(tmp_path: Path) -> None:
    """``python -m benchmarks.backends --round-trips``: real servers, every family."""
    from backend_app import FAMILIES
    from backends import unavailable

    if shutil.which("memcached") is None:
        unavailable("memcached", "not installed (Debian's memcached package)")
    out = run_benchmark("benchmarks.backends", "--round-trips", "--json", timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) == set(FAMILIES)
    for family, measured in result.items():
        routes = measured["round_trips"]
        assert routes["/bare"] > 0, family  # the counter sees the store
        assert routes["/guarded"] == routes["/bare"], (family, routes)
        assert routes["/protected"] == routes["/bare-user"] == routes["/bare"], (family, routes)
