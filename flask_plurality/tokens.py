"""Reading a pluralityToken without Plurality's key.

The token is an HS256 JWT signed with a secret only Plurality knows, so we can never
verify it; we only read ``exp`` to refuse junk and expired tokens without spending an
upstream call, and to end the session when the token ends.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from typing import Any, Final

import jwt

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
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        header, claims = {}, None  # raised below, outside the except: PyJWT's error stays off our chain
    if header.get("alg") != "HS256" or not isinstance(claims, dict):
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


def token_hash(token: str) -> str:
    """The only form in which a token may appear in a store key."""
    return hashlib.sha256(token.encode()).hexdigest()
