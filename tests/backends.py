"""Real servers for every session backend, and the ``backend`` fixture over all of them.

Started here, on ports of the suite's own (27100-27199) or on a unix socket in a
directory of its own: memcached, a Redis with a password, a Redis on a unix socket, a
Sentinel group (primary, replica, three sentinels), a Redis Cluster (three primaries,
three replicas; their bus ports are the ports + 10000). The machine's PostgreSQL and MariaDB
get a database of the suite's own (``plurality_test_...``), created and dropped here; the machine's
Redis is used only on the database of ``PLURALITY_TEST_REDIS_URL``. A missing service
skips its tests with the reason, or fails them when ``PLURALITY_REQUIRE_BACKENDS`` is
set (CI sets it: a skip there would hide a backend nobody tested).

Each test gets key prefixes of its own (``t<n>:``), so tests never see each other's
sessions or throttles and nothing needs flushing while the suite runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from backend_app import FAMILIES, OPTIONS, THRESHOLDS, build, dispose
from flask import Flask

from flask_plurality.testing import FakePlurality, config_for

HOST = "127.0.0.1"
#: Every server gets a free port of the suite's range (27100-27199, or the FIRST-LAST of
#: PLURALITY_TEST_PORTS), so a benchmark run or a second test run on the same machine
#: (given another range) cannot collide with this one.
_FIRST, _LAST = (int(n) for n in os.environ.get("PLURALITY_TEST_PORTS", "27100-27199").split("-"))
_DYNAMIC = itertools.cycle(range(_FIRST, _LAST + 1))
_dynamic_lock = threading.Lock()
REDIS_PASSWORD = "plurality-test-password"
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
DB_PREFIX = "plurality_test_"


def unavailable(what: str, reason: str) -> None:
    """Skip (or, with PLURALITY_REQUIRE_BACKENDS, fail) a test whose service is missing."""
    if os.environ.get("PLURALITY_REQUIRE_BACKENDS"):
        pytest.fail(f"{what} is required here (PLURALITY_REQUIRE_BACKENDS): {reason}")
    pytest.skip(f"{what}: {reason}")


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port of the suite's range that nothing listens on (and that binds now)."""
    with _dynamic_lock:
        for _ in range(_LAST - _FIRST + 1):
            port = next(_DYNAMIC)
            with socket.socket() as sock:
                try:
                    sock.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port left in {_FIRST}-{_LAST} (PLURALITY_TEST_PORTS)")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Server:
    """A server subprocess of the suite's own: start, stop, pause (SIGSTOP), resume."""

    def __init__(self, name: str, argv: list[str], ready: Callable[[], bool]) -> None:
        self.name, self.argv, self.ready = name, argv, ready
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_until(lambda: self.process is not None and self.process.poll() is None and self.ready(), 10, self.name)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)


def redis_server(port: int, *extra: str, name: str = "redis-server") -> Server:
    binary = _binary("redis-server")
    if binary is None:
        unavailable(name, "redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    argv = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no", *extra]
    password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None

    def ready() -> bool:
        import redis

        try:
            if "--unixsocket" in extra:
                client = redis.Redis(unix_socket_path=extra[extra.index("--unixsocket") + 1], socket_timeout=0.5)
            else:
                client = redis.Redis(host=HOST, port=port, password=password, socket_timeout=0.5)
            with contextlib.closing(client):
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    return Server(name, argv, ready)


def memcached_server(port: int) -> Server:
    binary = _binary("memcached")
    if binary is None:
        unavailable("memcached", "memcached is not installed (apt-get install memcached)")
    assert binary is not None
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return Server(
        "memcached", [binary, "-p", str(port), "-l", HOST, "-U", "0", "-t", "2", *user], lambda: port_open(port)
    )


