"""Living beside another login system (Flask-Login, or the app's own) in one session.

Flask's cookie session has no id, so an app whose users log in with a password could
not suffer session fixation before it added this extension. The server-side session
:func:`.sessions.setup_sessions` puts in its place has one, and Flask-Login's
``login_user`` never changes it: an id an attacker planted in the victim's browser
would become logged in as the victim. So every login gets a new id here, whoever
performs it, and a session holds one identity at a time:

- Flask-Login's ``login_user`` (its ``user_logged_in`` signal) and a login restored
  from its remember-me cookie (``user_loaded_from_cookie``) get a new session id, the
  old id's stored entry deleted. A Plurality login still in that session ends (as
  :meth:`.Plurality.logout` ends it: ``logged_out`` is sent), unless the user logged
  in is the app's own user for that Plurality login (see :func:`linked`).
- ``logout_user`` (``user_logged_out``) ends the session's Plurality login too, and
  :meth:`.Plurality.logout` ends Flask-Login's (:func:`forget_other_logins`).
- A Plurality login drops Flask-Login's remember-me cookie unless the session keeps a
  login linked to it; :func:`.logins.start_login` empties a session that holds another
  identity before it stores the login.
- Any other login system calls :meth:`.Plurality.regenerate_session` (:func:`regenerate`).

:func:`connect` (called by ``init_app``) subscribes to Flask-Login's signals for that
app only, and imports ``flask_login`` only if it is installed. Nothing here runs on a
request that logs nobody in or out.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from flask import Flask, Response, after_this_request, current_app, g, has_request_context, request, session
from flask.sessions import SessionMixin

from . import signals
from .exceptions import SessionStoreUnavailable
from .flask_context import SESSION_KEY
from .flask_session_shim import shim
from .logins import forget_parsed, load_user, stored_login
from .profile import Profile
from .responses import store_unavailable_into
from .sessions import detach_session, is_detached
from .state import get_extension
from .stores import get_store, store_errors_as_unavailable
from .user_sessions import moved

log = logging.getLogger("flask_plurality")

#: What Flask-Login's ``login_user`` writes into the session.
FLASK_LOGIN_KEYS: Final = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds")
#: Where Flask-Login keeps the request's user (``flask.g``): reloaded on next use once gone.
FLASK_LOGIN_USER: Final = "_login_user"


def connect(app: Flask) -> None:
    """Follow ``app``'s other logins: Flask-Login's signals (if it is installed) and
    this extension's own ``logged_in``. Receivers are connected for ``app`` only."""
    signals.logged_in.connect(_plurality_logged_in, app)
    try:
        from flask_login import signals as flask_login_signals
    except ImportError:  # no Flask-Login: nothing else logs in through a signal
        return
    flask_login_signals.user_logged_in.connect(_logged_in_elsewhere, app)
    flask_login_signals.user_loaded_from_cookie.connect(_logged_in_elsewhere, app)
    flask_login_signals.user_logged_out.connect(_logged_out_elsewhere, app)


def _session() -> SessionMixin | None:
    """This request's session, if it is one that is stored (not a bearer request's,
    not one the store failed to load: that request answers 503 anyway)."""
    if not has_request_context():
        return None
    sess: SessionMixin = session._get_current_object()  # type: ignore[attr-defined]
    if getattr(sess, "store_error", False) or is_detached(sess):
        return None
    return sess


def regenerate(sess: SessionMixin) -> None:
    """Give ``sess`` a new id and delete the old id's stored entry (Flask-Session's
    ``regenerate``, which leaves an empty session alone: it has nothing to steal).
    Raises :class:`.SessionStoreUnavailable` if the store fails."""
    regenerate_id = getattr(current_app.session_interface, "regenerate", None)
    if regenerate_id is None or not sess or is_detached(sess):
        return  # a cookie session (replaced after init_app) has no id; a bearer request's is never saved
    login = stored_login(sess)
    forget_parsed(sess)  # parsed logins are kept by id: the old one's goes
    with store_errors_as_unavailable():
        regenerate_id(sess)
    if login is not None and login.handle is not None:  # its user's index follows it to the new id
        inner = getattr(current_app.session_interface, "inner", current_app.session_interface)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        moved(app, get_store(app), login.profile.id, login.handle, shim.store_id(inner, sess.sid))  # type: ignore[attr-defined]


