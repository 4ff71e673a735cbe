"""What a login looks like inside ``flask.session``: plain JSON types only.

Flask-Session encodes sessions with msgpack or JSON (Redis and most backends) or pickle
(cachelib); only str, int, float, bool, None, list and dict survive all of them.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Final

from flask import has_request_context, session
from flask.sessions import SessionMixin

from .profile import Profile

#: The one key the extension owns in ``flask.session``.
SESSION_KEY: Final = "_plurality"


class Login:
    """A login as stored in the session (plain JSON types only).

    Never changed once built (:meth:`replace` makes a changed copy): :func:`stored_login`
    hands one object to every request of a session until what is stored changes.
    """

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

    def replace(self, **changes: Any) -> Login:
        """A copy with ``changes`` (attribute names) applied."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        return Login(**{**fields, **changes})

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


#: Logins this process parsed lately, by session id: (the stored value, as
#: :meth:`Login.dump` writes it, and the :class:`Login`). Building a login's
#: :class:`~.profile.Profile` (a frozen dataclass) costs more than the rest of a
#: protected request's check together; comparing the stored value with the one last
#: parsed (C-level dict equality) costs a fifth of that. At most :data:`PARSED_MAX`
#: entries, oldest dropped first; a miss only means parsing again.
_parsed: dict[str, tuple[dict[str, Any], Login]] = {}
PARSED_MAX: Final = 1024


def stored_login(sess: SessionMixin) -> Login | None:
    """The login stored in ``sess``, if any (not checked for expiry or revocation)."""
    sess.accessed = True  # what sess.get does (the answer depends on the cookie: Vary)
    data = dict.get(sess, SESSION_KEY)  # type: ignore[call-overload]
    sid = getattr(sess, "sid", None)
    entry = _parsed.get(sid)  # type: ignore[arg-type]
    if entry is not None and entry[0] == data:
        return entry[1]
    login = Login.load(data)
    if login is not None and isinstance(sid, str):
        if len(_parsed) >= PARSED_MAX:
            _parsed.pop(next(iter(_parsed), ""), None)
        _parsed[sid] = (login.dump(), login)
    return login


def forget_parsed(sess: SessionMixin) -> None:
    """This session's login ended: its parsed copy (and token) leaves this process's memory."""
    _parsed.pop(getattr(sess, "sid", None), None)  # type: ignore[arg-type]


def session_lifetime_cap(lifetime: timedelta) -> timedelta:
    """No session outlives its token: cap a lifetime at the login's ``exp``."""
    if not has_request_context():
        return lifetime
    data = session.get(SESSION_KEY)  # runs on every save: read exp alone, not the whole login
    exp = data.get("exp") if isinstance(data, dict) else None
    if not isinstance(exp, int) or isinstance(exp, bool):
        return lifetime
    return min(lifetime, timedelta(seconds=max(1, exp - int(time.time()))))
