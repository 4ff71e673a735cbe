"""A small HTTP/1.1 load generator: raw sockets, threads, one connection per request.

gunicorn's sync workers close every connection after one response, so a new
connection per request is what any client gets from them. Raw sockets keep the
generator's own cost far below the server's, on the same two cores.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any


def request(
    port: int,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    body: Any = None,
    timeout: float = 10,
    origin: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers (last of each, lower-case), body).
    ``origin``: with the server's own ``Origin`` (what a page of the app sends)."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if origin:
        lines.append(f"Origin: http://127.0.0.1:{port}")
    if cookie:
        lines.append(f"Cookie: {cookie}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    elif method == "POST":
        lines.append("Content-Length: 0")
    raw = _exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload, timeout)
    head, _, content = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, content


def _exchange(port: int, data: bytes, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def session_cookie(headers: dict[str, str]) -> str:
    """``session=<id>`` from a Set-Cookie header."""
    return headers["set-cookie"].split(";", 1)[0]


def blast(port: int, requests: Sequence[bytes], *, concurrency: int) -> float:
    """Send every prepared request (each on its own connection, ``concurrency`` at a
    time); return requests per second. Raises if any answer is not a 200."""
    lock = threading.Lock()
    position = 0
    failures: list[str] = []

    def worker() -> None:
        nonlocal position
        while True:
            with lock:
                if position >= len(requests) or failures:
                    return
                data = requests[position]
                position += 1
            try:
                answer = _exchange(port, data, 10)
            except OSError as exc:
                failures.append(repr(exc))
                return
            if not answer.startswith(b"HTTP/1.1 200"):
                failures.append(answer[:200].decode("latin-1"))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"load generator got a non-200 answer: {failures[0]!r}")
    return len(requests) / elapsed


def prepared_get(port: int, path: str, cookie: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
