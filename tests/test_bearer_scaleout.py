"""Bearer tokens across processes: two gunicorn processes sharing one Redis ask Plurality
once per ``PLURALITY_BEARER_REVALIDATE`` window for one token, however many requests
arrive at once and whichever process they reach."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import all_at_once, free_port, redis_url_or_skip

from flask_plurality.testing import FakePlurality

pytestmark = [pytest.mark.slow, pytest.mark.redis]
TESTS = Path(__file__).resolve().parent
WINDOW = 2  # seconds, PLURALITY_BEARER_REVALIDATE
ROUNDS = 4
PER_PROCESS = 8


@contextmanager
def process(fake: FakePlurality, log: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """One gunicorn process (one worker, 16 threads), ``settings`` added to its environment;
    yields (base URL, its pid)."""
    port = free_port()
    env = {
        **os.environ,
        "SCALEOUT_SECRET_KEY": "the-same-key-in-every-process",
        "SCALEOUT_API_URL": fake.url,
        "SCALEOUT_CLIENT_ID": fake.client_id,
        "SCALEOUT_CLIENT_SECRET": fake.client_secret,
        "SCALEOUT_ACCEPT_BEARER": "true",
        "SCALEOUT_BEARER_REVALIDATE": str(WINDOW),
        "SCALEOUT_REDIS_URL": redis_url_or_skip(),
        **settings,
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        "1",
        "--threads",
        "16",
        "-b",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(TESTS),
        "scaleout_app:create_app()",
    ]
    with log.open("wb") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a measurement
        while True:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"gunicorn did not start:\n{log.read_text()}"
            try:
                pid = requests.get(f"{base}/pid", timeout=5).json()["pid"]
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base, pid
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert "Traceback" not in log.read_text(), log.read_text()


def burst(bases: list[str], token: str) -> list[requests.Response]:
    """``PER_PROCESS`` simultaneous bearer requests on each process."""
    jobs = [base for base in bases for _ in range(PER_PROCESS)]

    def send(n: int) -> requests.Response:
        return requests.get(f"{jobs[n]}/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=20)

    return all_at_once(len(jobs), send)


def test_sixteen_concurrent_requests_on_two_processes_ask_once_per_window(
    fake: FakePlurality, redis_client: Any, tmp_path: Path
) -> None:
    user_id = f"mobile-{time.time_ns()}"
    token = fake.issue_token(user_id=user_id, email="mobile@example.com")
    fake.latency = 0.3  # every request arrives while the first call is still out
    bad: list[str] = []
    with ExitStack() as stack:
        servers = [stack.enter_context(process(fake, tmp_path / f"gunicorn-{n}.log")) for n in range(2)]
        bases = [base for base, _ in servers]
        assert len({pid for _, pid in servers}) == 2
        for round_ in range(ROUNDS):
            started = time.monotonic()
            calls_before = len(fake.calls)
            responses = burst(bases, token)
            again = burst(bases, token)  # the same window: nobody asks
            for response in responses + again:
                if response.status_code != 200 or response.json()["user"] != user_id:
                    bad.append(f"round {round_}: {response.status_code} {response.text[:200]}")
                if "Set-Cookie" in response.headers:
                    bad.append(f"round {round_}: a bearer answer set a cookie")
            assert {r.json()["pid"] for r in responses} == {pid for _, pid in servers}
            assert len(fake.calls) - calls_before == 1, f"round {round_}: {len(fake.calls) - calls_before} calls"
            # Only the extension's answer cache entry is stored: no session for any bearer request.
            keys = {k.decode() for k in redis_client.keys("*")}
            assert {k.split(":")[1] for k in keys} == {"answer"}, keys
            time.sleep(max(0.0, WINDOW + 0.3 - (time.monotonic() - started)))
    assert bad == []
    assert len(fake.calls) == ROUNDS


def test_concurrent_failing_tokens_on_two_processes_reach_plurality_at_most_the_limit(
    fake: FakePlurality, redis_client: Any, tmp_path: Path
) -> None:
    """At most the limit's failures reach Plurality, across processes too: 64 different
    refused tokens at once from one client (127.0.0.1), half on each process, reach
    Plurality exactly the limit's 10 times."""
    tokens = [fake.issue_token() for _ in range(64)]
    for token in tokens:
        fake.revoke(token)
    fake.latency = 0.3  # every request arrives while the first calls are still out
    with ExitStack() as stack:
        bases = [
            stack.enter_context(process(fake, tmp_path / f"gunicorn-{n}.log", SCALEOUT_LOGIN_MAX_FAILURES="10"))[0]
            for n in range(2)
        ]

        def send(n: int) -> requests.Response:
            headers = {"Authorization": f"Bearer {tokens[n]}"}
            return requests.get(f"{bases[n % 2]}/whoami", headers=headers, timeout=20)

        responses = all_at_once(len(tokens), send)
    assert len(fake.calls) == 10
    assert Counter(r.status_code for r in responses) == {401: 10, 429: 54}
    for response in responses:
        assert response.json()["error"] == ("invalid_token" if response.status_code == 401 else "too_many_attempts")
        if response.status_code == 429:
            assert 1 <= int(response.headers["Retry-After"]) <= 300
