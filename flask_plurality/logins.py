"""The login kept in the server-side session, in one place: what is stored, starting
one, the one "is it still good?" check, ending one, and who the request's user is.

- :class:`Login` is the login as stored in ``flask.session`` (plain JSON types only:
  Flask-Session encodes sessions with msgpack, JSON or pickle), parsed once per change
  of what is stored (:func:`stored_login`).
- :func:`check_login` is the one check of a stored login (expiry, ``revoke_user``, and
  asking Plurality again when due): ``@plurality_required``, ``current_profile``,
  ``GET /plurality/session`` and ``current_user`` all go through it.
- :func:`end_login` is the one way a login ends (logout, expired, revoked, Plurality's
  "no", the user loader's ``None``): the parsed copy and its token leave this process's
  memory, the session is cleared, and the request's profile and user are nobody's.
- ``current_profile`` and ``current_user`` answer "who is this?" once per request, the
  way Flask-Login's ``_load_user`` does; the answer is kept on the request (see
  :mod:`.flask_context`), so it can never outlive it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from flask import current_app, has_request_context, session
from flask.sessions import SessionMixin
from flask_session.base import ServerSideSessionInterface
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .callbacks import BEFORE_LOGIN_ANSWERS, is_response, wrong_answer
from .config import ConfigView, parse_interval
from .exceptions import ConfigurationError, InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .flask_context import PROFILE, SESSION_KEY, USER, current_request, request_scope
from .flask_session_shim import shim
from .lru import BoundedLRU, size_of
from .profile import ANONYMOUS, AnonymousProfile, Profile
from .responses import login_refused
from .revocation import current_epoch, is_revoked, stamp_of
from .state import EXTENSION_KEY
from .stores import get_store, lasting_deletes, store_errors_as_unavailable, store_use
from .tokens import unverified_claims, with_header, without_standard_header
from .user_sessions import TooManySessions, new_handle, on_store_id_ended, register, unregister

if TYPE_CHECKING:
    from .extension import Plurality

__all__ = ["SESSION_KEY", "Login", "check_login", "current_profile", "current_user", "end_login", "start_login"]

log = logging.getLogger("flask_plurality")

#: ``revalidate`` not given to :func:`check_login`: the app's ``PLURALITY_REVALIDATE`` decides.
APP_DEFAULT: Final = object()
#: Not yet looked up in this request (``None`` there means "nobody").
_UNKNOWN: Final = object()


class Login:
    """A login as stored in the session (plain JSON types only).

    Never changed once built (:meth:`replace` makes a changed copy): :func:`stored_login`
    hands one object to every request of a session until what is stored changes.

    Stored small, as every logged-in session holds it (:meth:`dump`; Redis keeps a
    session in under 600 bytes): one-letter names, and no field twice. ``t`` is the
    token, without its standard header (:func:`.tokens.without_standard_header`);
    ``exp`` its expiry; ``l`` and ``v`` when the login began and when Plurality last
    said yes; ``u`` Plurality's ``user`` object as received, without its ``id`` when
    that is the token's own ``id`` claim; ``r`` and ``e`` the revocation stamp and
    epoch, left out while ``None``; ``h`` the session's handle in its user's index and
    ``s`` when it was last written down as seen (left out while that is the login). The
    profile is rebuilt from ``u`` and the token's claims, as at login. A profile that its
    ``user`` object would not rebuild (one made by hand) is stored whole (``p``); so are
    logins of earlier releases (long names), which still load.
    """

    __slots__ = (
        "checked_epoch",
        "exp",
        "handle",
        "login_at",
        "profile",
        "seen",
        "stamp",
        "token",
        "user",
        "validated_at",
    )

    def __init__(
        self,
        profile: Profile,
        token: str,
        exp: int,
        login_at: float,
        validated_at: float,
        stamp: str | None = None,
        checked_epoch: str | None = None,
        handle: str | None = None,
        seen: int = 0,
        user: dict[str, Any] | None = None,
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
        #: This session's name in its user's index (:mod:`.user_sessions`); ``None`` for
        #: a login stored before there was one.
        self.handle = handle
        #: When a request of this session was last written down as seen (epoch seconds):
        #: ``last_seen``, rewritten at most once per ``PLURALITY_LAST_SEEN_INTERVAL``.
        self.seen = seen
        #: What is stored for the profile (``u``): Plurality's ``user`` object, short of
        #: the id the token holds, when that rebuilds ``profile`` exactly; else ``{}``.
        self.user = user if user is not None else _stored_user(profile, token, exp)

    @classmethod
    def load(cls, data: Any) -> Login | None:
        if not isinstance(data, dict):
            return None
        if "t" not in data:
            return cls._load_long(data)
        stored, exp, login_at, validated_at = data.get("t"), data.get("exp"), data.get("l"), data.get("v")
        if (
            not isinstance(stored, str)
            or not isinstance(exp, int)
            or not isinstance(login_at, int | float)
            or not isinstance(validated_at, int | float)
        ):
            return None
        token = with_header(stored)
        user = data.get("u")
        if isinstance(user, dict):
            profile = _profile_from(user, token, exp)
        else:
            profile = Profile.from_session(data.get("p"))
            user = {}
        stamp, epoch, handle, seen = data.get("r"), data.get("e"), data.get("h"), data.get("s")
        if profile is None or (stamp is not None and not isinstance(stamp, str)):
            return None
        return cls(
            profile,
            token,
            exp,
            float(login_at),
            float(validated_at),
            stamp,
            epoch if isinstance(epoch, str) else None,
            handle if isinstance(handle, str) else None,
            seen if isinstance(seen, int) and not isinstance(seen, bool) else int(login_at),
            dict(user),
        )

    @classmethod
    def _load_long(cls, data: dict[str, Any]) -> Login | None:
        """A login stored by an earlier release (long names, the profile whole)."""
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
        stamp, epoch = data.get("revocation"), data.get("epoch")
        if stamp is not None and not isinstance(stamp, str):
            return None
        return cls(
            profile, token, exp, float(login_at), float(validated_at), stamp, epoch if isinstance(epoch, str) else None
        )

    def replace(self, **changes: Any) -> Login:
        """A copy with ``changes`` (attribute names) applied."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        if "profile" in changes:
            fields["user"] = None  # found again for the new profile
        return Login(**{**fields, **changes})

    def dump(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "t": without_standard_header(self.token),
            "exp": self.exp,
            "l": int(self.login_at),  # whole seconds: it only tells whether the expiry slides
            "v": round(self.validated_at, 3),
        }
        if self.user:
            data["u"] = self.user
        else:
            data["p"] = self.profile.to_session()
        if self.stamp is not None:
            data["r"] = self.stamp
        if self.checked_epoch is not None:
            data["e"] = self.checked_epoch
        if self.handle is not None:
            data["h"] = self.handle
        if self.seen > data["l"]:  # not seen since the login: left out, as every byte is per session
            data["s"] = self.seen
        return data


