"""``revoke_user``: refuse every existing session of a user, on every worker and machine.

Plurality cannot do this itself: its logout revokes nothing, and a token stays valid
upstream until its ``exp``. Two kinds of entries in the shared store do it here:

- a user's **revocation stamp** (``revoked:<user id>``): a fresh random value written by
  each ``revoke_user``. A login remembers the stamp it began under; a different stamp
  later means the user was revoked after that login. Comparing stamps, not clocks,
  keeps machines whose clocks disagree honest.
- the store-wide **revocation epoch** (``revocations:epoch``), changed by every
  ``revoke_user``. A login remembers the epoch under which it was last found not
  revoked; while the epoch is unchanged, a protected request reads no stamp at all.

Both checks are here, side by side: :func:`is_revoked` for a session, which remembers
the stamp its login began under, and :func:`token_revoked` for a token, which has no
session to remember anything in and is judged by the time in the stamp instead: a bearer
token on every request, and the token posted to ``/login`` (:func:`refuse_revoked_token`),
so that the token a revoked session was started with cannot start a new one.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from flask import Flask, current_app
from flask.sessions import SessionMixin

from . import signals
from .config import config, flag
from .exceptions import ConfigurationError, TokenRevoked
from .flask_context import SESSION_KEY
from .stores import get_store, key

if TYPE_CHECKING:
    from .logins import Login

log = logging.getLogger("flask_plurality")

#: Key (after ``PLURALITY_KEY_PREFIX``) that ``revoke_user`` changes on every revocation.
#: On Redis it is read together with the session (one MGET), so the revocation check of
#: a protected request costs no round trip while nobody was revoked since the login.
REVOCATION_EPOCH: Final = "revocations:epoch"
#: A revocation outlives every session it can concern (tokens live one day).
REVOCATION_TTL: Final = 2 * 86400
#: Not read with the session (every backend but Redis): read the epoch from the store.
_NOT_READ: Final = object()


def revoke(user_id: str) -> None:
    """Write a new stamp for ``user_id``, then a new epoch (needs an app context)."""
    store = get_store()
    if not store.shared:
        # A stamp in one process's memory would revoke there only, and refuse a later
        # login of the same user there: refuse instead of half-working.
        raise ConfigurationError(
            "revoke_user cannot work with this session store: it is per process (see the WARNING "
            "logged at init_app), so a revocation would reach one worker only. Use a shared backend: "
            "SESSION_TYPE 'redis', 'sqlalchemy', 'memcached' or cachelib's FileSystemCache/RedisCache."
        )
    value = _new_stamp()
    # Both writes are lasting: a replica holds them before revoke_user returns (on Redis
    # with replicas), so a failover cannot bring the revoked sessions back.
    store.set_lasting(key("revoked", user_id), value, REVOCATION_TTL)
    # Then, never before, the epoch every session compares with (see is_revoked).
    store.set_rarely_written(config.key_prefix + REVOCATION_EPOCH, value, REVOCATION_TTL)
    log.info("Revoked every session of Plurality user %s", user_id)
    signals.user_revoked.send(current_app._get_current_object(), user_id=user_id)  # type: ignore[attr-defined]


def _new_stamp() -> str:
    """``"<epoch seconds>-<random>"``: unique, and tells a bearer token's check when."""
    return f"{int(time.time())}-{secrets.token_hex(8)}"


def _stamp_time(stamp: str) -> int | None:
    """The epoch seconds a stamp was written at; ``None`` for a value not of that shape."""
    written = stamp.partition("-")[0]
    return int(written) if written.isascii() and written.isdigit() else None


def stamp_of(user_id: str, app: Flask | None = None) -> str | None:
    """``user_id``'s revocation stamp; ``None`` if never revoked (or long ago)."""
    value = get_store(app).get(key("revoked", user_id))
    return value if isinstance(value, str) else None


def current_epoch() -> str | None:
    """The revocation epoch now: read at login before the stamp (see :func:`is_revoked`)."""
    value = get_store().get(config.key_prefix + REVOCATION_EPOCH)
    return value if isinstance(value, str) else None


