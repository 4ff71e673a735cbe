"""One app worker for ``bench_hostile``: logs in once normally (warm), then, on the
parent's word, logs in against the hostile answer it has queued; prints what it saw.

Run by ``bench_hostile`` in the working directory of the code under test, so it imports
that checkout's ``flask_plurality``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from flask import Flask

from flask_plurality import Plurality


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    url, client_id, secret, timeout = sys.argv[1:5]
    logging.getLogger("flask_plurality").addHandler(logging.NullHandler())  # the table says it all
    app = Flask("hostile", instance_path=tempfile.mkdtemp())
    app.config.update(
        PLURALITY_API_URL=url,
        PLURALITY_CLIENT_ID=client_id,
        PLURALITY_CLIENT_SECRET=secret,
        PLURALITY_TIMEOUT=float(timeout),
        PLURALITY_BREAKER_THRESHOLD=1000,
        PLURALITY_LOGIN_MAX_FAILURES=1000,
    )
    Plurality(app)
    client = app.test_client()
    for line in sys.stdin:  # one JSON request per line: {"token": ..., "measure": bool}
        ask = json.loads(line)
        if ask["measure"]:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
        before = _status_kib("VmRSS")
        started = time.monotonic()
        response = client.post("/plurality/login", json={"token": ask["token"]})
        seconds = time.monotonic() - started
        growth = _status_kib("VmHWM") - before
        body = response.get_json(silent=True) or {}
        print(
            json.dumps({"status": response.status_code, "error": body.get("error"), "seconds": seconds, "kib": growth}),
            flush=True,
        )


if __name__ == "__main__":
    main()