def _profile_from(user: dict[str, Any], token: str, exp: int) -> Profile | None:
    """The profile of a login with Plurality's ``user`` object (as stored: maybe without
    the token's own ``id``) and this token, as :func:`.views.login` builds it."""
    claims = unverified_claims(token)
    if "id" not in user:
        user = {"id": claims.get("id"), **user}
    if not isinstance(user["id"], str | int):
        return None
    return Profile.from_upstream(user, {"exp": exp, "uniqueSessionId": claims.get("uniqueSessionId")})


def _stored_user(profile: Profile, token: str, exp: int) -> dict[str, Any]:
    """What :meth:`Login.dump` stores of ``profile`` (``u``): ``profile.raw`` (without
    the ``id`` when the token holds it) when that rebuilds ``profile`` exactly, as
    Plurality's answers always do; else ``{}`` (the profile is stored whole)."""
    raw = dict(profile.raw)
    if raw.get("id") is not None and raw.get("id") == unverified_claims(token).get("id"):
        del raw["id"]
    if not raw or _profile_from(raw, token, exp) != profile:
        return {}
    return raw


# -- what is stored, parsed once per change ------------------------------------------------

#: Logins this process parsed lately, by session id: (the stored value, as
#: :meth:`Login.dump` writes it, and the :class:`Login`). Building a login's
#: :class:`~.profile.Profile` (a frozen dataclass) costs more than the rest of a
#: protected request's check together; comparing the stored value with the one last
#: parsed (C-level dict equality) costs a fifth of that. Least recently used first
#: out, at most :data:`PARSED_MAX_BYTES` in all (about 5,000 logins of Plurality's
#: size); a miss only means parsing again.
PARSED_MAX_BYTES: Final = 16 * 2**20
_parsed: BoundedLRU[str | None, tuple[dict[str, Any], Login]] = BoundedLRU(PARSED_MAX_BYTES)


