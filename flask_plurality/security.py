"""Refusals that protect login and logout: foreign origins, open redirects, brute force."""

from __future__ import annotations

import unicodedata
from typing import Final
from urllib.parse import unquote, urlsplit

from flask import request

_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def normalise_origin(value: str) -> str | None:
    """``scheme://host[:port]`` lower-cased with the default port dropped; ``None`` if junk."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and str(port) != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def origin_allowed(trusted: frozenset[str]) -> bool:
    """SPEC section 3's rule: Origin, else Referer, must be ours or trusted; with neither
    header only a JSON body is accepted (a cross-site HTML form cannot send one)."""
    claimed = request.headers.get("Origin")
    if claimed is None:
        claimed = request.headers.get("Referer")
        if claimed is None:
            return request.mimetype == "application/json"
    origin = normalise_origin(claimed)  # "null" (sandboxed frames, file:) -> None
    if origin is None:
        return False
    own = normalise_origin(request.host_url)
    return origin == own or origin in {normalise_origin(t) for t in trusted}


def safe_next(value: str | None) -> str | None:
    """A redirect target that stays on this site: a path, nothing else."""
    if not value or len(value) > 2048:
        return None
    decoded = value
    for _ in range(3):  # look through percent-encoding, as some browsers do
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in decoded):
            return None
        if "\\" in decoded or not decoded.startswith("/") or decoded.startswith("//"):
            return None
        parts = urlsplit(decoded)
        if parts.scheme or parts.netloc:
            return None
        once_more = unquote(decoded)
        if once_more == decoded:
            return value
        decoded = once_more
    return None


def client_ip() -> str:
    """The client's address as the WSGI server (or ``ProxyFix``) reports it."""
    return request.remote_addr or "unknown"
