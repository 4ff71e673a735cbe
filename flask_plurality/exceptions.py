"""The exceptions the extension raises; all derive from :class:`PluralityError`.

Messages never contain a token or the client secret: they may end up in logs.
"""

from __future__ import annotations

from typing import IO, Any

import click
from flask.cli import NoAppException


class PluralityError(Exception):
    """Base class of every error raised by flask-plurality."""

    #: A short, stable code for signals and logs (``"expired"``, ``"timeout"``...).
    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigurationError(PluralityError, NoAppException):
    """The app's configuration cannot work (a missing key, an impossible value).

    Also a :class:`click.ClickException`: raised while ``flask run``, ``flask plurality
    ...`` or any other Flask command loads the app, it prints one line, ``Error:
    <message>``, and exits 1, instead of a traceback. It is Flask's own "could not load
    the app" error, so ``flask --help`` says it in one line too, then lists the commands.
    """

    reason = "configuration"
    #: 1, as for any :class:`click.ClickException`; not the usage error's 2.
    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        """``Error: <message>``, one line, without the usage text of a usage error."""
        click.ClickException.show(self, file)


class NotConfigured(ConfigurationError):
    """A use that needs a setting the app left out (the client id or secret).

    ``init_app`` only warns about a missing credential, so that ``flask db upgrade``,
    ``flask --help``, a build step or tests that never log in work without one; each
    login, revalidation, bearer check or :meth:`~flask_plurality.Plurality.validate`
    raises this instead, before anything is sent. A request answers it with 503
    ``not_configured``. :attr:`missing` names the keys.
    """

    reason = "not_configured"

    def __init__(self, message: str, *, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        #: The keys that are not set, e.g. ``("PLURALITY_CLIENT_SECRET",)``.
        self.missing = missing


class InvalidToken(PluralityError):
    """The token is not acceptable: malformed, expired, revoked or for another app."""

    reason = "invalid_token"
    #: ``True`` when the refusal came from the shared answer cache (Plurality was not asked again).
    cached: bool = False


class TokenRevoked(InvalidToken):
    """The token was issued (by its ``iat``) before ``revoke_user`` was called for its user:
    Plurality still accepts it, this app does not. ``/login`` answers 401 ``token_revoked``,
    so that the page signs out of the widget and the user signs in afresh."""

    reason = "revoked"


class UpstreamUnavailable(PluralityError):
    """Plurality could not give an answer we can trust; the user is not to blame."""

    reason = "upstream_unavailable"

    def __init__(self, message: str, *, reason: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, reason=reason)
        #: Seconds the caller should wait, when known (from ``Retry-After`` or the breaker).
        self.retry_after = retry_after


class CredentialsRejected(UpstreamUnavailable):
    """Plurality refused *our* client id or secret: a deployment problem, not the user's."""

    reason = "credentials_rejected"


class SessionStoreUnavailable(PluralityError):
    """The server-side session store (Redis, the cache directory...) cannot be reached."""

    reason = "session_store_unavailable"
