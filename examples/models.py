"""The sample app's own user table: one SQLite row per Plurality user, created on first login.

Every real app keeps users of its own (orders, settings, roles) keyed by the Plurality
user id; ``plurality.user_loader`` turns a login into that row, and
``flask_plurality.current_user`` is it. Flask-SQLAlchemy is one way to hold the table;
any database works the same way.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_plurality import Profile


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined,misc]
    """A user of this app. The primary key is Plurality's user id (a uuid)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    wallet: Mapped[str | None] = mapped_column(String(64))
    #: When this app first saw the user (epoch seconds: plain, portable, no time zone).
    created_at: Mapped[int]

    @property
    def member_since(self) -> str:
        return datetime.fromtimestamp(self.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")

    def __repr__(self) -> str:
        return f"<User {self.id}>"


def init_db(app: Flask) -> None:
    """SQLite in the instance folder unless the app says otherwise; the table is created if missing."""
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{app.instance_path}/users.sqlite3")
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 10}})
    import os

    os.makedirs(app.instance_path, exist_ok=True)
    db.init_app(app)
    with app.app_context():
        db.create_all()


def find_or_create(profile: Profile) -> User:
    """The row for ``profile``: found by primary key, or created on the first login.

    Two first requests of one user at once both try to insert; the loser's insert fails
    on the primary key and it reads the winner's row instead.
    """
    user = db.session.get(User, profile.id)
    if user is None:
        user = User(id=profile.id, email=profile.email, wallet=profile.auth_address, created_at=int(time.time()))
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            user = db.session.get(User, profile.id)
            assert user is not None
    elif (user.email, user.wallet) != (profile.email, profile.auth_address):
        # Plurality is the source of truth for these two; keep the copy current.
        user.email, user.wallet = profile.email, profile.auth_address
        db.session.commit()
    return user
