"""An existing Flask-Login app (password logins) with Plurality logins added:
``flask_login.current_user`` and ``@login_required`` (and extensions built on Flask-Login,
such as Flask-Admin) honour both, one logout ends both, and every login gets a new
session id. docs/users.rst walks through it; tests/flask_login_app is a fuller one.

    flask --app examples.flask_login_app run --debug     # demo mode: PLURALITY_FAKE
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, redirect, render_template_string, request
from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFProtect
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

import flask_plurality
from flask_plurality import Plurality, Profile, plurality_required

plurality = Plurality()
login_manager = LoginManager()
csrf = CSRFProtect()


class User(UserMixin):
    """The app's own user; Flask-Login needs ``is_authenticated``, ``is_active``, ``get_id``."""

    def __init__(self, id: str, email: str, password: str | None = None) -> None:
        self.id = id
        self.email = email
        self.password_hash = generate_password_hash(password) if password else None


#: A real app keeps these in its database.
USERS = {"1": User("1", "ann@example.com", "correct horse battery staple")}


@login_manager.user_loader
def load_password_user(user_id: str) -> User | None:  # the app's, from before Plurality
    return USERS.get(user_id)


@plurality.user_loader
def load_user(profile: Profile) -> User | None:
    return User(profile.id, profile.email)  # a real app: find or create the row for profile.id


@login_manager.request_loader
def user_from_plurality(request: Request) -> User | None:
    # The user object itself (or None), not the proxy: Flask-Login keeps what it gets.
    user: User | None = flask_plurality.current_user._get_current_object()
    return user


LOGIN_FORM = """<form method="post"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<input name="email"> <input name="password" type="password"> <button>Log in</button></form>"""


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(PLURALITY_FAKE=True, SECRET_KEY="dev")  # demo mode; a real app sets its credentials
    app.config.update(SESSION_PERMANENT=False)  # a password login ends with the browser, as before
    app.config.update(test_config or {})
    plurality.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    csrf.exempt(app.blueprints["plurality"])  # its login and logout check the Origin themselves

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str | Response:
        if request.method == "POST":
            user = next((u for u in USERS.values() if u.email == request.form.get("email")), None)
            if user and user.password_hash and check_password_hash(user.password_hash, request.form["password"]):
                login_user(user)  # a new session id; a Plurality login of someone else ends
                return redirect("/account")
        return render_template_string(LOGIN_FORM)

    @app.post("/logout")
    def logout() -> Response:
        logout_user()  # ends the Plurality login too
        return redirect("/login")

    @app.get("/account")
    @login_required  # Flask-Login's own decorator
    def account() -> dict[str, Any]:
        from flask_login import current_user

        return {"id": current_user.get_id(), "email": current_user.email}

    @app.get("/api/account")
    @plurality_required(bearer=True)  # API clients too: Plurality reads the bearer token first
    @login_required
    def api_account() -> dict[str, Any]:
        from flask_login import current_user

        return {"id": current_user.get_id()}

    return app
