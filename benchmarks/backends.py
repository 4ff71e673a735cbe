"""Instructions per protected request, over the bare session route, on every backend.

    python -m benchmarks.backends                 # every family (starts its own servers)
    python -m benchmarks.backends redis memcached # some of them
    python -m benchmarks.backends --package ../main cachelib-file  # another checkout's package

For each session backend family of ``tests/backend_app.FAMILIES`` one app (as the
conformance suite builds it) serves four routes over one logged-in session, in pairs
with the same body:

- ``/bare``: a hand-written ``"_plurality" in session`` check, and ``/guarded``:
  ``@plurality_required``; both answer ``{"ok": true}``. The difference is the
  decorator's cost (the goal: at most 3 % over ``/bare``).
- ``/bare-user``: the hand-written check reading the user's id from the session, and
  ``/protected``: ``@plurality_required`` reading ``current_profile.id``; both answer
  ``{"id": ...}``.
- ``/plurality/login``: a login, each with a token of a new user (a new session and its
  index), the stand-in's answer (in the same process) included.

Both routes of a pair go through the same session interface (Flask-Session, guarded by
the extension), so what differs is only what the decorator does.

Instructions are counted by valgrind's callgrind in a child process: collection is
switched on only around the requests (client requests from a tiny C helper compiled
here), for N and for N + 100 requests of each route; the difference over 100 is the
cost of one request, with every fixed cost cancelled. Requests are raw WSGI calls with
environs built before counting starts. A second, uninstrumented child counts the
store's round trips per request of each route (server-side command counters for
sends on the client's sockets for Redis and memcached, SQLAlchemy's cursor events for
SQL, ``open`` calls in the session directory for files): the goal is zero added on the
hot path. ``--round-trips`` skips callgrind and prints only those; ``--json`` prints one JSON line
instead of the table (``tests/test_hot_path.py`` reads it).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
N = 100
WARMUP = 50
#: (hand-written, decorated) pairs of routes with the same body.
PAIRS = (("/bare", "/guarded"), ("/bare-user", "/protected"))
#: A login (a new session each time, a token of a user of its own): what it costs to start one.
LOGIN = "/plurality/login"
ROUTES = (*(route for pair in PAIRS for route in pair), LOGIN)

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void plurality_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void plurality_stop(const char *name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
"""


# -- the child: one app, two routes ------------------------------------------------------


