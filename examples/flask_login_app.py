"""Flask-Login on top of Plurality logins: ``flask_login.current_user`` and ``@login_required``
(and extensions built on Flask-Login, such as Flask-Admin) honour a Plurality login.

The recipe is the ``request_loader`` below: Flask-Login asks it for the user of every
request, and it answers with ``flask_plurality.current_user``, the app's own user that
``@plurality.user_loader`` found for the logged-in Plurality profile. Nothing is stored
twice: the login lives in Plurality's server-side session only, so logout and
``revoke_user`` end the Flask-Login user too.

    flask --app examples.flask_login_app run --debug     # demo mode: PLURALITY_FAKE
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request
from flask_login import LoginManager, UserMixin, login_required

import flask_plurality
from flask_plurality import Plurality, Profile, plurality_required

plurality = Plurality()
login_manager = LoginManager()


class User(UserMixin):
    """The app's own user; Flask-Login needs ``is_authenticated``, ``is_active``, ``get_id``."""

    def __init__(self, profile: Profile) -> None:
        self.id = profile.id
        self.email = profile.email


@plurality.user_loader
def load_user(profile: Profile) -> User | None:
    return User(profile)  # a real app: find or create the row for profile.id


@login_manager.request_loader
def user_from_plurality(request: Request) -> User | None:
    # The user object itself (or None), not the proxy: Flask-Login keeps what it gets.
    user: User | None = flask_plurality.current_user._get_current_object()
    return user


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(PLURALITY_FAKE=True, SECRET_KEY="dev")  # demo mode; a real app sets its credentials
    app.config.update(test_config or {})
    plurality.init_app(app)
    login_manager.init_app(app)

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
