"""The real-app parts of the sample: its own users, and a page not everyone may enter.

``init_members(app, plurality)`` wires them in: the user table (``examples.models``)
behind ``flask_plurality.current_user``, and ``/members``, open to users whose email is
in one of ``MEMBER_EMAIL_DOMAINS`` (``allow=``), with a clear 403 page for the others.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from flask_plurality import Plurality, Profile, current_profile, current_user, plurality_required

from .models import find_or_create, init_db

members = Blueprint("members", __name__)


def is_member(profile: Profile) -> bool:
    """Who may enter ``/members``: an app's own rule (a wallet allowlist, a DAO, a domain)."""
    domains = current_app.config["MEMBER_EMAIL_DOMAINS"]
    return bool(profile.email) and profile.email.rpartition("@")[2].lower() in domains  # type: ignore[union-attr]


@members.get("/members")
@plurality_required(allow=is_member)
def members_page() -> str:
    return render_template("members.html", user=current_user)


def init_members(app: Flask, plurality: Plurality) -> None:
    app.config.setdefault("MEMBER_EMAIL_DOMAINS", ("example.com",))
    init_db(app)
    plurality.user_loader(find_or_create)

    @plurality.forbidden_handler
    def forbidden() -> ResponseReturnValue:
        """A page for a person, JSON for a script."""
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            return render_template("forbidden.html", domains=app.config["MEMBER_EMAIL_DOMAINS"]), 403
        return jsonify(error="forbidden", message="This account may not open this page."), 403

    @app.context_processor
    def user_globals() -> dict[str, Any]:
        return {"current_user": current_user, "is_member": bool(current_profile) and is_member(current_profile)}

    app.register_blueprint(members)