@dataclass
class SentinelGroup:
    """One primary, one replica, three sentinels watching them as ``service``."""

    service: str
    primary: Server
    replica: Server
    sentinels: list[Server]
    sentinel_ports: tuple[int, ...]
    ports: tuple[int, int]
    directory: Path

    @property
    def addresses(self) -> list[list[Any]]:
        return [[HOST, port] for port in self.sentinel_ports]

    def master_port(self) -> int | None:
        """The primary's port as the sentinels report it now."""
        import redis

        for port in self.sentinel_ports:
            try:
                with contextlib.closing(redis.Redis(host=HOST, port=port, socket_timeout=0.5)) as client:
                    address = client.sentinel_get_master_addr_by_name(self.service)
            except (redis.RedisError, OSError):
                continue
            if address:
                return int(address[1])
        return None

    def stop(self) -> None:
        for server in [*self.sentinels, self.primary, self.replica]:
            server.stop()


def start_sentinel_group(group: str, directory: Path) -> SentinelGroup:
    import redis

    primary_port, replica_port = free_port(), free_port()
    sentinel_ports = (free_port(), free_port(), free_port())
    service = f"plurality{group}"
    directory.mkdir(parents=True, exist_ok=True)
    primary = redis_server(primary_port, "--dir", str(directory), name="sentinel primary").start()
    replica = redis_server(
        replica_port, "--dir", str(directory), "--replicaof", HOST, str(primary_port), name="sentinel replica"
    ).start()
    sentinels = []
    binary = _binary("redis-server")
    assert binary is not None
    for port in sentinel_ports:
        conf = directory / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind {HOST}\ndir {directory}\n"
            f"sentinel monitor {service} {HOST} {primary_port} 2\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 4000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        sentinels.append(
            Server(f"sentinel {port}", [binary, str(conf), "--sentinel"], lambda p=port: port_open(p)).start()
        )
    result = SentinelGroup(
        service, primary, replica, sentinels, sentinel_ports, (primary_port, replica_port), directory
    )

    def replicated() -> bool:
        try:
            with contextlib.closing(redis.Redis(host=HOST, port=replica_port, socket_timeout=0.5)) as client:
                return client.info("replication").get("master_link_status") == "up"
        except (redis.RedisError, OSError):
            return False

    try:
        wait_until(replicated, 15, "the sentinel replica to sync")
        wait_until(lambda: result.master_port() == primary_port, 15, "the sentinels to see the primary")
    except RuntimeError:
        result.stop()
        raise
    return result


