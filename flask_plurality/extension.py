"""The :class:`Plurality` extension object: wiring, logins, and the authorisation check."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast
from urllib.parse import quote

from cachelib.file import FileSystemCache
from flask import Flask, current_app, g, redirect, request, session
from flask.sessions import SessionMixin
from flask.typing import ResponseReturnValue
from flask_session import Session
from flask_session.base import ServerSideSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .client import PluralityClient, Upstream
from .config import DEFAULTS, _Config, check_values, config, fake_mode
from .exceptions import ConfigurationError, InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .profile import Profile
from .responses import CHALLENGE, DEFAULT_RETRY_AFTER, json_error, store_unavailable
from .security import warn_insecure_transport
from .sessiondata import SESSION_KEY, _Login
from .singleflight import SingleFlight
from .store import REVOCATION_EPOCH, GuardedSessionInterface, Store, store_errors_as_unavailable, store_for
from .tokens import read_claims, token_hash

if TYPE_CHECKING:
    from .fake import FakePlurality

log = logging.getLogger("flask_plurality")

#: A revocation outlives every session it can concern (tokens live one day).
REVOCATION_TTL: Final = 2 * 86400
_UNSET: Final = object()
#: Seconds between two looks at the answer cache while another process asks (jittered).
_POLL: Final = (0.02, 0.05)
#: Below this much time left, asking upstream is not worth starting: it is an outage.
_MIN_ASK_BUDGET: Final = 0.1

UnauthorizedHandler = Callable[[], ResponseReturnValue]


class _AppState:
    """Per-app state, kept in ``app.extensions`` (never on the extension object)."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.fake: FakePlurality | None = None


