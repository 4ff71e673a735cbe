"""Sessions in SQLite through Flask-SQLAlchemy: the SQL store with nothing but Python.

The conformance suite runs the SQL store against PostgreSQL and MariaDB; this file is
the part of it that needs no server, so that the CI matrix runs the SQL store on every
Python with the lowest and the newest Flask-SQLAlchemy and SQLAlchemy the package allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import logged_in_on_two, login

from flask_plurality import Plurality, current_profile, get_extension, plurality_required
from flask_plurality.testing import FakePlurality, config_for

flask_sqlalchemy = pytest.importorskip("flask_sqlalchemy")


@pytest.fixture
def sqlite_app(fake: FakePlurality, tmp_path: Path) -> Iterator[Callable[[], Flask]]:
    """Apps (workers) sharing one SQLite file for their sessions, wired as a user wires them."""
    url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    made: list[tuple[Flask, Any]] = []

    def factory() -> Flask:
        app = Flask("sqlite-sessions", instance_path=str(tmp_path / "instance"))
        app.config.update(TESTING=True, **config_for(fake), SQLALCHEMY_DATABASE_URI=url, SESSION_TYPE="sqlalchemy")
        db = flask_sqlalchemy.SQLAlchemy()
        db.init_app(app)
        app.config["SESSION_SQLALCHEMY"] = db
        Plurality(app)

        @app.get("/protected")
        @plurality_required
        def protected() -> dict[str, str]:
            return {"id": current_profile.id}

        made.append((app, db))
        return app

    yield factory
    for app, db in made:
        with app.app_context():
            db.engine.dispose()


def test_a_login_is_shared_and_a_logout_ends_it_everywhere(
    sqlite_app: Callable[[], Flask], fake: FakePlurality
) -> None:
    first, second = sqlite_app(), sqlite_app()
    browser, elsewhere = logged_in_on_two(first, second, fake.issue_token(user_id="sqlite-user"))
    assert elsewhere.get("/protected").get_json()["id"] == "sqlite-user"
    assert browser.post("/plurality/logout", headers={"Origin": "http://localhost"}).status_code == 200
    refused = elsewhere.get("/protected")
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "login_required"


def test_revoke_user_reaches_the_other_worker(sqlite_app: Callable[[], Flask], fake: FakePlurality) -> None:
    first, second = sqlite_app(), sqlite_app()
    _, elsewhere = logged_in_on_two(first, second, fake.issue_token(user_id="revoked-user"))
    with first.app_context():
        get_extension(first).revoke_user("revoked-user")
    assert elsewhere.get("/protected").status_code == 401
    again = second.test_client()
    later = fake.issue_token(user_id="revoked-user", iat=int(time.time()) + 1)  # issued after the revocation
    assert login(again, later).status_code == 200  # a new token works
    assert again.get("/protected").status_code == 200