def caught_up(primary_port: int) -> bool:
    """Has every replica of the primary on ``primary_port`` caught up with its offset?"""
    import redis

    try:
        with contextlib.closing(redis.Redis(host=HOST, port=primary_port, socket_timeout=0.5)) as client:
            info = client.info("replication")
    except (redis.RedisError, OSError):
        return False
    offsets = [v["offset"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(offsets) and min(offsets) >= info["master_repl_offset"]


def free_cluster_port() -> int:
    """A free port of the suite's range whose cluster bus port (the port + 10000) is free too."""
    for _ in range(_LAST - _FIRST + 1):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port left in {_FIRST}-{_LAST} whose bus port (+10000) is free")


#: How long a cluster node may be silent before the others hold it failed (ms): a
#: failover within a few seconds, as a managed service does it.
CLUSTER_NODE_TIMEOUT = 1000


@dataclass
class RedisClusterGroup:
    """A Redis Cluster on loopback: three primaries, a replica each (``redis-cli --cluster create``)."""

    servers: dict[int, Server]
    directory: Path

    @property
    def startup(self) -> list[list[Any]]:
        """``[[host, port], ...]`` of every node, for a ``RedisCluster``'s startup nodes."""
        return [[HOST, port] for port in self.servers]

    def _ask(self, *command: str) -> str | None:
        """``command``'s answer (text) from any node that answers, ``None`` if none does."""
        import redis

        for port, server in self.servers.items():
            if server.process is None or server.process.poll() is not None:
                continue
            try:
                with contextlib.closing(redis.Redis(host=HOST, port=port, socket_timeout=0.5)) as client:
                    answer = client.execute_command(*command)
            except (redis.RedisError, OSError):
                continue
            return answer.decode() if isinstance(answer, bytes) else str(answer)
        return None

    def nodes(self) -> list[dict[str, Any]]:
        """CLUSTER NODES as one node sees it: ``port``, ``id``, ``primary`` (bool),
        ``primary_id`` (of a replica), ``failed`` (bool), ``slots`` (count), ``first_slot``."""
        text = self._ask("CLUSTER", "NODES") or ""
        found = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            slots, first = 0, 16384
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                low, _, high = part.partition("-")
                slots += int(high or low) - int(low) + 1
                first = min(first, int(low))
            found.append(
                {
                    "port": int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                    "id": fields[0],
                    "primary": "master" in fields[2],
                    "primary_id": fields[3],
                    "failed": "fail" in fields[2] or fields[7] != "connected",
                    "slots": slots,
                    "first_slot": first,
                }
            )
        return found

    def primary_ports(self) -> list[int]:
        return [n["port"] for n in self.nodes() if n["primary"] and not n["failed"] and n["slots"]]

    def replica_of(self, primary: int) -> int:
        nodes = self.nodes()
        primary_id = next(n["id"] for n in nodes if n["port"] == primary)
        return next(n["port"] for n in nodes if n["primary_id"] == primary_id)

    def healthy(self) -> bool:
        """Every node answers ``cluster_state:ok``, three primaries serve every slot,
        and each has a replica whose link is up."""
        import redis

        for port, server in self.servers.items():
            if server.process is None or server.process.poll() is not None:
                return False
            try:
                with contextlib.closing(redis.Redis(host=HOST, port=port, socket_timeout=0.5)) as client:
                    if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO").decode():
                        return False
                    info = client.info("replication")
            except (redis.RedisError, OSError):
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        nodes = self.nodes()
        primaries = [n for n in nodes if n["primary"] and not n["failed"]]
        if len(primaries) != 3 or sum(n["slots"] for n in primaries) != 16384:
            return False
        return all(any(r["primary_id"] == p["id"] and not r["failed"] for r in nodes) for p in primaries)

    def wait_replicated(self) -> None:
        wait_until(lambda: all(caught_up(p) for p in self.primary_ports()), 15, "every replica to catch up")

    def redirections(self) -> dict[str, int]:
        """How many MOVED and ASK answers the nodes gave so far (INFO errorstats)."""
        import redis

        counted = {"MOVED": 0, "ASK": 0}
        for port, server in self.servers.items():
            if server.process is None:
                continue
            with contextlib.closing(redis.Redis(host=HOST, port=port, socket_timeout=0.5)) as client:
                stats = client.info("errorstats")
            for kind in counted:
                counted[kind] += int(stats.get(f"errorstat_{kind}", {}).get("count", 0))
        return counted

    def wait_healthy(self, timeout: float = 30) -> None:
        wait_until(self.healthy, timeout, "the Redis Cluster to be whole (every slot served, every primary replicated)")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``: no goodbye to anyone."""
        process = self.servers[port].process
        assert process is not None
        process.kill()
        process.wait(5)
        self.servers[port].process = None

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again: its nodes file brings it back into the
        cluster, as a replica of whoever took its slots."""
        self.servers[port].start()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def cluster_node(port: int, directory: Path) -> Server:
    return redis_server(
        port,
        "--dir",
        str(directory),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        f"nodes-{port}.conf",
        "--cluster-node-timeout",
        str(CLUSTER_NODE_TIMEOUT),
        # A replica may take over however long it was cut off: the tests kill primaries.
        "--cluster-replica-validity-factor",
        "0",
        name=f"cluster node {port}",
    )


def start_redis_cluster(directory: Path) -> RedisClusterGroup:
    """Six ``redis-server --cluster-enabled yes`` on free ports, made one cluster of three
    primaries with a replica each by ``redis-cli --cluster create``."""
    cli = _binary("redis-cli")
    if cli is None:
        unavailable("Redis Cluster", "redis-cli is not installed (apt-get install redis-tools)")
    assert cli is not None
    directory.mkdir(parents=True, exist_ok=True)
    group = RedisClusterGroup({}, directory)
    try:
        for _ in range(6):
            port = free_cluster_port()
            group.servers[port] = cluster_node(port, directory).start()
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"{HOST}:{p}" for p in group.servers),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]} {created.stderr[-2000:]}")
        group.wait_healthy()
    except BaseException:
        group.stop()
        raise
    return group


