"""An app that pushes an app context at import, as many Flask-SQLAlchemy apps do, so
that ``db`` works in a shell or a script; ``tests/test_request_scope.py`` serves it under
gunicorn (one sync worker, one thread: every request reuses that context).

gunicorn -w 1 --threads 1 --pythonpath tests 'held_context_app:app'
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from flask_plurality import Plurality, current_profile, current_user

app = Flask("held_context", instance_path=os.environ["HELD_INSTANCE_PATH"])
app.config.update(
    SECRET_KEY="held-context",
    PLURALITY_API_URL=os.environ["HELD_API_URL"],
    PLURALITY_CLIENT_ID=os.environ["HELD_CLIENT_ID"],
    PLURALITY_CLIENT_SECRET=os.environ["HELD_CLIENT_SECRET"],
)
plurality = Plurality(app)


@plurality.user_loader
def load_user(profile: Any) -> dict[str, Any]:
    return {"id": profile.id}


@app.get("/pid")
def pid() -> dict[str, Any]:
    return {"pid": os.getpid()}


@app.get("/who")
def who() -> dict[str, Any]:
    """No ``@plurality_required``: whoever this request's session says, or nobody."""
    return {"logged_in": bool(current_profile), "id": current_profile.id, "user": current_user._get_current_object()}


app.app_context().push()  # held for the life of the process
