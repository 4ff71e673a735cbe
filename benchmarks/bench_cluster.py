"""Logins and protected requests per second: one Redis against a 3-primary Redis Cluster.

The same app (``tests/backend_app.py``, as the conformance suite builds it) under
gunicorn (two sync workers) on each store, driven by the same load generator
(``benchmarks.loadgen``: raw sockets, one connection per request, 8 at a time), the two
stores measured in turn, round after round, in one run; the table gives each rate and
the cluster's ratio to one Redis (median of the rounds). The cluster is three
primaries with a replica each on this machine (``tests/backends.py``); a logout waits
for one replica there (``PLURALITY_REPLICA_ACKS`` ``"auto"``), a login does not.

Everything shares the machine's cores (the load generator, gunicorn, the Redis
servers, the stand-in), so the figures compare the two stores, nothing more: a cluster
spreads keys over machines, which one machine cannot show.

Run: ``python -m benchmarks.bench_cluster`` (needs ``redis-server`` and ``redis-cli``).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask_plurality.testing import FakePlurality, config_for

from .loadgen import blast, prepared_get, request, session_cookie
from .servers import gunicorn, private_redis

TESTS = Path(__file__).resolve().parents[1] / "tests"
ROUNDS = 3
LOGINS = 400
PROTECTED = 2000
SESSIONS = 50
CONCURRENCY = 8


def _prepared_login(port: int, token: str) -> bytes:
    body = json.dumps({"token": token}).encode()
    head = (
        f"POST /plurality/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@contextlib.contextmanager
def _stores(work: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """The two stores' specs: a private one-node Redis and a cluster started here."""
    sys.path.insert(0, str(TESTS))
    import backends

    with private_redis() as url:
        if url is None:
            raise RuntimeError("redis-server is needed")
        cluster = backends.start_redis_cluster(work / "cluster")
        try:
            yield {
                "one Redis": {"family": "redis", "prefix": "bench:", "url": url},
                "Redis Cluster (3 primaries)": {
                    "family": "redis-cluster",
                    "prefix": "bench:",
                    "startup": cluster.startup,
                },
            }
        finally:
            cluster.stop()


def _rates(port: int, fake: FakePlurality, logins: int, protected: int) -> tuple[float, float]:
    """(logins per second, protected requests per second) on the server at ``port``."""
    tokens = [fake.issue_token(user_id=f"bench-{n}") for n in range(logins)]
    login_rate = blast(port, [_prepared_login(port, t) for t in tokens], concurrency=CONCURRENCY)
    cookies = []
    for n in range(SESSIONS):
        token = fake.issue_token(user_id=f"session-{n}")
        status, headers, _ = request(port, "POST", "/plurality/login", body={"token": token}, origin=True)
        assert status == 200, status
        cookies.append(session_cookie(headers))
    gets = [prepared_get(port, "/protected", cookies[n % SESSIONS]) for n in range(protected)]
    return login_rate, blast(port, gets, concurrency=CONCURRENCY)


def measure(*, rounds: int = ROUNDS, logins: int = LOGINS, protected: int = PROTECTED) -> dict[str, Any]:
    """{store: {"logins": [per round], "protected": [per round]}}."""
    work = Path(tempfile.mkdtemp(prefix="plurality-bench-cluster-"))
    found: dict[str, dict[str, list[float]]] = {}
    with FakePlurality() as fake, _stores(work) as specs, contextlib.ExitStack() as servers:
        ports = {}
        for name, spec in specs.items():
            (work / name[:3]).mkdir(exist_ok=True)
            options = {"spec": spec, "plurality": config_for(fake), "instance_path": str(work / name[:3])}
            env = {"BACKEND_APP": json.dumps(options), "PYTHONPATH": str(TESTS.parent)}
            ports[name] = servers.enter_context(gunicorn("benchmarks.spec_app:app", env, workers=2))
        for port in ports.values():  # warm up: imports, connections, the slot map
            _rates(port, fake, 20, 100)
        for _ in range(rounds):
            for name, port in ports.items():
                login_rate, protected_rate = _rates(port, fake, logins, protected)
                found.setdefault(name, {"logins": [], "protected": []})
                found[name]["logins"].append(login_rate)
                found[name]["protected"].append(protected_rate)
    return found


def table(found: dict[str, dict[str, list[float]]]) -> str:
    base = next(iter(found.values()))
    lines = [
        "| store | logins/s | ratio | protected requests/s | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, rates in found.items():
        cells = []
        for kind in ("logins", "protected"):
            ratios = [r / b for r, b in zip(rates[kind], base[kind], strict=True)]
            cells += [f"{statistics.median(rates[kind]):,.0f}", f"{statistics.median(ratios):.2f}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    found = measure(rounds=1, logins=20, protected=50) if quick else measure()
    rounds = len(next(iter(found.values()))["logins"])
    return (
        f"gunicorn, 2 sync workers, {CONCURRENCY} connections at once; median of {rounds} round(s), "
        "each store in turn; ratio: to one Redis in the same round\n\n" + table(found)
    )


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