def reshard(group: RedisClusterGroup, source: int, target: int, slots: int) -> subprocess.CompletedProcess[str]:
    """Move ``slots`` slots from the primary on ``source`` to the one on ``target``
    (``redis-cli --cluster reshard``, keys migrated with MIGRATE, ASK while they move)."""
    cli = _binary("redis-cli")
    assert cli is not None
    ids = {n["port"]: n["id"] for n in group.nodes()}
    return subprocess.run(
        [
            cli,
            "--cluster",
            "reshard",
            f"{HOST}:{source}",
            "--cluster-from",
            ids[source],
            "--cluster-to",
            ids[target],
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
            "--cluster-pipeline",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Proxy:
    """A TCP forwarder in front of a server: ``cut()`` drops every connection and
    refuses new ones (the server is gone, as far as the app can tell); ``restore()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self.cut_off = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                conn.close()
                continue
            for sock in (conn, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((conn, upstream))
            threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_off = True
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def restore(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for the duration, even for root (a read-only tmpfs
    mounted over it, the files copied in first); a plain chmod otherwise."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    stash = Path(tempfile.mkdtemp(prefix="plurality-test-ro-"))
    shutil.copytree(path, stash, dirs_exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(stash)
        unavailable("a read-only directory", f"cannot mount a tmpfs as root: {exc}")
    try:
        shutil.copytree(stash, path, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        shutil.rmtree(stash, ignore_errors=True)


# -- long-lived servers (one per test session) ---------------------------------------


@pytest.fixture(scope="session")
def backend_dir() -> Iterator[Path]:
    """A directory of the suite's own for sockets and server files (short: socket paths
    are limited to 107 bytes)."""
    base = Path("/tmp/plurality-test")
    base.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def memcached(backend_dir: Path) -> Iterator[str]:
    """``host:port`` of a memcached of the suite's own."""
    port = free_port()
    server = memcached_server(port).start()
    yield f"{HOST}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def password_redis(backend_dir: Path) -> Iterator[str]:
    """URL of a Redis that requires a password."""
    port = free_port()
    server = redis_server(port, "--requirepass", REDIS_PASSWORD, name="password redis").start()
    yield f"redis://:{REDIS_PASSWORD}@{HOST}:{port}/0"
    server.stop()


@pytest.fixture(scope="session")
def socket_redis(backend_dir: Path) -> Iterator[Server]:
    """A Redis listening on a unix socket only; its path is ``server.socket``."""
    path = backend_dir / "redis.sock"
    server = redis_server(
        0, "--unixsocket", str(path), "--unixsocketperm", "700", "--dir", str(backend_dir), name="unix-socket redis"
    )
    server.start()
    server.socket = str(path)  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sentinel_group(backend_dir: Path) -> Iterator[SentinelGroup]:
    group = start_sentinel_group("a", backend_dir / "sentinel-a")
    yield group
    group.stop()


@pytest.fixture(scope="session")
def redis_cluster(backend_dir: Path) -> Iterator[RedisClusterGroup]:
    """One Redis Cluster for the whole run (started in a few seconds, torn down at the end);
    tests that kill or move parts of it leave it whole again."""
    started = time.monotonic()
    group = start_redis_cluster(backend_dir / "cluster")
    print(f"\nRedis Cluster up in {time.monotonic() - started:.1f} s")
    yield group
    group.stop()


@pytest.fixture(scope="session")
def main_redis() -> str:
    """The machine's Redis, on the suite's own database only (PLURALITY_TEST_REDIS_URL)."""
    url = os.environ.get("PLURALITY_TEST_REDIS_URL")
    if not url:
        unavailable("Redis", "PLURALITY_TEST_REDIS_URL is not set")
    assert url is not None
    import redis

    try:
        with contextlib.closing(redis.Redis.from_url(url, socket_connect_timeout=1)) as client:
            client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", f"no Redis answers at {url}: {exc}")
    return url


def _sql_database(admin_url: str, kind: str, url_for: Callable[[str], str]) -> Iterator[str]:
    import sqlalchemy

    name = f"{DB_PREFIX}{uuid.uuid4().hex[:10]}"
    try:
        admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # a missing server, driver or permission
        unavailable(kind, f"cannot create a database at {admin_url}: {type(exc).__name__}: {exc}")
    yield url_for(name)
    with admin.connect() as conn:
        force = " WITH (FORCE)" if kind == "PostgreSQL" else ""
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}{force}"))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a PostgreSQL database of the suite's own, dropped at the end."""
    yield from _sql_database(
        POSTGRES_ADMIN, "PostgreSQL", lambda n: f"postgresql+psycopg://postgres@127.0.0.1:5432/{n}"
    )