def epoch_since(known: str | None, app: Flask) -> str | None:
    """The revocation epoch now, for a caller last found good under ``known``: returned
    without a read while the store can tell cheaply that it is still the current one
    (on files, one ``access``: :meth:`.stores.files.FileStore.still_current`)."""
    store, name = get_store(app), app.config["PLURALITY_KEY_PREFIX"] + REVOCATION_EPOCH
    if store.still_current(name, known):
        return known
    raw = store.get_rarely_written(name)
    return raw if isinstance(raw, str) else None


def _checked(app: Flask) -> bool:
    setting = app.config["PLURALITY_REVOCATION_CHECK"]
    return setting is True or flag(setting, "PLURALITY_REVOCATION_CHECK")


def is_revoked(login: Login, sess: SessionMixin, app: Flask) -> bool:
    """Was ``revoke_user`` called for this user after this login began?

    While the store-wide revocation epoch is the one this login was last checked
    under (no ``revoke_user`` anywhere since), no per-user read is needed: on Redis,
    memcached and SQL the epoch comes with the session, elsewhere from :func:`epoch_since`.
    """
    if not _checked(app):
        return False
    epoch: Any = getattr(sess, "revocation_epoch", _NOT_READ)  # read with the session
    if epoch is _NOT_READ:
        epoch = epoch_since(login.checked_epoch, app)
    if epoch == login.checked_epoch:
        return False
    stamp = stamp_of(login.profile.id, app)
    if stamp is not None and stamp != login.stamp:
        log.info("Refused a revoked session of user %s", login.profile.id)
        return True
    # revoke_user writes the stamp before the epoch, and the epoch was read first:
    # every revocation up to this epoch is seen, so later requests may skip the read.
    sess[SESSION_KEY] = login.replace(checked_epoch=cast(str | None, epoch)).dump()
    return False


class SeenToken(Protocol):
    """What a process remembers of a bearer token it accepted: its claims, and the
    revocation epoch it was last found not revoked under (``None``: not yet)."""

    claims: dict[str, Any]
    epoch: str | None


class _Unseen:
    """A token nothing was remembered of: the one posted to ``/login``."""

    __slots__ = ("claims", "epoch")

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims
        self.epoch: str | None = None


def refuse_revoked_token(user_id: str, claims: dict[str, Any], app: Flask) -> None:
    """``/login``'s check, by the rule of :func:`token_revoked`: raise
    :class:`.TokenRevoked` for a token of ``user_id`` issued before its revocation.

    ``claims`` are the token's, trusted because Plurality has just said yes to it.
    While nobody was revoked (no epoch in the store) this is one read.
    """
    if token_revoked(user_id, _Unseen(claims), app):
        raise TokenRevoked("The token was issued before its user was revoked.", reason="revoked")


def token_revoked(user_id: str, token: SeenToken, app: Flask) -> bool:
    """Was ``revoke_user`` called for ``user_id`` at or after ``token`` was issued?

    ``iat`` is compared with the time in the user's stamp; a token issued in the second
    of the revocation is refused too, and so is one whose ``iat`` or stamp cannot be
    read (refuse rather than let a revoked user in). As for sessions, no stamp is read
    while the store-wide epoch is the one this token was last found good under.
    """
    if not _checked(app):
        return False
    epoch = epoch_since(token.epoch, app)
    if epoch is None or epoch == token.epoch:
        return False  # nobody revoked (in the last REVOCATION_TTL), or nobody since
    stamp = stamp_of(user_id, app)
    if stamp is not None:
        revoked_at, iat = _stamp_time(stamp), token.claims.get("iat")
        if revoked_at is None or not isinstance(iat, int | float) or isinstance(iat, bool) or iat <= revoked_at:
            log.info("Refused a token issued before user %s was revoked", user_id)
            return True
    token.epoch = epoch  # the stamp was read after the epoch: see is_revoked
    return False
