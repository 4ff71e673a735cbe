"""A loopback HTTP proxy that behaves like a network with a round-trip time.

Each request pays one RTT (half each way); a new connection pays one more before its
first request (the TCP handshake; TLS would add one or two more). The proxy keeps its
client connections alive even though the stand-in's werkzeug server closes every
connection: on plain loopback, without this, a pooled connection would save nothing
measurable, and the benchmark would hide exactly what pooling saves on a real network.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


class DelayProxy:
    """``with DelayProxy(target_port, rtt) as proxy:`` then talk to ``proxy.port``."""

    def __init__(self, target_port: int, rtt: float) -> None:
        delay = rtt

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def setup(self) -> None:
                super().setup()
                time.sleep(delay)  # the handshake of a new connection

            def log_message(self, format: str, *args: object) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay / 2)
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body, headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                time.sleep(delay / 2)
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
