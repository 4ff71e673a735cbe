"""The login kept in the server-side session: start one, read the current one.

What a login looks like in ``flask.session`` is :mod:`.sessiondata`'s; this module is
what the blueprint, the decorator and ``current_profile`` do with it.
"""

from __future__ import annotations

import logging
import time

from flask import current_app, g, session

from .exceptions import SessionStoreUnavailable
from .flask_context import request_globals
from .profile import Profile
from .revocation import current_epoch, is_revoked, stamp_of
from .sessiondata import SESSION_KEY, Login, forget_parsed, stored_login
from .sessions import GuardedSessionInterface
from .state import EXTENSION_KEY
from .store import store_errors_as_unavailable

log = logging.getLogger("flask_plurality")

#: Where a request keeps its profile once known (``current_profile`` reads it).
PROFILE_ATTR = "_plurality_profile"
#: Where a request keeps the app's own user once loaded (``None`` is a loaded "nobody").
USER_ATTR = "_plurality_user"


def load_login() -> Login | None:
    """The login stored in this request's session, if any (not checked)."""
    return stored_login(session._get_current_object())  # type: ignore[attr-defined]


def current_login_profile(*, strict: bool = False) -> Profile | None:
    """The logged-in profile without asking upstream: ``current_profile``'s and
    ``/session``'s source. A revoked session is cleared (one store read). A store
    failure means "not logged in", or raises :class:`SessionStoreUnavailable` if
    ``strict``."""
    if getattr(session, "store_error", False):
        return None
    login = load_login()
    if login is None or login.exp <= time.time():
        return None
    try:
        if is_revoked(login, session._get_current_object(), current_app._get_current_object()):  # type: ignore[attr-defined]
            session.clear()
            return None
    except SessionStoreUnavailable:
        if strict:
            raise
        return None
    return login.profile


def request_profile() -> Profile | None:
    """This request's profile, found once (``current_profile`` and ``current_user`` read it):
    what ``@plurality_required`` or a bearer token set, else the session's login."""
    g_ = request_globals()  # not the g proxy: current_profile reads this on every use
    if g_ is None:
        return None
    profile: Profile | None = g_.__dict__.get(PROFILE_ATTR)
    if profile is None:
        profile = current_login_profile() if EXTENSION_KEY in current_app.extensions else None
        g_.__dict__[PROFILE_ATTR] = profile
    return profile


def start_login(profile: Profile, token: str, exp: int) -> None:
    """Store a fresh login under a new session id (no fixation)."""
    if not isinstance(current_app.session_interface, GuardedSessionInterface):
        # Something replaced Flask-Session after init_app: a cookie session would hand
        # the token to the browser. Refuse rather than store the login there.
        log.error("app.session_interface was replaced after Plurality.init_app; logins are refused")
        raise SessionStoreUnavailable("The server-side session store is not in place.")
    # One identity per session: a session holding someone else's login (another
    # Plurality user's, or Flask-Login's "_user_id" not linked to this same user; see
    # other_logins) starts empty, so none of their data carries over.
    previous = load_login()
    someone_else = previous.profile.id != profile.id if previous is not None else "_user_id" in session
    if someone_else:
        session.clear()
    now = time.time()
    epoch = current_epoch()  # before the stamp: see revocation.is_revoked
    login = Login(profile, token, exp, now, now, stamp_of(profile.id), epoch)
    forget_parsed(session)  # the old id's, if any: regenerate() below drops that id
    session[SESSION_KEY] = login.dump()
    session.permanent = True
    with store_errors_as_unavailable():
        current_app.session_interface.regenerate(session)  # deletes the old id's entry
    setattr(g, PROFILE_ATTR, profile)
    g.pop(USER_ATTR, None)


def end_login() -> Login | None:
    """Clear this request's session (deleting its stored entry); the login it held."""
    login = load_login()
    forget_parsed(session)
    session.clear()
    forget_profile()
    return login


def forget_profile() -> None:
    """The request's login ended: ``current_profile`` and ``current_user`` are nobody's."""
    g.pop(PROFILE_ATTR, None)
    g.pop(USER_ATTR, None)