class Plurality:
    """Trust Plurality logins in one or more Flask apps.

    ``Plurality(app)`` or ``plurality = Plurality()`` then ``plurality.init_app(app)``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.client = PluralityClient()
        self._unauthorized_callback: UnauthorizedHandler | None = None
        self._flight: SingleFlight[_Answer] = SingleFlight()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return "<Plurality>"

    # -- wiring -------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: config defaults, server-side sessions, the blueprint."""
        if "plurality" in app.extensions:
            raise ConfigurationError("flask-plurality is already set up on this app (init_app was called twice).")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(value))
        check_values(app.config)
        state = _AppState()
        if fake_mode(app.config["PLURALITY_FAKE"]):
            state.fake = _start_fake(app)
        for key in ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET"):
            if not app.config.get(key):
                raise ConfigurationError(
                    f"{key} is not set. Copy it from Plurality's developer dashboard, "
                    "or set PLURALITY_FAKE = True to develop against the built-in stand-in."
                )
        warn_insecure_transport(app.config)
        _setup_sessions(app)
        app.extensions["plurality"] = self
        app.extensions["plurality.state"] = state

        from .views import blueprint

        app.register_blueprint(blueprint, url_prefix=app.config["PLURALITY_URL_PREFIX"])
        try:
            from .cli import plurality_cli
        except ImportError:  # pragma: no cover - the CLI module is optional during development
            pass
        else:
            app.cli.add_command(plurality_cli)

    def unauthorized_handler(self, callback: UnauthorizedHandler) -> UnauthorizedHandler:
        """Replace the answer to a request that is not logged in; return what it returns."""
        self._unauthorized_callback = callback
        return callback

    # -- public API ---------------------------------------------------------------

    def validate(self, token: str) -> Profile:
        """Ask Plurality about ``token`` (in an app context); raise rather than return junk.

        Raises :class:`InvalidToken`, :class:`UpstreamUnavailable` or
        :class:`CredentialsRejected`.
        """
        if not isinstance(token, str):
            raise InvalidToken("The token must be a string.", reason="malformed")
        claims = read_claims(token, max_length=config.max_token_length)
        user = self._ask(token, claims["exp"])
        return Profile.from_upstream(user, claims)

    def logout(self) -> None:
        """End the current request's login and delete its server-side session."""
        login = self._load()
        session.clear()
        g.pop("_plurality_profile", None)
        signals.logged_out.send(current_app._get_current_object(), profile=login.profile if login else None)  # type: ignore[attr-defined]

    def revoke_user(self, user_id: str) -> None:
        """Make every existing session of ``user_id`` fail on its next request, in every
        worker and machine sharing the session store. Logins after this call work.

        Plurality cannot do this itself: its logout revokes nothing. Needs an app context.
        """
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("revoke_user() needs a Plurality user id (a non-empty string).")
        # A fresh marker, not a time: sessions remember the marker they began under, so
        # machines whose clocks disagree still agree on "revoked after this login".
        marker = f"{int(time.time())}-{secrets.token_hex(8)}"
        store = self._store()
        store.set(self._key("revoked", user_id), marker, REVOCATION_TTL)
        # Then, never before, the epoch every session compares with (see _revoked).
        store.set(config.key_prefix + REVOCATION_EPOCH, marker, REVOCATION_TTL)
        log.info("Revoked every session of Plurality user %s", user_id)

    # -- internals used by the views and the decorator ---------------------------

    def _store(self, app: Flask | None = None) -> Store:
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        state = cast(_AppState, app.extensions["plurality.state"])
        if state.store is None:
            state.store = store_for(app.session_interface)
        return state.store

    @staticmethod
    def _key(kind: str, name: str) -> str:
        return f"{config.key_prefix}{kind}:{name}"

    def _upstream(self) -> Upstream:
        return Upstream(
            api_url=config.api_url,
            client_id=config.client_id,
            client_secret=config.client_secret,
            method=config.validate_method,
            timeout=config.timeout,
            verify_tls=config.verify_tls,
            breaker_threshold=config.breaker_threshold,
            breaker_cooldown=config.breaker_cooldown,
        )

    def _ask(self, token: str, exp: int, interval: int = 0) -> dict[str, Any]:
        """Plurality's ``user`` for ``token`` (see :meth:`_answer`)."""
        return self._answer(token, exp, interval).user

    def _answer(self, token: str, exp: int, interval: int = 0) -> _Answer:
        """Plurality's answer for ``token``, asking upstream as rarely as possible.

        Shared answer cache, in the session store so every worker and machine sees it:
        a "no" is reused until the token's ``exp`` (a revoked token is not asked about
        again and again); a "yes" is written only when ``interval`` > 0, lives
        min(interval, exp), and is reused while younger than ``interval``. Keyed by the
        client id and a hash of the token, never the token. Concurrent askers in this
        process share one upstream call (single flight); across processes, an interval
        revalidation first takes an ``asking:`` marker in the store, and a process that
        finds it taken waits for the holder's answer instead of asking too.
        """
        name = f"{config.client_id}:{token_hash(token)}"
        key = self._key("answer", name)
        store = self._store()
        hit = _cached_answer(store.get(key), interval)
        if hit is not None:
            return hit
        upstream = self._upstream()  # only now: a cache hit need not build it

        def ask(budget: Upstream) -> _Answer:
            at = time.time()  # when we asked: the answer is no fresher than that
            try:
                user = self.client.validate(token, budget)
            except InvalidToken as exc:
                store.set(key, {"ok": False, "reason": exc.reason}, math.ceil(exp - time.time()))
                raise
            if interval:
                store.set(key, {"ok": True, "at": at, "user": user}, min(interval, math.ceil(exp - at)))
            return _Answer(user, at, cached=False)

        def call() -> _Answer:
            # Checked again inside the flight: a caller that missed the cache just before
            # the previous flight landed must not start a second upstream call.
            hit = _cached_answer(store.get(key), interval)
            if hit is not None:
                return hit
            if not interval or not store.shared:
                # interval 0 ("always") wants an answer asked for after this request
                # arrived, and writes no "yes" for others to wait on.
                return ask(upstream)
            return self._ask_once(store, key, self._key("asking", name), interval, upstream, ask)

        # "always" callers share only flights that asked upstream fresh, never one that may
        # return an interval caller's cached answer.
        flight = f"{upstream.api_url} {key} {'fresh' if not interval else 'cached'}"
        return self._flight.do(flight, call, wait=upstream.timeout + 1)

    @staticmethod
    def _ask_once(
        store: Store, key: str, marker: str, interval: int, upstream: Upstream, ask: Callable[[Upstream], _Answer]
    ) -> _Answer:
        """Ask upstream only if no other process is asking about this token right now.

        The holder of ``marker`` asks and stores the answer; the others poll the answer
        cache. If the holder gives up without an answer (an outage), one waiter takes the
        marker and asks with what is left of its own budget: a request never spends more
        than ``PLURALITY_TIMEOUT`` here in all, and when that is spent it is an outage
        (the outage policy decides), as for a waiter of the in-process single flight.
        """
        deadline = time.monotonic() + upstream.timeout
        ttl = math.ceil(upstream.timeout) + 1  # outlives the holder's call; a crashed holder's expires
        floor = min(_MIN_ASK_BUDGET, upstream.timeout / 2)
        budget = upstream
        while True:
            if store.add(marker, 1, ttl):
                try:
                    # The previous holder may have stored its answer and let go just now.
                    hit = _cached_answer(store.get(key), interval)
                    if hit is not None:
                        return hit
                    return ask(budget)
                finally:
                    with contextlib.suppress(SessionStoreUnavailable):  # logged; the marker expires anyway
                        store.delete(marker)
            hit = _wait_for_answer(store, key, marker, interval, deadline)
            if hit is not None:
                return hit
            left = deadline - time.monotonic()
            budget = dataclasses.replace(upstream, timeout=left)
            if left < floor:
                raise UpstreamUnavailable("Another worker's call to Plurality ran out of time.", reason="timeout")

    def _load(self) -> _Login | None:
        return _Login.load(session.get(SESSION_KEY))

    def _current(self, *, strict: bool = False) -> Profile | None:
        """The logged-in profile without asking upstream: ``current_profile``'s and
        ``/session``'s source. A revoked session is cleared (one store read). A store
        failure means "not logged in", or raises :class:`SessionStoreUnavailable` if
        ``strict``."""
        if getattr(session, "store_error", False):
            return None
        login = self._load()
        if login is None or login.exp <= time.time():
            return None
        try:
            if self._revoked(login):
                session.clear()
                return None
        except SessionStoreUnavailable:
            if strict:
                raise
            return None
        return login.profile

    def _revocation_marker(self, user_id: str) -> str | None:
        marker = self._store().get(self._key("revoked", user_id))
        return marker if isinstance(marker, str) else None

    def _revoked(
        self, login: _Login, cfg: _Config = config, sess: SessionMixin = session, app: Flask | None = None
    ) -> bool:
        """Was ``revoke_user`` called for this user after this login began?

        While the store-wide revocation epoch is the one this login was last checked
        under (no ``revoke_user`` anywhere since), no per-user read is needed: on Redis the
        epoch comes in the same MGET as the session, on FileSystemCache from a ``stat``.
        """
        if not cfg.revocation_check:
            return False
        epoch = getattr(sess, "revocation_epoch", _UNSET)  # read with the session (Redis)
        if epoch is _UNSET:
            raw = self._store(app).read_epoch(cfg.key_prefix + REVOCATION_EPOCH)
            epoch = raw if isinstance(raw, str) else None
        if epoch == login.epoch:
            return False
        marker = self._revocation_marker(login.profile.id)
        if marker is not None and marker != login.revocation:
            log.info("Refused a revoked session of user %s", login.profile.id)
            return True
        # revoke_user writes the marker before the epoch, and the epoch was read first:
        # every revocation up to this epoch is seen, so later requests may skip the read.
        login.epoch = cast(str | None, epoch)
        sess[SESSION_KEY] = login.dump()
        return False

    def _start_session(self, profile: Profile, token: str, exp: int) -> None:
        """Store a fresh login under a new session id (no fixation)."""
        if not isinstance(current_app.session_interface, GuardedSessionInterface):
            # Something replaced Flask-Session after init_app: a cookie session would hand
            # the token to the browser. Refuse rather than store the login there.
            log.error("app.session_interface was replaced after Plurality.init_app; logins are refused")
            raise SessionStoreUnavailable("The server-side session store is not in place.")
        previous = self._load()
        if previous is not None and previous.profile.id != profile.id:
            session.clear()  # another user's data must not carry over
        now = time.time()
        epoch = self._store().get(config.key_prefix + REVOCATION_EPOCH)  # before the marker: see _revoked
        revocation = self._revocation_marker(profile.id)
        login = _Login(profile, token, exp, now, now, revocation, epoch if isinstance(epoch, str) else None)
        session[SESSION_KEY] = login.dump()
        session.permanent = True
        with store_errors_as_unavailable():
            current_app.session_interface.regenerate(session)  # deletes the old id's entry
        g._plurality_profile = profile

    def _authorize(self, revalidate: Any = _UNSET, app: Flask | None = None) -> Profile | BaseResponse:
        """The check behind ``@plurality_required``: a profile, or the answer to send.

        On the hot path (no revalidation due) this costs a few dictionary reads and, when
        someone was revoked since this session was last checked, one store read.
        """
        sess = session._get_current_object()  # type: ignore[attr-defined]
        if getattr(sess, "store_error", False):
            return store_unavailable()
        now = time.time()
        login = _Login.load(sess.get(SESSION_KEY))
        if login is None:
            return self._unauthorized()
        if login.exp <= now:
            return self._unauthorized(clear=True)
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        cfg = _Config(app.config)
        try:
            if self._revoked(login, cfg, sess, app):
                return self._unauthorized(clear=True)
            interval = cfg.revalidate if revalidate is _UNSET else revalidate
            if interval is None or now - login.validated_at < interval:
                g._plurality_profile = login.profile
                return login.profile
            try:
                answer = self._answer(login.token, login.exp, interval)
            except InvalidToken as exc:
                log.info("Revalidation refused user %s (%s); session cleared", login.profile.id, exc.reason)
                signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=False)
                return self._unauthorized(clear=True)
            except UpstreamUnavailable as exc:
                # Grace counts from the last *good* answer, which a failure never moves.
                allowed = cfg.on_upstream_error == "allow" and now - login.validated_at < cfg.grace_period
                signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=allowed)
                if allowed:
                    log.info("Revalidation of user %s failed (%s); let in (grace period)", login.profile.id, exc.reason)
                    g._plurality_profile = login.profile
                    return login.profile
                log.info("Revalidation of user %s failed (%s); answered 503", login.profile.id, exc.reason)
                return json_error(503, "upstream_unavailable", retry_after=exc.retry_after or DEFAULT_RETRY_AFTER)
        except SessionStoreUnavailable:
            return store_unavailable()
        claims = {"exp": login.exp, "uniqueSessionId": login.profile.unique_session_id}
        profile = Profile.from_upstream(answer.user, claims)
        login.profile, login.validated_at = profile, max(login.validated_at, answer.at)
        session[SESSION_KEY] = login.dump()
        signals.revalidated.send(app, profile=profile, cached=answer.cached)
        g._plurality_profile = profile
        return profile

    def _unauthorized(self, *, clear: bool = False) -> BaseResponse:
        if clear:
            session.clear()
        g.pop("_plurality_profile", None)
        if self._unauthorized_callback is not None:
            return current_app.make_response(current_app.ensure_sync(self._unauthorized_callback)())
        login_url = config.login_url
        if login_url and _prefers_html():
            target = request.full_path.rstrip("?") if request.query_string else request.path
            joiner = "&" if "?" in login_url else "?"
            return redirect(f"{login_url}{joiner}next={quote(target, safe='/')}", 302)
        return json_error(401, "login_required", headers=CHALLENGE)