def _app_and_environs(spec: dict[str, Any], count: int) -> tuple[Any, dict[str, list[dict[str, Any]]], Any]:
    sys.path.insert(0, str(TESTS))
    from backend_app import build
    from werkzeug.test import EnvironBuilder

    from flask_plurality.testing import FakePlurality, config_for

    fake = FakePlurality().start()
    instance = tempfile.mkdtemp(prefix="plurality-bench-")
    # A login asks the stand-in (a thread of this process): under valgrind, give it time.
    app = build(spec, config_for(fake), instance, PLURALITY_TIMEOUT=120.0)
    client = app.test_client()
    response = client.post(
        "/plurality/login", json={"token": fake.issue_token()}, headers={"Origin": "http://localhost"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    cookie = client.get_cookie("session")
    assert cookie is not None
    environs = {
        route: [
            EnvironBuilder(path=route, headers={"Cookie": f"session={cookie.value}"}).get_environ()
            for _ in range(count)
        ]
        for route in ROUTES
        if route != LOGIN
    }
    environs[LOGIN] = [
        EnvironBuilder(
            path=LOGIN, method="POST", json={"token": fake.issue_token()}, headers={"Origin": "http://localhost"}
        ).get_environ()
        for _ in range(count)
    ]
    return app, environs, fake


def _call(app: Any, environ: dict[str, Any]) -> str:
    status: list[str] = []
    body = app(environ, lambda s, h, exc_info=None: status.append(s))
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return status[0]


def child_instructions(spec: dict[str, Any], helper: str) -> None:
    """Under callgrind: N and N+100 requests of each route, one dump each."""
    import ctypes

    lib = ctypes.CDLL(helper)
    app, environs, fake = _app_and_environs(spec, WARMUP + N + (N + 100) + 10)
    for route, envs in environs.items():
        for environ in envs[:WARMUP]:
            assert _call(app, environ).startswith("200"), route
        rest = envs[WARMUP:]
        for size in (N, N + 100):
            batch, rest = rest[:size], rest[size:]
            gc.collect()
            gc.disable()  # else a full collection lands in one batch or the other
            lib.plurality_start()
            for environ in batch:
                _call(app, environ)
            lib.plurality_stop(f"{route} {size}".encode())
            gc.enable()
    fake.stop()


def child_round_trips(spec: dict[str, Any]) -> None:
    """Uninstrumented: store round trips per request of each route; prints JSON."""
    app, environs, fake = _app_and_environs(spec, WARMUP + N)
    counter = _round_trip_counter(spec, app)
    result = {}
    for route, envs in environs.items():
        for environ in envs[:WARMUP]:
            assert _call(app, environ).startswith("200"), route
        before = counter()
        for environ in envs[WARMUP:]:
            _call(app, environ)
        result[route] = (counter() - before) / N
    fake.stop()
    print(json.dumps(result))


def _round_trip_counter(spec: dict[str, Any], app: Any) -> Callable[[], int]:
    family = spec["family"]
    if family == "cachelib-file":
        opened = [0]
        where = spec["path"]

        def hook(event: str, args: tuple[Any, ...]) -> None:
            if event == "open" and isinstance(args[0], str) and args[0].startswith(where):
                opened[0] += 1

        sys.addaudithook(hook)
        return lambda: opened[0]
    if "redis" in family or "memcached" in family:
        # Each command (or pipeline, or multi-get) is one send on the client's socket:
        # counted client-side, as the machine's Redis serves other programs too.
        import socket

        sent = [0]
        for name in ("sendall", "send"):
            original = getattr(socket.socket, name)

            def counting(self: Any, *args: Any, _original: Any = original) -> Any:
                sent[0] += 1
                return _original(self, *args)

            setattr(socket.socket, name, counting)
        return lambda: sent[0]
    if family.startswith("sqlalchemy"):
        import sqlalchemy as sa

        from flask_plurality.stores import get_store

        executed = [0]
        engines = {get_store(app).engine}  # type: ignore[attr-defined]
        with app.app_context():
            engines.add(app.config["SESSION_SQLALCHEMY"].engine)
        for engine in engines:
            sa.event.listen(engine, "before_cursor_execute", lambda *a: executed.__setitem__(0, executed[0] + 1))
        return lambda: executed[0]
    raise ValueError(family)


# -- the parent: servers, children, the table ---------------------------------------------


@contextlib.contextmanager
def _specs(families: list[str]) -> Iterator[dict[str, dict[str, Any]]]:
    """Start what the families need (the test suite's own servers) and describe them."""
    sys.path.insert(0, str(TESTS))
    import backends as b

    shared_tmp = Path("/tmp/plurality-test")  # where tests/backends.py keeps its sockets, if it ran
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=shared_tmp if shared_tmp.is_dir() else None))
    servers: list[Any] = []
    specs: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        needs = set(families)
        memcached_port, password_port = b.free_port(), b.free_port()
        if needs & {"cachelib-memcached", "memcached"}:
            servers.append(b.memcached_server(memcached_port).start())
        if "redis-password" in needs:
            servers.append(b.redis_server(password_port, "--requirepass", b.REDIS_PASSWORD).start())
        if "redis-socket" in needs:
            servers.append(b.redis_server(0, "--unixsocket", str(work / "redis.sock")).start())
        group = b.start_sentinel_group("bench", work / "sentinel") if "redis-sentinel" in needs else None
        cluster = b.start_redis_cluster(work / "cluster") if "redis-cluster" in needs else None
        urls = {}
        if "sqlalchemy-postgresql" in needs:
            generator = b._sql_database(
                b.POSTGRES_ADMIN, "PostgreSQL", lambda n: f"postgresql+psycopg://postgres@127.0.0.1:5432/{n}"
            )
            urls["pg"] = next(generator)
            stack.callback(lambda g=generator: next(g, None))
        if "sqlalchemy-mariadb" in needs:
            generator = b._sql_database(
                b.MARIADB_ADMIN, "MariaDB", lambda n: f"mysql+pymysql://root@127.0.0.1:3306/{n}"
            )
            urls["my"] = next(generator)
            stack.callback(lambda g=generator: next(g, None))
        redis_url = os.environ.get("PLURALITY_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
        for family in families:
            spec: dict[str, Any] = {"family": family, "prefix": f"bench-{os.getpid()}-{family}:"}
            if family == "cachelib-file":
                (work / "files").mkdir(exist_ok=True)
                spec["path"] = str(work / "files")
            elif family in ("cachelib-redis", "redis"):
                spec["url"] = redis_url
            elif family == "redis-password":
                spec["url"] = f"redis://:{b.REDIS_PASSWORD}@127.0.0.1:{password_port}/0"
            elif family == "redis-socket":
                spec["path"] = str(work / "redis.sock")
            elif family == "redis-sentinel":
                assert group is not None
                spec.update(sentinels=group.addresses, service=group.service)
            elif family == "redis-cluster":
                assert cluster is not None
                spec["startup"] = cluster.startup
            elif family in ("cachelib-memcached", "memcached"):
                spec["server"] = f"127.0.0.1:{memcached_port}"
            elif family == "sqlalchemy-postgresql":
                spec["url"] = urls["pg"]
            elif family == "sqlalchemy-mariadb":
                spec["url"] = urls["my"]
            specs[family] = spec
        try:
            yield specs
        finally:
            if group is not None:
                group.stop()
            if cluster is not None:
                cluster.stop()
            for server in servers:
                server.stop()


def _helper(work: Path) -> str:
    source, library = work / "cg_helper.c", work / "cg_helper.so"
    source.write_text(_HELPER_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True)
    return str(library)


#: ``--package DIR``: the checkout whose ``flask_plurality`` the children import (before/after).
PACKAGE = ROOT


def _path() -> str:
    return os.pathsep.join(dict.fromkeys([str(PACKAGE), str(ROOT), str(TESTS)]))


def _import_package() -> None:
    """In a child: ``flask_plurality`` from ``--package``'s checkout, before the working
    directory (this checkout, first on ``sys.path`` under ``python -m``) can give it."""
    package = os.environ.get("PLURALITY_BENCH_PACKAGE")
    if package:
        sys.path.insert(0, package)
    import flask_plurality

    print(f"flask_plurality from {Path(flask_plurality.__file__).parent}", file=sys.stderr)


def _instructions(spec: dict[str, Any], helper: str, work: Path) -> dict[str, float]:
    out = work / f"cg-{spec['family']}"
    out.mkdir()
    # One hash seed: dict and set layouts, hence the counts, repeat run after run.
    env = {**os.environ, "PYTHONPATH": _path(), "PYTHONHASHSEED": "0", "PLURALITY_BENCH_PACKAGE": str(PACKAGE)}
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            f"--callgrind-out-file={out}/cg.out",
            sys.executable,
            "-m",
            "benchmarks.backends",
            "--child-instructions",
            json.dumps(spec),
            helper,
        ],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    totals: dict[str, int] = {}
    for dump in out.iterdir():
        text = dump.read_text(errors="replace")
        trigger = next((line for line in text.splitlines() if line.startswith("desc: Trigger:")), "")
        if "Client Request:" not in trigger:
            continue
        name = trigger.split("Client Request:", 1)[1].strip()
        total = next(line for line in text.splitlines() if line.startswith(("summary:", "totals:")))
        totals[name] = int(total.split()[1])
    return {route: (totals[f"{route} {N + 100}"] - totals[f"{route} {N}"]) / 100 for route in ROUTES}


