"""What a login looks like inside ``flask.session``: plain JSON types only.

Flask-Session encodes sessions with msgpack or JSON (Redis and most backends) or pickle
(cachelib); only str, int, float, bool, None, list and dict survive all of them.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Final

from flask import has_request_context, session

from .profile import Profile

#: The one key the extension owns in ``flask.session``.
SESSION_KEY: Final = "_plurality"


class Login:
    """A login as stored in the session (plain JSON types only)."""

    __slots__ = ("checked_epoch", "exp", "login_at", "profile", "stamp", "token", "validated_at")

    def __init__(
        self,
        profile: Profile,
        token: str,
        exp: int,
        login_at: float,
        validated_at: float,
        stamp: str | None = None,
        checked_epoch: str | None = None,
    ) -> None:
        self.profile = profile
        self.token = token
        self.exp = exp
        self.login_at = login_at
        self.validated_at = validated_at
        #: The user's revocation stamp when this login began (``None``: there was none);
        #: see :mod:`.revocation`.
        self.stamp = stamp
        #: The revocation epoch under which this login was last found not revoked;
        #: while it has not changed, a protected request reads no stamp.
        self.checked_epoch = checked_epoch

    @classmethod
    def load(cls, data: Any) -> Login | None:
        if not isinstance(data, dict):
            return None
        profile = Profile.from_session(data.get("profile"))
        token, exp = data.get("token"), data.get("exp")
        login_at, validated_at = data.get("login_at"), data.get("validated_at")
        if (
            profile is None
            or not isinstance(token, str)
            or not isinstance(exp, int)
            or not isinstance(login_at, int | float)
            or not isinstance(validated_at, int | float)
        ):
            return None
        stamp = data.get("revocation")
        if stamp is not None and not isinstance(stamp, str):
            return None
        epoch = data.get("epoch")
        return cls(
            profile,
            token,
            exp,
            float(login_at),
            float(validated_at),
            stamp,
            epoch if isinstance(epoch, str) else None,
        )

    def dump(self) -> dict[str, Any]:
        return {
            "profile": self.profile.to_session(),
            "token": self.token,
            "exp": self.exp,
            "login_at": self.login_at,
            "validated_at": self.validated_at,
            # Stored under their first names, so sessions survive an upgrade.
            "revocation": self.stamp,
            "epoch": self.checked_epoch,
        }


def session_lifetime_cap(lifetime: timedelta) -> timedelta:
    """No session outlives its token: cap a lifetime at the login's ``exp``."""
    if not has_request_context():
        return lifetime
    data = session.get(SESSION_KEY)  # runs on every save: read exp alone, not the whole login
    exp = data.get("exp") if isinstance(data, dict) else None
    if not isinstance(exp, int) or isinstance(exp, bool):
        return lifetime
    return min(lifetime, timedelta(seconds=max(1, exp - int(time.time()))))