def stored_login(sess: SessionMixin) -> Login | None:
    """The login stored in ``sess``, if any (not checked: see :func:`check_login`)."""
    sess.accessed = True  # what sess.get does (the answer depends on the cookie: Vary)
    data = dict.get(sess, SESSION_KEY)  # type: ignore[call-overload]
    sid = getattr(sess, "sid", None)
    entry = _parsed.get(sid)
    if entry is not None and entry[0] == data:
        return entry[1]
    login = Login.load(data)
    if login is not None and isinstance(sid, str):
        stored = login.dump()
        # Charged the stored copy's deep size: the login shares its strings, and its
        # objects take no more than the copy's dicts (about 3 KB in all for a login).
        _parsed.put(sid, (stored, login), size_of(stored))
    return login


def forget_parsed(sess: SessionMixin) -> None:
    """This session's login ended: its parsed copy (and token) leaves this process's memory."""
    _parsed.pop(getattr(sess, "sid", None))


def _forget_store_id(app: Any, store_id: str) -> None:
    """A session ended by handle (another request's, or none): its parsed copy goes too."""
    prefix = getattr(app.session_interface, "key_prefix", "")
    if isinstance(prefix, str) and store_id.startswith(prefix):
        _parsed.pop(store_id[len(prefix) :])


on_store_id_ended.append(_forget_store_id)


def session_lifetime_cap(lifetime: timedelta) -> timedelta:
    """No session outlives its token: cap a lifetime at the login's ``exp``."""
    if not has_request_context():
        return lifetime
    data = session.get(SESSION_KEY)  # runs on every save: read exp alone, not the whole login
    exp = data.get("exp") if isinstance(data, dict) else None
    if not isinstance(exp, int) or isinstance(exp, bool):
        return lifetime
    return min(lifetime, timedelta(seconds=max(1, exp - int(time.time()))))


def expiry_pinned_to_token(sess: SessionMixin, lifetime: timedelta) -> bool:
    """Has this session's entry (and cookie) expired at its login's token ``exp`` ever
    since the login? Every write caps the lifetime at ``exp`` (:func:`session_lifetime_cap`),
    so it has when the login's own write already reached ``exp``: ``login_at + lifetime
    >= exp``. Then rewriting an unchanged session changes nothing (see the session guard);
    with a shorter ``PERMANENT_SESSION_LIFETIME`` the session slides, written as usual."""
    data = dict.get(sess, SESSION_KEY)  # type: ignore[call-overload]
    if not isinstance(data, dict):
        return False
    exp, login_at = data.get("exp"), data.get("l", data.get("login_at"))
    if not isinstance(exp, int) or not isinstance(login_at, int | float):
        return False
    return bool(login_at + lifetime.total_seconds() >= exp)


# -- start, check, end -----------------------------------------------------------------------


