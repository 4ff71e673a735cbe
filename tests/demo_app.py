"""The app the demo-mode tests run in several processes (gunicorn workers, a dev server
the reloader restarts): ``PLURALITY_FAKE``, sessions in files in ``DEMO_INSTANCE``.

gunicorn -w 3 --pythonpath tests 'demo_app:create_app()'
python tests/demo_app.py          # app.run(debug=True) on DEMO_PORT, with the reloader
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response

from flask_plurality import Plurality, current_profile, plurality_required


def create_app() -> Flask:
    app = Flask("demo", instance_path=os.environ["DEMO_INSTANCE"])
    # "force" under gunicorn (not debug); True is enough under the debug server.
    app.config.update(SECRET_KEY="demo-app-not-secret", PLURALITY_FAKE=os.environ.get("DEMO_FAKE", "force"))
    if __name__ == "__main__":
        app.debug = True  # before init_app, which allows PLURALITY_FAKE = True in debug mode only
    Plurality(app)

    @app.after_request
    def which_process(response: Response) -> Response:
        response.headers["X-Pid"] = str(os.getpid())
        return response

    @app.get("/whoami")
    @plurality_required
    def whoami() -> dict[str, Any]:
        return {"pid": os.getpid(), "user": current_profile.id}

    @app.get("/fresh")
    @plurality_required(revalidate=True)
    def fresh() -> dict[str, Any]:
        """Asks the stand-in again, now: a session its key no longer accepts is refused here."""
        return {"pid": os.getpid(), "user": current_profile.id}

    @app.get("/pid")
    def pid() -> dict[str, Any]:
        return {"pid": os.getpid()}

    return app


if __name__ == "__main__":
    create_app().run(port=int(os.environ["DEMO_PORT"]), debug=True)
