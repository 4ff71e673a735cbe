"""Reading a pluralityToken without Plurality's key.

The token is an HS256 JWT signed with a secret only Plurality knows, so we can never
verify it; we only read ``exp`` to refuse junk and expired tokens without spending an
upstream call, and to end the session when the token ends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from typing import Any, Final

from .exceptions import InvalidToken

# Three base64url parts; the signature may not be empty (an "alg: none" token is junk).
_JWT_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}")
#: Plurality's tokens live one day; an ``exp`` further away than this is forged junk
#: (and would overflow the lifetimes derived from it: answer cache, session, cookie).
MAX_LIFETIME: Final = 366 * 86400


def read_claims(token: str, *, max_length: int, now: float | None = None) -> dict[str, Any]:
    """Decode (never verify) the claims; raise :class:`InvalidToken` for junk or expiry."""
    if len(token) > max_length or not _JWT_SHAPE.fullmatch(token):
        raise InvalidToken("The token is not a Plurality token.", reason="malformed")
    head, body, _ = token.split(".")
    header, claims = _segment(head), _segment(body)
    if header is None or header.get("alg") != "HS256" or claims is None:
        raise InvalidToken("The token is not a Plurality token.", reason="malformed")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        raise InvalidToken("The token has no expiry.", reason="malformed")  # NaN is never "<= now"
    now = time.time() if now is None else now
    if exp <= now:
        raise InvalidToken("The token has expired.", reason="expired")
    if exp > now + MAX_LIFETIME:
        raise InvalidToken("The token's expiry is implausibly far away.", reason="malformed")
    return claims


def _segment(part: str) -> dict[str, Any] | None:
    """One base64url JSON segment of a JWT (the shape already checked), ``None`` for junk.

    What PyJWT's unverified decode does for these two segments, at a sixth of its cost
    (its base64 check runs a Python generator per character): no signature is checked
    either way, as Plurality's key is not ours to have."""
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token :func:`read_claims` accepted once (a stored login's); ``{}``
    for anything else."""
    parts = token.split(".")
    claims = _segment(parts[1]) if len(parts) == 3 else None
    return claims if claims is not None else {}


#: The header of every Plurality token (``{"alg":"HS256","typ":"JWT"}``), with its dot.
STANDARD_HEADER: Final = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."


def without_standard_header(token: str) -> str:
    """``token`` as stored in a session: without :data:`STANDARD_HEADER` when it has
    that header (every Plurality token: 37 bytes fewer per session); see :func:`with_header`."""
    return token[len(STANDARD_HEADER) :] if token.startswith(STANDARD_HEADER) else token


def with_header(stored: str) -> str:
    """The token that :func:`without_standard_header` stored (a token always has two dots)."""
    return stored if stored.count(".") == 2 else STANDARD_HEADER + stored


def token_hash(token: str) -> str:
    """The only form in which a token may appear in a store key."""
    return hashlib.sha256(token.encode()).hexdigest()