def _round_trips(spec: dict[str, Any]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": _path(), "PLURALITY_BENCH_PACKAGE": str(PACKAGE)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.backends", "--child-round-trips", json.dumps(spec)],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child-instructions"]:
        _import_package()
        child_instructions(json.loads(argv[1]), argv[2])
        return 0
    if argv[:1] == ["--child-round-trips"]:
        _import_package()
        child_round_trips(json.loads(argv[1]))
        return 0
    # A `timeout` or Ctrl-C must still stop the servers and drop the databases started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(TESTS))
    from backend_app import FAMILIES

    global PACKAGE
    if "--package" in argv:  # another checkout's flask_plurality: "before" beside "after"
        at = argv.index("--package")
        PACKAGE = Path(argv[at + 1]).resolve()
        argv = argv[:at] + argv[at + 2 :]
    trips_only, as_json = "--round-trips" in argv, "--json" in argv
    argv = [a for a in argv if a not in ("--round-trips", "--json")]
    families = argv or list(FAMILIES)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        print(f"unknown families: {', '.join(sorted(unknown))}; choose from {', '.join(FAMILIES)}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="plurality-cg-"))
    helper = "" if trips_only else _helper(work)
    rows = []
    with _specs(families) as specs:
        for family in families:
            instructions = {} if trips_only else _instructions(specs[family], helper, work)
            trips = _round_trips(specs[family])
            rows.append((family, instructions, trips))
            print(f"{family}: {instructions} {trips}", file=sys.stderr, flush=True)
    if as_json:  # one line: {family: {"instructions": {route: n}, "round_trips": {route: n}}}
        print(json.dumps({family: {"instructions": ins, "round_trips": trips} for family, ins, trips in rows}))
        return 0
    if trips_only:
        for family, _, trips in rows:
            print(f"| {family} | {trips['/bare']:g} / {trips['/guarded']:g} |")
        return 0
    print(f"Instructions per request (callgrind, ({N}+100 - {N}) requests / 100), raw WSGI calls:\n")
    print(
        "| backend | hand-written check | `@plurality_required` | added "
        "| reading the user: session | `current_profile` | added | store round trips (check / decorator) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for family, ins, trips in rows:
        cells = []
        for bare, guarded in PAIRS:
            cost = ins[guarded] - ins[bare]
            cells += [f"{ins[bare]:,.0f}", f"{ins[guarded]:,.0f}", f"{cost:+,.0f} ({100 * cost / ins[bare]:+.1f} %)"]
        print(f"| {family} | {' | '.join(cells)} | {trips['/bare']:g} / {trips['/guarded']:g} |")
    print("\nA login (a new session; the stand-in's answer, in this process, included):\n")
    print("| backend | instructions | store round trips |")
    print("| --- | ---: | ---: |")
    for family, ins, trips in rows:
        print(f"| {family} | {ins[LOGIN]:,.0f} | {trips[LOGIN]:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