def start_login(profile: Profile, token: str, exp: int) -> None:
    """Store a fresh login under a new session id (no fixation)."""
    inner = getattr(current_app.session_interface, "inner", None)  # the guard's Flask-Session interface
    if not isinstance(inner, ServerSideSessionInterface):
        # Something replaced the guarded Flask-Session interface after init_app: a cookie
        # session would hand the token to the browser. Refuse rather than store the login there.
        log.error("app.session_interface was replaced after Plurality.init_app; logins are refused")
        raise SessionStoreUnavailable("The server-side session store is not in place.")
    # One identity per session: a session holding someone else's login (another
    # Plurality user's, or a Flask-Login "_user_id"; see other_logins) starts empty, so
    # none of their data carries over.
    sess = session._get_current_object()  # type: ignore[attr-defined]
    previous = stored_login(sess)
    someone_else = previous.profile.id != profile.id if previous is not None else "_user_id" in sess
    if someone_else:
        sess.clear()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    now = time.time()
    epoch = current_epoch()  # before the stamp: see revocation.is_revoked
    handle = new_handle()
    login = Login(profile, token, exp, now, now, stamp_of(profile.id), epoch, handle, int(now))
    forget_parsed(sess)  # the old id's, if any: regenerate() below drops that id
    sess[SESSION_KEY] = login.dump()
    sess.permanent = True
    # Deleting the old id's entry waits for a replica only if it held a login.
    lasting = lasting_deletes.set(previous is not None)
    try:
        with store_errors_as_unavailable():
            inner.regenerate(sess)  # deletes the old id's entry
    finally:
        lasting_deletes.reset(lasting)
    if previous is not None and previous.handle is not None and someone_else:
        _unindex(app, previous, "logout")  # the other user's login in this browser ends here
    # Indexed under the user's lock, with the session written there too: a limit or an
    # ending in another process can only come after the write, and this request's own
    # save at the end writes only over an entry still stored (loaded_sid), as a request
    # of any stored session does. TooManySessions: nothing was written.
    use = store_use.set("session_save")  # the session is written there, under the index's lock
    try:
        register(
            app,
            get_store(app),
            profile.id,
            handle=handle,
            store_id=shim.store_id(inner, sess.sid),
            session=sess,
            exp=exp,
            request=current_request(),
            previous=None if previous is None or someone_else else previous.handle,
        )
    except (TooManySessions, SessionStoreUnavailable):
        forget_parsed(sess)
        dict.clear(sess)  # nothing of this login is saved (and the new id was never stored)
        raise
    finally:
        store_use.reset(use)
    sess.loaded_sid = sess.sid
    scope = request_scope()
    if scope is not None:
        scope[PROFILE] = profile
        scope.pop(USER, None)  # the loader runs again, for this profile


def check_login(
    extension: Plurality, app: Any, sess: SessionMixin, scope: dict[str, Any], revalidate: Any = None
) -> Profile | None:
    """The one check of the login stored in ``sess``: its profile while it is still good,
    else ``None`` (a login that is no longer good is ended: :func:`end_login`). The
    answer is kept in ``scope`` (the request's) for ``current_profile``.

    ``revalidate``: seconds after which Plurality is asked again, ``None`` never, or
    :data:`APP_DEFAULT` (``PLURALITY_REVALIDATE``). Raises :class:`SessionStoreUnavailable`
    when the store cannot tell, and :class:`UpstreamUnavailable` when Plurality had to
    be asked, could not answer, and no grace period lets the user in.

    On the hot path (no revalidation due, nobody revoked since this session was last
    checked) this costs a few dictionary reads: the stored login is parsed once per
    change, the settings are read straight from ``app.config``, and the revocation
    epoch came with the session (on files: one ``access``). ``benchmarks/backends.py``
    counts its instructions on every backend.
    """
    if getattr(sess, "store_error", False):
        raise SessionStoreUnavailable("The session store is unavailable.")
    login = stored_login(sess)
    if login is None:
        scope[PROFILE] = None
        return None
    now = time.time()
    if login.exp <= now:
        end_login(sess, "expired")
        return None
    if is_revoked(login, sess, app):
        end_login(sess, "revoked")
        return None
    if revalidate is APP_DEFAULT:
        setting = app.config["PLURALITY_REVALIDATE"]
        revalidate = None if setting is None else parse_interval(setting, "PLURALITY_REVALIDATE")
    if revalidate is None or now - login.validated_at < revalidate:
        scope[PROFILE] = profile = login.profile
        if now - login.seen >= app.config["PLURALITY_LAST_SEEN_INTERVAL"] and login.handle is not None:
            # last_seen: the one write of a steady session, once per interval.
            sess[SESSION_KEY] = login.replace(seen=int(now)).dump()
        return profile
    return _revalidate(extension, app, sess, scope, login, revalidate, now)


