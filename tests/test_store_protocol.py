"""The backend protocol is complete on every store, and a backend without a store works.

Each store class says everything :class:`flask_plurality.stores.Store` asks for itself
(or through a shared part of ``stores/base.py``): nothing in the package asks a store
whether it has a method, so a store that lacks one would fail at the first request
that needs it. The second half runs a Flask-Session backend this package has no store
for: its sessions stay where the backend keeps them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import SAME_ORIGIN, DictSessions, login

import flask_plurality.stores
from flask_plurality import Plurality, plurality_required
from flask_plurality.logins import Login
from flask_plurality.stores import ForeignStore, Store, get_store
from flask_plurality.testing import FakePlurality, config_for

#: Classes in stores/ named ``...Store`` that are shared parts, not stores.
BASES = {"ClientStore"}


def store_classes() -> list[type]:
    """Every store class defined in ``flask_plurality.stores`` and its modules."""
    found: dict[str, type] = {}
    modules = [flask_plurality.stores] + [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(flask_plurality.stores.__path__, "flask_plurality.stores.")
    ]
    for module in modules:
        for name, cls in vars(module).items():
            if (
                inspect.isclass(cls)
                and cls.__module__.startswith("flask_plurality.stores")
                and name.endswith("Store")
                and name not in BASES
                and cls is not Store
            ):
                found[name] = cls
    return sorted(found.values(), key=lambda cls: cls.__name__)


def protocol_members() -> list[str]:
    """What the protocol asks for: its methods and its attributes."""
    methods = [name for name, value in vars(Store).items() if not name.startswith("_") and callable(value)]
    return sorted(methods + list(Store.__annotations__))


def missing_members(cls: type) -> list[str]:
    """The protocol members ``cls`` does not implement (absent, or left abstract)."""
    abstract = getattr(cls, "__abstractmethods__", frozenset())
    missing = []
    for name in protocol_members():
        if name in Store.__annotations__:
            if not isinstance(getattr(cls, name, None), bool):
                missing.append(name)
        elif not callable(getattr(cls, name, None)) or name in abstract:
            missing.append(name)
    return missing


def test_the_protocol_lists_every_capability() -> None:
    assert protocol_members() == [
        "add",
        "decr",
        "delete",
        "delete_session",
        "get",
        "get_rarely_written",
        "incr",
        "peek",
        "retrieve_session",
        "save_session",
        "set",
        "set_lasting",
        "set_rarely_written",
        "shared",
        "still_current",
        "sweep",
    ]


def test_every_backend_family_has_a_store() -> None:
    names = [cls.__name__ for cls in store_classes()]
    assert names == ["CacheLibStore", "FileStore", "ForeignStore", "MemcachedStore", "RedisStore", "SQLStore"]


@pytest.mark.parametrize("cls", store_classes(), ids=lambda cls: cls.__name__)
def test_each_store_implements_the_whole_protocol(cls: type) -> None:
    assert missing_members(cls) == [], f"{cls.__name__} lacks {missing_members(cls)}"


def test_a_store_missing_a_member_is_named() -> None:
    from flask_plurality.stores.local import CacheLibStore

    class NoSweep(CacheLibStore):
        sweep = None  # type: ignore[assignment]

    class NotShared(CacheLibStore):
        shared = None  # type: ignore[assignment]

    assert missing_members(NoSweep) == ["sweep"]
    assert missing_members(NotShared) == ["shared"]


def foreign_app(fake: FakePlurality, tmp_path: Path) -> tuple[Flask, DictSessions]:
    app = Flask("foreign", instance_path=str(tmp_path))
    app.config.update(TESTING=True, **config_for(fake))
    sessions = DictSessions(app)
    app.session_interface = sessions
    Plurality(app)

    @app.get("/protected")
    @plurality_required
    def protected() -> dict[str, Any]:
        return {"ok": True}

    return app, sessions


def test_a_backend_without_a_store_keeps_its_sessions(fake: FakePlurality, tmp_path: Path) -> None:
    app, sessions = foreign_app(fake, tmp_path)
    with app.app_context():
        assert isinstance(get_store(app), ForeignStore)
    browser = app.test_client()
    assert login(browser, fake.issue_token(user_id="u1")).status_code == 200
    cookie = browser.get_cookie("session")
    assert cookie is not None
    [(store_id, data)] = sessions.data.items()
    held = Login.load(data["_plurality"])
    assert store_id.endswith(cookie.value) and held is not None and held.profile.id == "u1"
    assert browser.get("/protected").status_code == 200
    assert browser.post("/plurality/logout", headers=SAME_ORIGIN).status_code == 200
    assert sessions.data == {}
    assert browser.get("/protected").status_code == 401


def test_a_backend_without_a_store_does_not_resurrect_a_deleted_session(fake: FakePlurality, tmp_path: Path) -> None:
    """A session deleted in the backend (a logout elsewhere) is not written back by a
    request that had read it."""
    app, sessions = foreign_app(fake, tmp_path)
    browser = app.test_client()
    assert login(browser, fake.issue_token(user_id="u1")).status_code == 200
    [store_id] = sessions.data
    store = get_store(app)
    with app.app_context():
        data, _ = store.retrieve_session(store_id, None)
        sessions.data.clear()
        store.save_session(store_id, data, 60, only_if_present=True)
    assert sessions.data == {}
    assert browser.get("/protected").status_code == 401


@pytest.mark.parametrize("owner", ["user-1", "}x", "{", "", "a}b{c", "ünï", "x" * 300])
def test_keys_of_one_owner_share_a_cluster_slot(owner: str) -> None:
    """What several keys touched by one command must carry on Redis Cluster."""
    from redis.crc import key_slot

    from flask_plurality.stores import slot_tag

    tag = slot_tag(owner)
    keys = [f"plurality:sessions:{tag}", f"plurality:session-info:{tag}:abc", f"shop:auth:index:{tag}"]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert slot_tag(owner) == tag and slot_tag(owner + "-other") != tag
