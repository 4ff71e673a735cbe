"""Per-app state, and the one way sibling modules reach the extension.

A leaf module, like flask-jwt-extended's ``internal_utils``: it imports nothing of the
package at run time but the exceptions and the bounded map of :mod:`.lru`, so views, decorators and the CLI find the
extension through ``current_app`` without importing ``extension.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

from flask import Flask, current_app

from .exceptions import ConfigurationError
from .lru import BoundedLRU

if TYPE_CHECKING:
    from .answers import Seen
    from .extension import Plurality
    from .fake import FakePlurality
    from .stores import Store

#: Where :meth:`Plurality.init_app` registers the extension and its per-app state.
EXTENSION_KEY = "plurality"
STATE_KEY = "plurality.state"
#: Bytes of confirmed bearer tokens remembered per app and process (see
#: ``answers.AnswerCache.remember``), least recently used out first: a few thousand
#: tokens of Plurality's size.
BEARER_MEMORY_BYTES: Final = 4 * 2**20


class AppState:
    """Per-app state, kept in ``app.extensions`` (never on the extension object)."""

    __slots__ = ("bearer_tokens", "fake", "store")

    def __init__(self) -> None:
        #: The extension's own keys (answers, throttles, revocations); found on first use.
        self.store: Store | None = None
        #: The stand-in in ``PLURALITY_FAKE`` mode.
        self.fake: FakePlurality | None = None
        #: Bearer tokens Plurality confirmed, as this process read them: their decoded
        #: claims and the revocation epoch they were last found good under
        #: (``answers.Seen``); bounded in bytes, least recently used out first.
        self.bearer_tokens: BoundedLRU[str, Seen] = BoundedLRU(BEARER_MEMORY_BYTES)


def get_extension(app: Flask | None = None) -> Plurality:
    """The extension registered on ``app`` (default: the current app); a clear error if
    ``init_app`` was not called."""
    app = app or current_app
    try:
        return cast("Plurality", app.extensions[EXTENSION_KEY])
    except KeyError:
        raise ConfigurationError("flask-plurality is not set up on this app: call Plurality.init_app(app).") from None


def get_state(app: Flask | None = None) -> AppState:
    """The per-app state :meth:`Plurality.init_app` created."""
    app = app or current_app
    try:
        return cast(AppState, app.extensions[STATE_KEY])
    except KeyError:
        raise ConfigurationError("flask-plurality is not set up on this app: call Plurality.init_app(app).") from None