class _Answer(NamedTuple):
    """Plurality's ``user`` for a token, when Plurality gave it, and whether it came from the cache."""

    user: dict[str, Any]
    at: float
    cached: bool


def _cached_answer(entry: Any, interval: int) -> _Answer | None:
    """A usable answer-cache entry: raise for a remembered "no"; a "yes" younger than ``interval``."""
    if not isinstance(entry, dict):
        return None
    if entry.get("ok") is False:
        raise InvalidToken("Plurality refused the token.", reason=str(entry.get("reason") or "rejected"))
    at, user = entry.get("at"), entry.get("user")
    if (
        interval
        and isinstance(at, int | float)
        and isinstance(user, dict)
        and isinstance(user.get("id"), str)
        and 0 <= time.time() - at < interval
    ):
        return _Answer(user, float(at), cached=True)
    return None


def _wait_for_answer(store: Store, key: str, marker: str, interval: int, deadline: float) -> _Answer | None:
    """Poll the answer cache while another process holds ``marker``: its answer (a "no"
    raises), or ``None`` once the marker is gone without one or ``deadline`` passes."""
    while True:
        hit = _cached_answer(store.get(key), interval)
        if hit is not None:
            return hit
        left = deadline - time.monotonic()
        if left <= 0 or store.get(marker) is None:
            # Gone: the answer may have landed between the two reads.
            return _cached_answer(store.get(key), interval) if left > 0 else None
        time.sleep(min(left, random.uniform(*_POLL)))


