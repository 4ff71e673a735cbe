"""Which of the package's functions one protected request and one login call, by module.

    python -m benchmarks.trace_calls                      # files (the default store)
    python -m benchmarks.trace_calls --redis-url redis://127.0.0.1:6379/9
    python -m benchmarks.trace_calls --package ../old     # another checkout's package

A reading aid for reviews of the package's seams, not a speed figure (for that:
``benchmarks/backends.py``): for each traced request it prints how many Python calls
ran in all, how many of them were the package's own, how many of the package's modules
they passed through, and the package's calls per module. Everything is warmed up first
(imports, the parse cache, the answer cache), so what is traced is the steady state:
the second protected request of a session, and a login with a token never seen before.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any


def _use_package(package: str | None) -> None:
    if package:
        sys.path.insert(0, package)


def _trace(action: Callable[[], Any]) -> tuple[int, Counter[str]]:
    """Run ``action`` under a profile hook: (every Python call, the package's calls by module)."""
    total = 0
    ours: Counter[str] = Counter()

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal total
        if event != "call":
            return
        total += 1
        module = frame.f_globals.get("__name__", "")
        if module == "flask_plurality" or module.startswith("flask_plurality."):
            ours[module] += 1

    sys.setprofile(hook)
    try:
        action()
    finally:
        sys.setprofile(None)
    return total, ours


def _report(title: str, total: int, ours: Counter[str]) -> str:
    lines = [
        f"{title}: {total} Python calls, {sum(ours.values())} in flask_plurality, through {len(ours)} of its modules",
        "",
        "| module | calls |",
        "| --- | ---: |",
    ]
    lines += [f"| {module} | {count} |" for module, count in sorted(ours.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines)


def run(package: str | None = None, redis_url: str | None = None) -> str:
    _use_package(package)
    from flask import Flask

    import flask_plurality
    from flask_plurality import Plurality, current_profile, plurality_required
    from flask_plurality.testing import FakePlurality

    with FakePlurality() as fake:
        app = Flask("trace", instance_path=tempfile.mkdtemp(prefix="plurality-trace-"))
        app.config.update(
            SECRET_KEY="trace-only",
            PLURALITY_API_URL=fake.url,
            PLURALITY_CLIENT_ID=fake.client_id,
            PLURALITY_CLIENT_SECRET=fake.client_secret,
            PLURALITY_LOGIN_MAX_FAILURES=10**6,
        )
        if redis_url:
            import redis

            app.config.update(
                SESSION_TYPE="redis",
                SESSION_REDIS=redis.Redis.from_url(redis_url, socket_timeout=0.5),
                SESSION_KEY_PREFIX="trace-session:",
                PLURALITY_KEY_PREFIX="trace-plurality:",
            )
        Plurality(app)

        @app.get("/protected")
        @plurality_required
        def protected() -> dict[str, str]:
            return {"id": current_profile.id}

        client = app.test_client()

        def login(token: str) -> None:
            answer = client.post("/plurality/login", json={"token": token})
            assert answer.status_code == 200, answer.get_data(as_text=True)

        def request() -> None:
            answer = client.get("/protected")
            assert answer.status_code == 200, answer.get_data(as_text=True)

        login(fake.issue_token(email="trace@example.com"))
        request()
        request()
        protected_calls = _trace(request)
        login(fake.issue_token(email="trace@example.com"))
        fresh = fake.issue_token(email="trace@example.com")  # minted outside the trace
        login_calls = _trace(lambda: login(fresh))
    where = "Redis" if redis_url else "files"
    return "\n\n".join(
        [
            f"flask_plurality from {flask_plurality.__file__.rsplit('/', 2)[0]}, sessions on {where}",
            _report("One protected request", *protected_calls),
            _report("One login (a new token)", *login_calls),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", help="trace the flask_plurality of this checkout (its root directory)")
    parser.add_argument("--redis-url", help="sessions on this Redis (a db of its own) instead of files")
    options = parser.parse_args()
    print(run(options.package, options.redis_url))


if __name__ == "__main__":
    main()