def _revalidate(
    extension: Plurality, app: Any, sess: SessionMixin, scope: dict[str, Any], login: Login, interval: int, now: float
) -> Profile | None:
    """Ask Plurality (through the shared answer cache) whether the login still holds."""
    try:
        answer = extension.answers.lookup(login.token, login.exp, interval)
    except InvalidToken as exc:
        log.info("Revalidation refused user %s (%s); session cleared", login.profile.id, exc.reason)
        signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=False)
        end_login(sess, "revoked")
        return None
    except UpstreamUnavailable as exc:
        # Grace counts from the last *good* answer, which a failure never moves.
        cfg = ConfigView(app.config)
        allowed = cfg.on_upstream_error == "allow" and now - login.validated_at < cfg.grace_period
        signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=allowed)
        if not allowed:
            log.info("Revalidation of user %s failed (%s); answered 503", login.profile.id, exc.reason)
            raise
        log.info("Revalidation of user %s failed (%s); let in (grace period)", login.profile.id, exc.reason)
        scope[PROFILE] = login.profile
        return login.profile
    claims = {"exp": login.exp, "uniqueSessionId": login.profile.unique_session_id}
    profile = Profile.from_upstream(answer.user, claims)
    seen = int(now) if login.handle is not None else login.seen
    sess[SESSION_KEY] = login.replace(
        profile=profile, validated_at=max(login.validated_at, answer.at), seen=seen
    ).dump()
    signals.revalidated.send(app, profile=profile, cached=answer.cached)
    scope[PROFILE] = profile
    return profile


def end_login(sess: SessionMixin | None = None, reason: str | None = "logout") -> Login | None:
    """End the request's login, whatever ends it: its parsed copy (and token) leaves
    this process's memory, the session is cleared (its stored entry is deleted when the
    response is saved), it leaves its user's index, ``session_ended`` is sent with
    ``reason`` (``None``: the caller ended it in the index and said so already), and
    ``current_profile`` and ``current_user`` are nobody's for the rest of the request.
    Returns the login that was stored, if any."""
    if sess is None:
        sess = session._get_current_object()  # type: ignore[attr-defined]
    login = stored_login(sess)
    forget_parsed(sess)
    sess.clear()
    scope = request_scope()
    if scope is not None:
        scope[PROFILE] = None
        scope[USER] = None
    if login is not None and reason is not None:
        _unindex(current_app._get_current_object(), login, reason)  # type: ignore[attr-defined]
    return login


def _unindex(app: Any, login: Login, reason: str) -> None:
    """``login`` ended by itself: out of its user's index, and ``session_ended``. An index
    the store cannot update now keeps a stale entry, which the next listing drops (its
    session is gone): the logout itself must not fail for it."""
    if login.handle is not None:
        try:
            unregister(app, get_store(app), login.profile.id, login.handle)
        except SessionStoreUnavailable:
            log.warning(
                "The session index of user %s could not be updated; the entry goes at its next listing",
                login.profile.id,
            )
    signals.session_ended.send(app, user_id=login.profile.id, handle=login.handle, reason=reason)


def current_handle() -> str | None:
    """The handle of the current request's session, if someone is logged in through it."""
    if request_profile() is None:
        return None
    sess = session._get_current_object()  # type: ignore[attr-defined]
    login = stored_login(sess) if not getattr(sess, "detached", False) else None
    return login.handle if login is not None else None