def _prefers_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def get_extension() -> Plurality:
    """The extension registered on the current app; a clear error if ``init_app`` was not called."""
    try:
        return cast(Plurality, current_app.extensions["plurality"])
    except KeyError:
        raise ConfigurationError("flask-plurality is not set up on this app: call Plurality.init_app(app).") from None


def _state() -> _AppState:
    return cast(_AppState, current_app.extensions["plurality.state"])


def _start_fake(app: Flask) -> FakePlurality:
    """PLURALITY_FAKE: point the app at the built-in stand-in, never silently in production."""
    if fake_mode(app.config["PLURALITY_FAKE"]) != "force" and not (app.debug or app.testing):
        raise ConfigurationError(
            "PLURALITY_FAKE is on but the app is neither in debug nor in testing mode: a "
            "production app must not accept fake logins. Set PLURALITY_FAKE = 'force' to insist."
        )
    from .fake import shared_fake

    fake = shared_fake()
    app.config["PLURALITY_API_URL"] = fake.url
    app.config["PLURALITY_CLIENT_ID"] = fake.client_id
    app.config["PLURALITY_CLIENT_SECRET"] = fake.client_secret
    log.warning("PLURALITY_FAKE is on: logins are checked by a local stand-in at %s, not by Plurality.", fake.url)
    return fake


def _setup_sessions(app: Flask) -> None:
    """Use the app's Flask-Session, or set up cachelib on disk; guard it either way."""
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    interface = app.session_interface
    if isinstance(interface, GuardedSessionInterface):
        return
    if not isinstance(interface, ServerSideSessionInterface):
        if app.config.get("SESSION_TYPE", "null") in (None, "null"):
            app.config["SESSION_TYPE"] = "cachelib"
            app.config["SESSION_CACHELIB"] = FileSystemCache(
                os.path.join(app.instance_path, "plurality_sessions"), threshold=0, mode=0o600
            )
        Session(app)
        interface = app.session_interface
    app.session_interface = GuardedSessionInterface(cast(ServerSideSessionInterface, interface))
