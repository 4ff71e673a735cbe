"""Trust Plurality Network logins in a Flask backend, with server-side sessions."""

from . import signals
from .config import DEFAULTS, fake_mode
from .decorators import plurality_required
from .exceptions import (
    ConfigurationError,
    CredentialsRejected,
    InvalidToken,
    NotConfigured,
    PluralityError,
    SessionStoreUnavailable,
    UpstreamUnavailable,
)
from .extension import Plurality
from .logins import current_profile, current_user
from .profile import AnonymousProfile, Profile
from .security import safe_next
from .state import get_extension
from .user_sessions import SessionInfo

__version__ = "0.1.0"

#: Every setting the extension reads, as ``init_app`` sets it by default (a copy:
#: changing it changes nothing).
SETTINGS: dict[str, object] = dict(DEFAULTS)

__all__ = [
    "SETTINGS",
    "AnonymousProfile",
    "ConfigurationError",
    "CredentialsRejected",
    "InvalidToken",
    "NotConfigured",
    "Plurality",
    "PluralityError",
    "Profile",
    "SessionInfo",
    "SessionStoreUnavailable",
    "UpstreamUnavailable",
    "current_profile",
    "current_user",
    "fake_mode",
    "get_extension",
    "plurality_required",
    "safe_next",
    "signals",
]