def login_refusal(extension: Plurality, profile: Profile) -> BaseResponse | None:
    """What ``before_login`` says of ``profile``: ``None`` to let the login happen, else
    the answer to send (``False`` or a string: 403 ``login_refused``; a response as it
    is; an answer of any other kind: 500 ``callback_error``, see :mod:`.callbacks`)."""
    gate = extension.before_login_callback
    if gate is None:
        return None
    verdict = current_app.ensure_sync(gate)(profile)
    if verdict is None or verdict is True:
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if verdict is False or isinstance(verdict, str) or is_response(verdict):
        signals.login_failed.send(app, profile=None, reason="refused")
        return login_refused(None if verdict is False else verdict)
    signals.login_failed.send(app, profile=None, reason="callback_error")
    return wrong_answer("before_login callback", gate, verdict, BEFORE_LOGIN_ANSWERS)


# -- who is this? ------------------------------------------------------------------------------


def _look_up(scope: dict[str, Any]) -> Profile | None:
    """The session's profile for ``current_profile`` (never asks Plurality); a store
    failure means "nobody". Kept in ``scope``, so a request looks once."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    extension = app.extensions.get(EXTENSION_KEY)
    profile: Profile | None = None
    if extension is not None:
        with contextlib.suppress(SessionStoreUnavailable):
            profile = check_login(extension, app, session._get_current_object(), scope)  # type: ignore[attr-defined]
    scope[PROFILE] = profile
    return profile


def request_profile() -> Profile | None:
    """This request's profile, found once: what ``@plurality_required`` or a bearer token
    found, else the session's login; ``None`` for nobody, and outside a request."""
    scope = request_scope()
    if scope is None:
        return None
    profile = scope.get(PROFILE, _UNKNOWN)
    return _look_up(scope) if profile is _UNKNOWN else cast(Profile | None, profile)


def _load_profile() -> Profile | AnonymousProfile:
    scope = request_scope()
    if scope is None:
        return ANONYMOUS
    profile = scope.get(PROFILE, _UNKNOWN)
    if profile is _UNKNOWN:
        profile = _look_up(scope)
    return ANONYMOUS if profile is None else cast(Profile, profile)


def load_user() -> Any:
    """The current login's user, from the app's ``user_loader`` (run at most once per
    request); ``None`` if nobody is logged in, and outside a request."""
    scope = request_scope()
    if scope is None:
        return None
    try:
        return scope[USER]
    except KeyError:
        pass
    extension = current_app.extensions.get(EXTENSION_KEY)
    loader = extension.user_callback if extension is not None else None
    if loader is None:
        raise ConfigurationError(
            "flask_plurality.current_user needs a user loader: register one with @plurality.user_loader."
        )
    profile = request_profile()
    user = current_app.ensure_sync(loader)(profile) if profile else None
    scope[USER] = user
    return user


class _ProfileProxy(LocalProxy):  # type: ignore[type-arg]
    """werkzeug's ``LocalProxy`` (``bool()``, ``==``, ``isinstance``, ``_get_current_object``
    all as usual), with the profile's attributes read directly: ``current_profile.id``
    costs a third of the generic proxy's read, which views and templates pay on every use."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        # Not __getattr__: that runs only after the normal lookup has raised (and
        # built) an AttributeError, which costs more than the rest of the read.
        if not name or name[0] == "_":  # the proxy's own (_get_current_object, __class__...)
            return object.__getattribute__(self, name)
        return getattr(_load_profile(), name)

    def __bool__(self) -> bool:  # "is someone logged in?", as often asked as .id
        return _load_profile() is not ANONYMOUS


#: The logged-in user's :class:`Profile`; falsy (an :class:`AnonymousProfile`) otherwise.
current_profile: Profile = cast(Profile, _ProfileProxy(_load_profile))

#: The app's own user for the current login (what ``@plurality.user_loader`` returned),
#: or ``None`` when nobody is logged in. A ``LocalProxy``: test it with ``if current_user:``.
current_user: Any = cast(Any, LocalProxy(load_user))
