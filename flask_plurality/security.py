"""Refusals that protect login and logout: foreign origins, open redirects, brute force;
and the secret hygiene that keeps tokens and the client secret out of logs and reprs."""

from __future__ import annotations

import ipaddress
import logging
import unicodedata
from collections.abc import Mapping
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from flask import request

from .config import flag
from .flask_context import SESSION_KEY

log = logging.getLogger("flask_plurality")

_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_S = TypeVar("_S", bound=type)


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
    """The login/logout origin rule (docs/endpoints.rst): Origin, else Referer, must be ours or trusted; with neither
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
    """``value`` if it is a redirect target that stays on this site (a path, nothing
    else: no scheme, no host, no ``//`` or ``\\`` tricks, even percent-encoded), else
    ``None``. What ``/plurality/login`` does with ``next``; public for an app's own
    login pages."""
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


def client_bucket() -> str:
    """Whom failed logins are counted against: the client's IPv4 address, or its IPv6
    /64 (one customer usually holds a whole /64, and could rotate through it)."""
    address = client_ip()
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:1.2.3.4 is the IPv4 client 1.2.3.4
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def redacted_session_class(cls: _S) -> _S:
    """A subclass of Flask-Session's session class whose ``repr`` hides the token, so
    that ``log.debug("%r", session)`` or an error reporter cannot leak it."""

    def __repr__(self: Any) -> str:
        shown = dict(dict.items(self))  # dict.items: reading must not mark the session accessed
        login = shown.get(SESSION_KEY)
        if isinstance(login, dict):
            # "t": the token as a login is stored now; "token": as earlier releases stored it.
            shown[SESSION_KEY] = {**login, **{name: "<redacted>" for name in ("t", "token") if name in login}}
        return f"<{cls.__name__} {shown!r}>"

    return type(cls.__name__, (cls,), {"__repr__": __repr__, "__module__": cls.__module__})  # type: ignore[return-value]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_transport(app_config: Mapping[str, Any]) -> list[str]:
    """Why the client secret could cross a network unprotected, if it could.

    TLS verification is only ever off through ``PLURALITY_VERIFY_TLS``; plain HTTP is
    accepted (the stand-in, a local proxy) but warned about unless it stays on loopback.
    ``init_app`` logs these at WARNING and ``flask plurality check`` prints them.
    """
    found = []
    if not flag(app_config["PLURALITY_VERIFY_TLS"], "PLURALITY_VERIFY_TLS"):
        found.append(
            "PLURALITY_VERIFY_TLS is off: Plurality's TLS certificate is not checked, so anyone "
            "on the network path can read the client secret and forge answers. Never in production."
        )
    url = urlsplit(str(app_config["PLURALITY_API_URL"]))
    if url.scheme != "https" and not _is_loopback(url.hostname or ""):
        found.append(
            f"PLURALITY_API_URL is not HTTPS ({url.scheme}://{url.hostname}): the client secret "
            "and tokens would cross the network in clear."
        )
    return found


def warn_insecure_transport(app_config: Mapping[str, Any]) -> None:
    for warning in insecure_transport(app_config):
        log.warning("%s", warning)
