"""The :class:`Plurality` extension object: wiring, logins, and the authorisation check."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import quote

from cachelib.file import FileSystemCache
from flask import Flask, current_app, g, redirect, request, session
from flask.typing import ResponseReturnValue
from flask_session import Session
from flask_session.base import ServerSideSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from .client import PluralityClient, Upstream
from .config import DEFAULTS, _interval, check_values, config
from .exceptions import ConfigurationError, InvalidToken, SessionStoreUnavailable, UpstreamUnavailable
from .profile import Profile
from .responses import CHALLENGE, DEFAULT_RETRY_AFTER, json_error
from .sessiondata import SESSION_KEY, _Login
from .singleflight import SingleFlight
from .store import GuardedSessionInterface, Store, store_for
from .tokens import read_claims, token_hash

if TYPE_CHECKING:
    from .testing import FakePlurality

log = logging.getLogger("flask_plurality")

#: A revocation outlives every session it can concern (tokens live one day).
REVOCATION_TTL: Final = 2 * 86400
_UNSET: Final = object()

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
        self._flight: SingleFlight[dict[str, Any]] = SingleFlight()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return "<Plurality>"

    # -- wiring -------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: config defaults, server-side sessions, the blueprint."""
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(value))
        check_values(app.config)
        state = _AppState()
        if app.config["PLURALITY_FAKE"]:
            state.fake = _start_fake(app)
        for key in ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET"):
            if not app.config.get(key):
                raise ConfigurationError(
                    f"{key} is not set. Copy it from Plurality's developer dashboard, "
                    "or set PLURALITY_FAKE = True to develop against the built-in stand-in."
                )
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
        worker and machine sharing the session store. Logins after this call work."""
        self._store().set(self._key("revoked", user_id), time.time(), REVOCATION_TTL)
        log.info("Revoked every session of Plurality user %s", user_id)

    # -- internals used by the views and the decorator ---------------------------

    def _store(self) -> Store:
        state = _state()
        if state.store is None:
            state.store = store_for(current_app.session_interface)
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
        """Plurality's ``user`` for ``token``, through the shared answer cache (a "no" is
        always reused; a "yes" younger than ``interval`` too) and single flight."""
        digest = token_hash(token)
        key = self._key("answer", digest)
        store = self._store()
        cached = store.get(key)
        if isinstance(cached, dict):
            if cached.get("ok") is False:
                raise InvalidToken("Plurality refused the token.", reason=str(cached.get("reason", "rejected")))
            fresh = time.time() - float(cached.get("at", 0)) < interval
            if interval and fresh and isinstance(cached.get("user"), dict):
                g._plurality_answer_at = float(cached["at"])
                return cast(dict[str, Any], cached["user"])
        upstream = self._upstream()

        def call() -> dict[str, Any]:
            try:
                user = self.client.validate(token, upstream)
            except InvalidToken as exc:
                store.set(key, {"ok": False, "reason": exc.reason}, math.ceil(exp - time.time()))
                raise
            if interval:
                ttl = min(interval, math.ceil(exp - time.time()))
                store.set(key, {"ok": True, "at": time.time(), "user": user}, ttl)
            return user

        user, _ = self._flight.do(f"{upstream.api_url} {digest}", call, wait=upstream.timeout + 1)
        g._plurality_answer_at = time.time()
        return user

    def _load(self) -> _Login | None:
        return _Login.load(session.get(SESSION_KEY))

    def _current(self) -> Profile | None:
        """The logged-in profile without asking upstream: ``current_profile``'s source."""
        if getattr(session, "store_error", False):
            return None
        login = self._load()
        if login is None or login.exp <= time.time():
            return None
        return login.profile

    def _start_session(self, profile: Profile, token: str, exp: int) -> None:
        """Store a fresh login under a new session id (no fixation)."""
        previous = self._load()
        if previous is not None and previous.profile.id != profile.id:
            session.clear()  # another user's data must not carry over
        now = time.time()
        session[SESSION_KEY] = _Login(profile, token, exp, now, now).dump()
        session.permanent = True
        current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
        g._plurality_profile = profile

    def _authorize(self, revalidate: Any = _UNSET) -> Profile | BaseResponse:
        """The check behind ``@plurality_required``: a profile, or the answer to send."""
        if getattr(session, "store_error", False):
            return json_error(503, "session_store_unavailable", retry_after=DEFAULT_RETRY_AFTER)
        now = time.time()
        login = self._load()
        if login is None:
            return self._unauthorized()
        if login.exp <= now:
            return self._unauthorized(clear=True)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            if config.revocation_check:
                revoked_at = self._store().get(self._key("revoked", login.profile.id))
                if isinstance(revoked_at, int | float) and login.login_at <= revoked_at:
                    log.info("Refused a revoked session of user %s", login.profile.id)
                    return self._unauthorized(clear=True)
            interval = config.revalidate if revalidate is _UNSET else _interval(revalidate, "revalidate")
            if interval is None or now - login.validated_at < interval:
                g._plurality_profile = login.profile
                return login.profile
            try:
                user = self._ask(login.token, login.exp, interval)
            except InvalidToken as exc:
                log.info("Revalidation refused the session of user %s: %s", login.profile.id, exc.reason)
                signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=False)
                return self._unauthorized(clear=True)
            except UpstreamUnavailable as exc:
                allowed = config.on_upstream_error == "allow" and now - login.validated_at < config.grace_period
                signals.revalidation_failed.send(app, profile=login.profile, reason=exc.reason, allowed=allowed)
                if allowed:
                    log.warning("Plurality unavailable (%s); user %s let in (grace)", exc.reason, login.profile.id)
                    g._plurality_profile = login.profile
                    return login.profile
                return json_error(503, "upstream_unavailable", retry_after=exc.retry_after or DEFAULT_RETRY_AFTER)
        except SessionStoreUnavailable:
            return json_error(503, "session_store_unavailable", retry_after=DEFAULT_RETRY_AFTER)
        claims = {"exp": login.exp, "uniqueSessionId": login.profile.unique_session_id}
        profile = Profile.from_upstream(user, claims)
        login.profile, login.validated_at = profile, float(g.pop("_plurality_answer_at", now))
        session[SESSION_KEY] = login.dump()
        signals.revalidated.send(app, profile=profile)
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
    mode = app.config["PLURALITY_FAKE"]
    if mode != "force" and not (app.debug or app.testing):
        raise ConfigurationError(
            "PLURALITY_FAKE is on but the app is neither in debug nor in testing mode: a "
            "production app must not accept fake logins. Set PLURALITY_FAKE = 'force' to insist."
        )
    from .testing import shared_fake

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
