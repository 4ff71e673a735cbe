"""The app that ``benchmarks/memory.py`` measures: one bearer route, the default store.

Run as a script (``python memory_worker.py URL CLIENT_ID SECRET COUNT``) it sends COUNT
junk bearer tokens through Flask's test client in this process and prints one JSON line:
its RSS before and after. Served by gunicorn (``memory_worker:create_app()``) it is the
same app, configured from ``MEMORY_APP`` (JSON). Only the public API is used, so any
checkout's ``flask_plurality`` (first on ``PYTHONPATH``) can be measured.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import jwt
from flask import Flask

from flask_plurality import Plurality, current_profile, plurality_required


def create_app(url: str = "", client_id: str = "", secret: str = "") -> Flask:
    if not url:
        url, client_id, secret = json.loads(os.environ["MEMORY_APP"])
    app = Flask("memory", instance_path=tempfile.mkdtemp(prefix="plurality-memory-"))
    app.config.update(
        TESTING=True,
        PLURALITY_API_URL=url,
        PLURALITY_CLIENT_ID=client_id,
        PLURALITY_CLIENT_SECRET=secret,
    )
    Plurality(app)
    # A WARNING per throttled request would fill gunicorn's stderr pipe, which the
    # benchmark reads only at the end, and block the worker.
    logging.getLogger("flask_plurality").setLevel(logging.ERROR)

    @app.get("/api/me")
    @plurality_required(bearer=True)
    def me() -> dict[str, Any]:
        return {"id": current_profile.id}

    @app.get("/rss")
    def rss() -> dict[str, Any]:  # no gc.collect() here: over a large heap it outlasts gunicorn's timeout
        return {"rss": rss_kib(), "pid": os.getpid()}

    return app


def junk_token(n: int) -> str:
    """JWT-shaped, HS256, unexpired, not Plurality's: claims filling most of the 4,096
    characters PLURALITY_MAX_TOKEN_LENGTH allows, as hundreds of small entries."""
    # Many short keys: the JSON is small, the dict Python decodes it into is not.
    fill = {f"{k:x}{n % 7}": k for k in range(290)}
    claims = {"id": f"junk-{n}-{uuid.uuid4().hex[:8]}", "exp": int(time.time()) + 3600, **fill}
    return jwt.encode(claims, "an attacker's key, not Plurality's", algorithm="HS256")


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    url, client_id, secret, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    app = create_app(url, client_id, secret)
    client = app.test_client()
    client.get("/api/me", headers={"Authorization": f"Bearer {junk_token(-1)}"})  # warm up
    gc.collect()
    before = rss_kib()
    statuses: dict[int, int] = {}
    for n in range(count):
        status = client.get("/api/me", headers={"Authorization": f"Bearer {junk_token(n)}"}).status_code
        statuses[status] = statuses.get(status, 0) + 1
    gc.collect()
    print(json.dumps({"before": before, "after": rss_kib(), "statuses": statuses}))


if __name__ == "__main__":
    main()
