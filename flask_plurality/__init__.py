"""Trust Plurality Network logins in a Flask backend, with server-side sessions."""

from . import signals
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
from .state import get_extension

__version__ = "0.1.0"

__all__ = [
    "AnonymousProfile",
    "ConfigurationError",
    "CredentialsRejected",
    "InvalidToken",
    "NotConfigured",
    "Plurality",
    "PluralityError",
    "Profile",
    "SessionStoreUnavailable",
    "UpstreamUnavailable",
    "current_profile",
    "current_user",
    "get_extension",
    "plurality_required",
    "signals",
]
