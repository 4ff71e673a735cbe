"""No exception the package raises carries the secret or the token anywhere: not in its
message, not in ``args``, not in an attribute, not down its ``__cause__``/``__context__``
chain (requests' exceptions hold the whole request: the ``Authorization`` header with
``client_id:secret`` and the body with the token).

Every exception raised in the hostile-upstream scenarios is walked object by object
(``args``, ``vars()``, slots, containers, the chain); tracebacks are left out, since the
caller's own frames hold the token it passed in.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from helpers import HYGIENE_CLIENT_ID as CLIENT_ID
from helpers import build_app, free_port

from flask_plurality import PluralityError
from flask_plurality.client import PluralityClient, Upstream
from flask_plurality.testing import FakePlurality

_ATOMS = (int, float, bool, type(None), complex)


def reachable_text(root: object, depth: int = 12) -> Iterator[tuple[str, str]]:
    """(path, text) for every str/bytes reachable from ``root``, tracebacks excepted."""
    seen: set[int] = set()
    stack: list[tuple[object, str, int]] = [(root, type(root).__name__, 0)]
    while stack:
        obj, path, level = stack.pop()
        if isinstance(obj, str):
            yield path, obj
            continue
        if isinstance(obj, bytes | bytearray | memoryview):
            yield path, bytes(obj).decode("latin-1")
            continue
        if isinstance(obj, _ATOMS) or id(obj) in seen or level > depth or isinstance(obj, type):
            continue
        if callable(obj) and not isinstance(obj, BaseException):
            continue
        seen.add(id(obj))
        children: list[tuple[object, str]] = []
        if isinstance(obj, BaseException):
            children += [(obj.__cause__, ".__cause__"), (obj.__context__, ".__context__"), (obj.args, ".args")]
            children += [(str(obj), ".__str__"), (repr(obj), ".__repr__")]
            children += [(getattr(obj, "__notes__", None), ".__notes__")]
        if isinstance(obj, dict):
            children += [(k, f"[key {k!r}]") for k in obj] + [(v, f"[{k!r}]") for k, v in obj.items()]
        elif isinstance(obj, list | tuple | set | frozenset):
            children += [(v, f"[{i}]") for i, v in enumerate(obj)]
        else:
            with_dict = getattr(obj, "__dict__", None)
            if isinstance(with_dict, dict):
                children += [(v, f".{k}") for k, v in with_dict.items() if k != "__traceback__"]
            for klass in type(obj).__mro__:
                for slot in getattr(klass, "__slots__", ()):
                    if isinstance(slot, str) and hasattr(obj, slot):
                        children.append((getattr(obj, slot), f".{slot}"))
        stack.extend((child, path + step, level + 1) for child, step in children)


def forbidden(secret: str, tokens: list[str]) -> dict[str, str]:
    found = {
        "client secret": secret,
        "basic credentials": base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode(),
    }
    for i, token in enumerate(tokens):
        found[f"token {i}"] = token
        found[f"token {i} signature"] = token.rsplit(".", 1)[-1]
    return found


def leaks(exc: BaseException, secret: str, tokens: list[str]) -> list[str]:
    bad = forbidden(secret, tokens)
    return [f"{what} at {path}" for path, text in reachable_text(exc) for what, value in bad.items() if value in text]


def test_the_walk_finds_what_requests_keeps_on_its_exceptions(secret: str) -> None:
    """The walk is not blind: a raw requests exception holds both, and it finds them."""
    token = "a.b." + secrets.token_urlsafe(16)
    with pytest.raises(requests.RequestException) as info:
        requests.post(
            f"http://127.0.0.1:{free_port()}/api/user/validate",
            json={"token": token},
            auth=(CLIENT_ID, secret),
            timeout=2,
        )
    found = leaks(info.value, secret, [token])
    assert any(f.startswith("basic credentials") for f in found), found
    assert any(f.startswith("token 0 ") for f in found), found


def test_no_exception_raised_by_a_hostile_upstream_carries_the_secret_or_token(
    hfake: FakePlurality, secret: str, tmp_path: Any
) -> None:
    app = build_app(hfake, str(tmp_path / "a"), PLURALITY_TIMEOUT=1.0, PLURALITY_BREAKER_THRESHOLD=1000)
    wrong = build_app(hfake, str(tmp_path / "b"), PLURALITY_CLIENT_SECRET=secret + "-wrong:cut")
    nowhere = build_app(hfake, str(tmp_path / "c"), PLURALITY_API_URL=f"http://127.0.0.1:{free_port()}/api")
    fragile = build_app(hfake, str(tmp_path / "d"), PLURALITY_BREAKER_THRESHOLD=1)
    hfake.hang_seconds = 3.0
    hfake.huge_size = 1024 * 1024
    hfake.gzip_size = 4 * 1024 * 1024
    tokens: list[str] = []
    raised: list[tuple[str, BaseException]] = []

    def attempt(label: str, target: Flask, fault: Any = None, token: str | None = None, **kwargs: Any) -> None:
        token = token or hfake.issue_token()
        tokens.append(token)
        if fault is not None:
            hfake.fail_next(fault, **kwargs)
        with target.app_context(), pytest.raises(PluralityError) as info:
            target.extensions["plurality"].validate(token)
        raised.append((label, info.value))

    attempt("junk", app, token="x" * 10)
    attempt("junk jwt", app, token="eyJhbGciOi.eyJpZCI6.c2lnbmF0dXJl")
    attempt("expired", app, token=hfake.issue_token(ttl=-10))
    revoked = hfake.issue_token()
    hfake.revoke(revoked)
    attempt("revoked", app, token=revoked)
    for fault in ("drip", "slow_headers", "huge", "huge_chunked", "gzip", "redirect", "timeout", "reset",
                  "garbage", "no_user", 403, 500, 502, 504):  # fmt: skip
        attempt(str(fault), app, fault)
    for value in ("²", "-1", "1e9", "soon"):
        attempt(f"retry-after {value}", app, 429, retry_after=value)
    attempt("credentials", wrong)
    attempt("connection refused", nowhere)
    attempt("breaker opens", fragile, 503)
    attempt("breaker open", fragile)

    # A call cut short by its caller's deadline, straight through the client.
    client = PluralityClient()
    try:
        upstream = Upstream(hfake.url, CLIENT_ID, secret, "POST", timeout=1.0, budget=0.2)
        token = hfake.issue_token()
        tokens.append(token)
        hfake.fail_next("timeout")
        with pytest.raises(PluralityError) as info:
            client.validate(token, dataclasses.replace(upstream))
        raised.append(("cut short", info.value))
    finally:
        client.close()

    reasons = {label: getattr(exc, "reason", None) for label, exc in raised}
    assert reasons["drip"] == reasons["cut short"] == "timeout"
    assert reasons["gzip"] == "encoded" and reasons["huge"] == "oversized" and reasons["403"] == "http_403"
    assert reasons["credentials"] == "credentials_rejected" and reasons["breaker open"] == "circuit_open"
    for label, exc in raised:
        assert leaks(exc, secret, tokens) == [], label
