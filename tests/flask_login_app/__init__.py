"""A small but real Flask-Login app: password logins from a Flask-WTF form (CSRF on),
remember-me, logout, flashed messages, Flask-Babel lazy strings, users in SQLite with
werkzeug password hashes. flask-plurality is added to it exactly as docs/users.rst says;
the tests drive it through the test client, reading CSRF tokens from its forms."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask, Request, flash, g, redirect, render_template, url_for
from flask_babel import Babel, gettext, lazy_gettext
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import CSRFProtect, FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import DataRequired

import flask_plurality
from flask_plurality import Plurality, Profile

#: The password every seeded user has (the tests type it into the form).
PASSWORD = "correct horse battery staple"
#: Users with a password: alice also signs in with Plurality under the same email.
SEEDED = ("alice@example.com", "bob@example.com")


class User(UserMixin):
    def __init__(self, row: sqlite3.Row) -> None:
        self.id = str(row["id"])
        self.email: str = row["email"]
        self.password_hash: str | None = row["password_hash"]


class LoginForm(FlaskForm):
    email = EmailField(lazy_gettext("Email"), validators=[DataRequired()])
    password = PasswordField(lazy_gettext("Password"), validators=[DataRequired()])
    remember = BooleanField(lazy_gettext("Remember me"))


def db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(g.db_path)
        g.db.row_factory = sqlite3.Row
    connection: sqlite3.Connection = g.db
    return connection


def user_by(column: str, value: Any) -> User | None:
    row = db().execute(f"SELECT * FROM users WHERE {column} = ?", (value,)).fetchone()
    return User(row) if row is not None else None


def create_app(config: dict[str, Any], instance_path: str) -> Flask:
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(
        SECRET_KEY="test-app-secret",
        SESSION_PERMANENT=False,  # a password login lasts as long as the browser; remember-me is the cookie
        REMEMBER_COOKIE_HTTPONLY=True,
    )
    app.config.update(config)
    db_path = str(Path(instance_path) / "users.sqlite3")
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, password_hash TEXT)"
        )
        for email in SEEDED:
            connection.execute(
                "INSERT OR IGNORE INTO users (email, password_hash) VALUES (?, ?)",
                (email, generate_password_hash(PASSWORD)),
            )

    @app.before_request
    def open_db() -> None:
        g.db_path = db_path

    @app.teardown_appcontext
    def close_db(_: BaseException | None) -> None:
        connection = g.pop("db", None)
        if connection is not None:
            connection.close()

    Babel(app)
    csrf = CSRFProtect(app)
    login_manager = LoginManager(app)
    login_manager.login_view = "login"
    login_manager.login_message = lazy_gettext("Please log in to see this page.")
    login_manager.localize_callback = str  # flash a plain str: the session store cannot keep a lazy one

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return user_by("id", user_id)

    # -- flask-plurality, as docs/users.rst adds it --------------------------------------
    plurality = Plurality(app)
    csrf.exempt(app.blueprints["plurality"])  # it checks the Origin of its posts itself

    @plurality.user_loader
    def user_for_plurality(profile: Profile) -> User | None:
        # This app links a Plurality login to the password account with the same email.
        user = user_by("email", profile.email)
        if user is None:
            db().execute("INSERT INTO users (email) VALUES (?)", (profile.email,))
            db().commit()
            user = user_by("email", profile.email)
        return user

    @login_manager.request_loader
    def user_from_plurality(_: Request) -> User | None:
        user: User | None = flask_plurality.current_user._get_current_object()
        return user

    # -- the app's own pages -------------------------------------------------------------

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str | Response:
        form = LoginForm()
        if form.validate_on_submit():
            user = user_by("email", form.email.data)
            if (
                user is None
                or not user.password_hash
                or not check_password_hash(user.password_hash, form.password.data)
            ):
                flash(gettext("Wrong email or password."), "error")
            else:
                login_user(user, remember=bool(form.remember.data))
                flash(gettext("Welcome, %(email)s.", email=user.email))
                return redirect(url_for("account"))
        return render_template("login.html", form=form)

    @app.post("/logout")
    def logout() -> Response:
        logout_user()
        flash(gettext("You have been logged out."))
        return redirect(url_for("login"))

    @app.get("/account")
    @login_required
    def account() -> str:
        return render_template("account.html", user=current_user)

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        """Both identities as the app sees them, for the tests."""
        profile = flask_plurality.current_profile
        return {
            "user": current_user.email if current_user.is_authenticated else None,
            "plurality": profile.email if profile else None,
        }

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("account"))

    return app