def remember_cookie_sent() -> bool:
    """Did the browser send Flask-Login's remember-me cookie (on an app that uses it)?"""
    if getattr(current_app, "login_manager", None) is None:
        return False
    from flask_login.config import COOKIE_NAME  # Flask-Login is there: the app has a login_manager

    return current_app.config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME) in request.cookies


def forget_other_logins() -> None:
    """Flask-Login's login in this session ends, as ``logout_user`` ends it: its keys go,
    the remember-me cookie is dropped, ``flask_login.current_user`` is loaded again."""
    sess = session
    for key in FLASK_LOGIN_KEYS:
        sess.pop(key, None)
    if has_request_context() and remember_cookie_sent():
        sess["_remember"] = "clear"  # Flask-Login's after_request deletes the cookie
    g.pop(FLASK_LOGIN_USER, None)


def linked(user: Any) -> bool:
    """Is ``user`` (logged in by Flask-Login) the app's own user for this session's
    Plurality login? That is what ``@plurality.user_loader`` returns for it, compared by
    Flask-Login's id. An expired or revoked Plurality login is linked to nobody."""
    if user is None or get_extension().user_callback is None:
        return False
    mine = load_user()
    if mine is None:
        return False
    if mine is user:
        return True
    id_of = getattr(getattr(current_app, "login_manager", None), "id_attribute", "get_id")
    try:
        return bool(getattr(mine, id_of)() == getattr(user, id_of)())
    except (AttributeError, TypeError):  # not a Flask-Login user: another identity
        return False


def _logged_in_elsewhere(app: Flask, user: Any = None, **_: Any) -> None:
    """Flask-Login logged ``user`` in (a password, or the remember-me cookie)."""
    sess = _session()
    if sess is None:
        return
    if SESSION_KEY in sess:
        # Taken first: finding the Plurality user clears a revoked login's session.
        kept = {key: sess[key] for key in FLASK_LOGIN_KEYS if key in sess}
        flask_login_user = g.get(FLASK_LOGIN_USER)
        if not linked(user):
            # The session's Plurality login is someone else: it ends (signal and all),
            # and only the login that just happened stays.
            get_extension(app).logout()
            for key in FLASK_LOGIN_KEYS:
                sess.pop(key, None)
            sess.update(kept)
            if flask_login_user is not None:
                setattr(g, FLASK_LOGIN_USER, flask_login_user)
    try:
        regenerate(sess)
    except SessionStoreUnavailable:
        _refuse_login(sess)


def _refuse_login(sess: SessionMixin) -> None:
    """The old id's entry could not be deleted: saving the login under that id would be
    the fixation this module prevents. Nothing is saved; the answer is the 503."""
    log.error("A login could not get a new session id (session store failure); answered 503")
    detach_session()  # emptied and never saved: no remember-me cookie is set from it either
    g.pop(FLASK_LOGIN_USER, None)

    @after_this_request
    def unavailable(response: Response) -> Response:
        store_unavailable_into(response)
        return response


def _logged_out_elsewhere(app: Flask, **_: Any) -> None:
    """Flask-Login's ``logout_user``: the session's Plurality login ends with it."""
    sess = _session()
    if sess is not None and SESSION_KEY in sess:
        get_extension(app).logout()


def _plurality_logged_in(app: Flask, profile: Profile | None = None, **_: Any) -> None:
    """A Plurality login is stored. A remember-me cookie would log a password user back
    into this session on the next request: it goes, unless the session still holds a
    Flask-Login login (a linked one: start_login emptied a session holding any other)."""
    sess = _session()
    if sess is None:
        return
    g.pop(FLASK_LOGIN_USER, None)  # loaded before this login: load it again
    if "_user_id" not in sess and remember_cookie_sent():
        sess["_remember"] = "clear"
