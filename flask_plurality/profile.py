"""The signed-in user's profile, as the app sees it in ``current_profile``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Profile:
    """A Plurality user, from Plurality's validate answer and the token's claims."""

    #: Plurality's user id (a uuid).
    id: str
    #: May be ``None``: a wallet-only user has no email.
    email: str | None = None
    #: The user's wallet address (``authAddress`` upstream; ``address`` in the older route's raw row).
    auth_address: str | None = None
    #: The proxy wallet address (``proxyAddress`` upstream; ``pkpAddress`` in the older route's raw row).
    proxy_address: str | None = None
    #: The token's ``uniqueSessionId``: the link between this user and this client app.
    unique_session_id: str | None = None
    #: When the token, and so this login, expires (epoch seconds).
    expires_at: int | None = None
    #: Plurality's ``user`` object as received, for fields this class does not name.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __bool__(self) -> bool:
        return True

    @classmethod
    def from_upstream(cls, user: dict[str, Any], claims: dict[str, Any]) -> Profile:
        """Build from Plurality's ``user`` object and the token's decoded claims."""
        exp = claims.get("exp")
        return cls(
            id=str(user["id"]),
            email=_opt_str(user.get("email")),
            # The older GET route answered Plurality's raw user row, where the newer
            # names are ``address`` and ``pkpAddress`` (docs/plurality-api.rst, "The response table").
            auth_address=_opt_str(user.get("authAddress")) or _opt_str(user.get("address")),
            proxy_address=_opt_str(user.get("proxyAddress")) or _opt_str(user.get("pkpAddress")),
            unique_session_id=_opt_str(claims.get("uniqueSessionId")),
            expires_at=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
            raw=dict(user),
        )

    def to_json(self) -> dict[str, Any]:
        """The profile as the endpoints answer it (everything but ``raw``)."""
        return {
            "id": self.id,
            "email": self.email,
            "auth_address": self.auth_address,
            "proxy_address": self.proxy_address,
            "unique_session_id": self.unique_session_id,
            "expires_at": self.expires_at,
        }

    def to_session(self) -> dict[str, Any]:
        """Plain JSON types only: the session goes through msgpack, JSON or pickle."""
        return {**self.to_json(), "raw": self.raw}

    @classmethod
    def from_session(cls, data: Any) -> Profile | None:
        """Rebuild from :meth:`to_session`; ``None`` when the stored value is unusable."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        exp = data.get("expires_at")
        raw = data.get("raw")
        return cls(
            id=data["id"],
            email=_opt_str(data.get("email")),
            auth_address=_opt_str(data.get("auth_address")),
            proxy_address=_opt_str(data.get("proxy_address")),
            unique_session_id=_opt_str(data.get("unique_session_id")),
            expires_at=exp if isinstance(exp, int) and not isinstance(exp, bool) else None,
            raw=dict(raw) if isinstance(raw, dict) else {},  # not shared with the session's
        )


class AnonymousProfile:
    """What ``current_profile`` is outside a login: falsy, every attribute ``None``."""

    __slots__ = ()
    id = None
    email = None
    auth_address = None
    proxy_address = None
    unique_session_id = None
    expires_at = None
    raw: ClassVar[dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<AnonymousProfile>"

    def to_json(self) -> None:
        """``null`` in JSON: there is no profile to show."""
        return None


ANONYMOUS = AnonymousProfile()