@pytest.fixture(scope="session")
def mariadb_database() -> Iterator[str]:
    """URL of a MariaDB database of the suite's own, dropped at the end."""
    yield from _sql_database(MARIADB_ADMIN, "MariaDB", lambda n: f"mysql+pymysql://root@127.0.0.1:3306/{n}")


# -- one fixture over every backend ---------------------------------------------------

_test_numbers = itertools.count(1)


@dataclass
class Backend:
    """One backend family, ready for one test: ``make_app(**config)`` builds apps that
    share its store; ``spec`` describes it for app-server subprocesses."""

    name: str
    spec: dict[str, Any]
    fake: FakePlurality
    instance_dir: Path
    #: Make the store fail for the duration (a read-only directory, a cut connection,
    #: a stopped server): a context manager factory, set per family.
    outage: Callable[[], contextlib.AbstractContextManager[None]]
    proxied_spec: Callable[[], dict[str, Any]] | None = None
    apps: list[Flask] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)

    def make_app(self, spec: dict[str, Any] | None = None, **config: Any) -> Flask:
        instance = tempfile.mkdtemp(dir=self.instance_dir)
        app = build(spec or self.spec, config_for(self.fake), instance, **config)
        self.apps.append(app)
        return app

    def server_options(self, spec: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
        """What ``tests/backend_app.py`` needs to serve the same app in a subprocess."""
        return {
            "spec": spec or self.spec,
            "plurality": config_for(self.fake),
            "instance_path": tempfile.mkdtemp(dir=self.instance_dir),
            "config": config,
        }

    def close(self) -> None:
        for app in self.apps:
            dispose(app)
        for proxy in self.proxies:
            proxy.close()


def _proxy_outage(backend: Backend, target: tuple[str, int], key: str, make_url: Callable[[int], Any]) -> None:
    """Outages by a Proxy: ``backend.proxied_spec()`` is the spec through a new proxy;
    ``backend.outage()`` cuts every proxy made so far."""
    proxies = backend.proxies

    def proxied() -> dict[str, Any]:
        proxy = Proxy(target)
        proxies.append(proxy)
        return {**backend.spec, key: make_url(proxy.port)}

    @contextlib.contextmanager
    def outage() -> Iterator[None]:
        assert proxies, "build the app with backend.proxied_spec() to cut it off"
        for proxy in proxies:
            proxy.cut()
        try:
            yield
        finally:
            for proxy in proxies:
                proxy.restore()

    backend.proxied_spec = proxied
    backend.outage = outage


@pytest.fixture(params=FAMILIES)
def backend(request: pytest.FixtureRequest, fake: FakePlurality, tmp_path: Path) -> Iterator[Backend]:
    """Every session backend of docs/stores.rst, one after the other, with prefixes of this test's own."""
    family: str = request.param
    prefix = f"t{next(_test_numbers)}-{uuid.uuid4().hex[:6]}:"
    spec: dict[str, Any] = {"family": family, "prefix": prefix}
    instance_dir = tmp_path / "instances"
    instance_dir.mkdir()
    backend = Backend(family, spec, fake, instance_dir, outage=contextlib.nullcontext)
    from urllib.parse import urlsplit

    if family == "cachelib-file":
        sessions = tmp_path / "sessions"
        sessions.mkdir()
        spec["path"] = str(sessions)
        backend.outage = lambda: read_only_directory(sessions)
    elif family in ("cachelib-redis", "redis"):
        spec["url"] = request.getfixturevalue("main_redis")
        parts = urlsplit(spec["url"])
        _proxy_outage(
            backend,
            (parts.hostname or HOST, parts.port or 6379),
            "url",
            lambda p, u=parts: f"redis://{HOST}:{p}{u.path}",
        )
    elif family == "redis-password":
        spec["url"] = request.getfixturevalue("password_redis")
        port = int(urlsplit(spec["url"]).port or 0)
        _proxy_outage(backend, (HOST, port), "url", lambda p: f"redis://:{REDIS_PASSWORD}@{HOST}:{p}/0")
    elif family == "redis-socket":
        server = request.getfixturevalue("socket_redis")
        spec["path"] = server.socket

        @contextlib.contextmanager
        def stopped() -> Iterator[None]:
            """A stopped server: it saves its data on the way down and loads it again."""
            import redis

            admin = redis.Redis(unix_socket_path=server.socket, socket_timeout=5)
            with contextlib.closing(admin), contextlib.suppress(redis.ConnectionError):
                admin.shutdown(save=True)
            assert server.process is not None
            server.process.wait(10)
            try:
                yield
            finally:
                server.start()

        backend.outage = stopped
    elif family == "redis-sentinel":
        group = request.getfixturevalue("sentinel_group")
        spec.update(sentinels=group.addresses, service=group.service)

        @contextlib.contextmanager
        def paused_group() -> Iterator[None]:
            """Both Redis servers stop answering; the sentinels may start a failover
            meanwhile, so the group is given time to settle afterwards."""
            primary = group.master_port()
            group.primary.pause()
            group.replica.pause()
            try:
                yield
            finally:
                group.primary.resume()
                group.replica.resume()
                wait_until(lambda: group.master_port() in group.ports, 30, "the sentinels to agree on a primary")
                if group.master_port() != primary:
                    time.sleep(1)

        backend.outage = paused_group
    elif family == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        spec["startup"] = cluster.startup

        @contextlib.contextmanager
        def paused_cluster() -> Iterator[None]:
            """Every node stops answering; afterwards the cluster is given time to be whole."""
            for server in cluster.servers.values():
                server.pause()
            try:
                yield
            finally:
                for server in cluster.servers.values():
                    server.resume()
                cluster.wait_healthy()

        backend.outage = paused_cluster
    elif family in ("cachelib-memcached", "memcached"):
        spec["server"] = request.getfixturevalue("memcached")
        _proxy_outage(backend, (HOST, int(spec["server"].rsplit(":", 1)[1])), "server", lambda p: f"{HOST}:{p}")
    elif family == "sqlalchemy-postgresql":
        spec["url"] = request.getfixturevalue("postgres_database")
        spec["table"] = f"sessions_{prefix[1:].split('-')[0]}"
        _proxy_outage(backend, (HOST, 5432), "url", lambda p, u=spec["url"]: u.replace(":5432/", f":{p}/"))
    elif family == "sqlalchemy-mariadb":
        spec["url"] = request.getfixturevalue("mariadb_database")
        spec["table"] = f"sessions_{prefix[1:].split('-')[0]}"
        _proxy_outage(backend, (HOST, 3306), "url", lambda p, u=spec["url"]: u.replace(":3306/", f":{p}/"))
    try:
        yield backend
    finally:
        backend.close()


#: (family, option) pairs for ``option_backend``: every option of ``OPTIONS`` on files and
#: Redis, and each way of getting cachelib's size threshold on files.
OPTION_CASES = [
    *(
        pytest.param((family, option), id=f"{family}-{option}", marks=[pytest.mark.redis] if family == "redis" else [])
        for option in OPTIONS
        for family in ("cachelib-file", "redis")
    ),
    *(pytest.param(("cachelib-file", threshold), id=f"threshold-{threshold}") for threshold in THRESHOLDS),
    # Where it is cheap, the options that touch every family: how the cookie names the
    # session, and how Flask-Session encodes it (memcached and SQL use its serializer).
    *(
        pytest.param((family, option), id=f"{family}-{option}")
        for option in ("signer", "json")
        for family in ("memcached", "sqlalchemy-postgresql")
    ),
]


@dataclass
class OptionBackend:
    """A backend family under one Flask-Session option: ``make_app()`` builds apps on
    the same store with that option set."""

    backend: Backend
    option: str
    config: dict[str, Any]

    def make_app(self, **config: Any) -> Flask:
        return self.backend.make_app(**{**self.config, **config})


@pytest.fixture(params=OPTION_CASES)
def option_backend(
    request: pytest.FixtureRequest, fake: FakePlurality, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OptionBackend]:
    """A backend family under one of Flask-Session's options (``OPTION_CASES``)."""
    family, option = request.param
    prefix = f"t{next(_test_numbers)}-{uuid.uuid4().hex[:6]}:"
    spec: dict[str, Any] = {"family": family, "prefix": prefix}
    instance_dir = tmp_path / "instances"
    instance_dir.mkdir()
    backend = Backend(family, spec, fake, instance_dir, outage=contextlib.nullcontext)
    config = dict(OPTIONS.get(option, {}))
    if family == "cachelib-file":
        sessions = tmp_path / "sessions"
        sessions.mkdir()
        spec["path"] = str(sessions)
        if option in THRESHOLDS:
            spec["threshold"] = option
            if option == "cachelib-default":  # Flask-Session's cache is ./flask_session
                monkeypatch.chdir(sessions)
                spec["path"] = str(sessions / "flask_session")
    elif family == "memcached":
        spec["server"] = request.getfixturevalue("memcached")
    elif family == "sqlalchemy-postgresql":
        spec["url"] = request.getfixturevalue("postgres_database")
        spec["table"] = f"sessions_{prefix[1:].split('-')[0]}"
    else:
        spec["url"] = request.getfixturevalue("main_redis")
        if config.get("SESSION_KEY_PREFIX") == "custom:":
            import redis

            # The prefix is the option itself, not this test's: start from none of it.
            with contextlib.closing(redis.Redis.from_url(spec["url"])) as client:
                for name in client.scan_iter(match="custom:*", count=1000):
                    client.delete(name)
    try:
        yield OptionBackend(backend, option, config)
    finally:
        backend.close()


# -- app servers in subprocesses -------------------------------------------------------


@contextlib.contextmanager
def app_servers(options: list[dict[str, Any]]) -> Iterator[list[str]]:
    """Serve each app (``Backend.server_options()``) in a process of its own: base URLs."""
    import json
    import sys

    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    processes: list[subprocess.Popen[str]] = []
    log = open(os.path.join(options[0]["instance_path"], "servers.log"), "w")  # noqa: SIM115
    try:
        urls = []
        for option in options:  # one after the other: Flask-Session creates its SQL table unguarded
            process = subprocess.Popen(
                [sys.executable, str(here / "backend_app.py")],
                env={**env, "BACKEND_APP": json.dumps(option)},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
            processes.append(process)
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"an app server did not start (exit {process.poll()})")
            urls.append(f"http://{HOST}:{int(line.split()[1])}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        log.close()


# -- junk session cookies ------------------------------------------------------------------

#: Session cookies no backend could hold, and that Flask-Session never issues: too long
#: for memcached's 250-byte keys, whitespace, control bytes, non-ASCII (memcached refuses
#: them), NUL (PostgreSQL refuses it), quotes, a path, a signed-looking value.
JUNK_SESSION_IDS = (
    "x" * 241,
    "A" * 87,
    "a" * 4000,
    "abc def",
    "tab\tbed",
    "new\nline",
    "nul\x00byte",
    "\x00",
    "sessi\u00f3n",
    "\u00fc" * 40,
    "\U0001f600",
    '"quoted"',
    "../../etc/passwd",
    "abc.def-signature",
    "semi;colon",
    "del\x7f",
)


# -- what a backend holds ----------------------------------------------------------------


def _memcached_dump(server: str) -> dict[str, float]:
    """{key: absolute expiry (-1: none)} of every item memcached holds (lru_crawler)."""
    from urllib.parse import unquote

    host, port = server.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        data = b""
        while not data.endswith(b"END\r\n") and not data.startswith(b"ERROR"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    items = {}
    for line in data.decode().splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "key" in fields:
            items[unquote(fields["key"])] = float(fields["exp"])
    return items


#: cachelib's own count of files (a file of its directory, not an entry of ours).
_COUNT_FILE = hashlib.sha256(b"__wz_cache_count").hexdigest()


def _our_file(path: Path) -> bool:
    return "plurality-lock-" not in path.name and not path.name.endswith(".__wz_cache") and path.name != _COUNT_FILE


def live_entries(backend: Backend, app: Flask) -> dict[str, float]:
    """Every entry of this test's prefix that the backend still holds and has not
    expired: {name: seconds left} (``math.inf``: no expiry at all)."""
    import math
    import struct

    prefix, now = backend.spec["prefix"], time.time()
    inner = app.session_interface.inner  # type: ignore[attr-defined]
    family = backend.name
    found: dict[str, float] = {}
    if family == "cachelib-file":
        for path in Path(backend.spec["path"]).iterdir():
            if not _our_file(path):
                continue
            expires = struct.unpack("I", path.read_bytes()[:4])[0]
            if expires == 0 or expires >= now:
                found[path.name] = math.inf if expires == 0 else expires - now
    elif family in ("cachelib-redis", "redis", "redis-password", "redis-socket", "redis-sentinel", "redis-cluster"):
        client = inner.cache._write_client if family == "cachelib-redis" else inner.client
        for name in client.scan_iter(match=f"{prefix}*", count=1000):
            ttl = client.ttl(name)
            if ttl != -2:  # -2: gone (expired) since the scan
                found[name.decode()] = math.inf if ttl == -1 else float(ttl)
    elif family in ("cachelib-memcached", "memcached"):
        client = inner.cache._client if family == "cachelib-memcached" else inner.client
        for name, expires in _memcached_dump(backend.spec["server"]).items():
            if name.startswith(prefix) and client.get(name) is not None:  # a get drops expired items
                found[name] = math.inf if expires < 0 else expires - now
    elif family.startswith("sqlalchemy"):
        import sqlalchemy as sa

        from flask_plurality.stores import get_store

        store: Any = get_store(app)
        with store.engine.connect() as conn:
            for name, expires in conn.execute(sa.select(store.table.c.key, store.table.c.expires_at)):
                if name.startswith(prefix) and expires > now:
                    found[name] = expires - now
            sessions = store.sessions
            utcnow = datetime.now(UTC).replace(tzinfo=None)
            for name, expiry in conn.execute(sa.select(sessions.c.session_id, sessions.c.expiry)):
                if name.startswith(prefix) and (expiry is None or expiry > utcnow):
                    found[name] = math.inf if expiry is None else (expiry - utcnow).total_seconds()
    else:
        raise AssertionError(family)
    return found


def stored_anything(backend: Backend, app: Flask) -> int:
    """How many entries of this test's prefix exist at all, expired or not, where the
    backend keeps expired ones until something deletes them (files, SQL rows)."""
    prefix = backend.spec["prefix"]
    if backend.name == "cachelib-file":
        return sum(1 for path in Path(backend.spec["path"]).iterdir() if _our_file(path))
    if backend.name.startswith("sqlalchemy"):
        import sqlalchemy as sa

        from flask_plurality.stores import get_store

        store: Any = get_store(app)
        with store.engine.connect() as conn:
            own = conn.execute(sa.select(sa.func.count()).where(store.table.c.key.startswith(prefix))).scalar()
            sessions = store.sessions
            theirs = conn.execute(sa.select(sa.func.count()).where(sessions.c.session_id.startswith(prefix))).scalar()
        return int(own) + int(theirs)
    return len(live_entries(backend, app))
