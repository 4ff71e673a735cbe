"""The :class:`Plurality` extension object: wiring, callbacks, and the Python API.

The logic behind it has modules of its own: :mod:`.answers` (asking Plurality, the
shared answer cache), :mod:`.logins` (the login in the session), :mod:`.revocation`,
:mod:`.throttle`, :mod:`.sessions` (Flask-Session, guarded), :mod:`.decorators`
(``@plurality_required``) and :mod:`.responses` (every refusal). They reach this object through
:func:`.state.get_extension`, never by importing this module.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, Response, current_app, has_request_context, request, session
from flask.cli import FlaskGroup
from flask.typing import ResponseReturnValue

from . import other_logins, signals
from .answers import AnswerCache
from .cli import plurality_cli
from .client import PluralityClient
from .config import DEFAULTS, check_values, config, fake_mode, flag, missing_credentials, not_configured, unknown_keys
from .exceptions import ConfigurationError, InvalidToken, NotConfigured, SessionStoreUnavailable
from .logins import current_handle, end_login, request_profile
from .metrics import PluralityMetrics, init_metrics
from .profile import Profile
from .responses import json_error
from .revocation import revoke
from .security import warn_insecure_transport
from .sessions import setup_sessions
from .state import EXTENSION_KEY, STATE_KEY, AppState, get_state
from .stores import check_session_client, get_store
from .tokens import read_claims
from .user_sessions import SessionInfo, end, end_all, list_sessions
from .views import blueprint

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .fake import FakePlurality

log = logging.getLogger("flask_plurality")

UnauthorizedHandler = Callable[[], ResponseReturnValue]
ForbiddenHandler = Callable[[], ResponseReturnValue]
#: ``user_loader``'s callback: the app's own user for a profile, or ``None``.
UserLoader = Callable[[Profile], Any]
#: ``before_login``'s callback: ``None`` or ``True`` lets the login happen; ``False``, a
#: string or a response refuses it.
LoginGate = Callable[[Profile], "ResponseReturnValue | str | bool | None"]


class Plurality:
    """Trust Plurality logins in one or more Flask apps.

    ``Plurality(app)`` or ``plurality = Plurality()`` then ``plurality.init_app(app)``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.client = PluralityClient()
        #: The shared answer cache (and single flight) every app of this object uses.
        self.answers = AnswerCache(self.client)
        #: Set by :meth:`unauthorized_handler`.
        self.unauthorized_callback: UnauthorizedHandler | None = None
        #: Set by :meth:`forbidden_handler`.
        self.forbidden_callback: ForbiddenHandler | None = None
        #: Set by :meth:`user_loader`.
        self.user_callback: UserLoader | None = None
        #: Set by :meth:`before_login`.
        self.before_login_callback: LoginGate | None = None
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return "<Plurality>"

    # -- wiring -------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: config defaults, server-side sessions, the blueprint."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("flask-plurality is already set up on this app (init_app was called twice).")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(value))
        check_values(app.config)
        state = AppState()
        if fake_mode(app.config["PLURALITY_FAKE"]):
            state.fake = _start_fake(app)
        for warning in unknown_keys(app.config):
            log.warning("%s", warning)
        missing = missing_credentials(app.config)
        if missing:
            # Not an error here: `flask db upgrade`, `flask --help`, a build step and tests
            # that never log in need no credentials. Each use that does raises NotConfigured.
            log.warning("%s Until then, logins answer 503 not_configured.", not_configured(missing))
        warn_insecure_transport(app.config)
        check_session_client(app)
        state.store = setup_sessions(app)
        app.extensions[EXTENSION_KEY] = self
        app.extensions[STATE_KEY] = state
        app.register_blueprint(blueprint, url_prefix=app.config["PLURALITY_URL_PREFIX"])
        app.register_error_handler(NotConfigured, _not_configured)
        app.cli.add_command(plurality_cli)
        other_logins.connect(app)  # Flask-Login's logins and logouts, in this app's sessions
        if flag(app.config["PLURALITY_METRICS"], "PLURALITY_METRICS"):
            self.init_metrics(app)

    def init_metrics(self, app: Flask, registry: CollectorRegistry | None = None) -> PluralityMetrics:
        """Count ``app``'s logins, upstream calls, answer cache, breaker, throttle, store
        failures and revocations as Prometheus metrics (``pip install flask-plurality[metrics]``),
        into ``registry`` or prometheus_client's default one. See docs/metrics.rst."""
        return init_metrics(app, registry)

    def unauthorized_handler(self, callback: UnauthorizedHandler) -> UnauthorizedHandler:
        """Replace the answer to a request that is not logged in; return what it returns."""
        self.unauthorized_callback = callback
        return callback

    def forbidden_handler(self, callback: ForbiddenHandler) -> ForbiddenHandler:
        """Replace the 403 ``forbidden`` answer of ``@plurality_required(allow=...)``
        (``current_profile`` is the refused profile); return what it returns."""
        self.forbidden_callback = callback
        return callback

    def user_loader(self, callback: UserLoader) -> UserLoader:
        """Register ``callback(profile) -> user | None``: the app's own user for a login,
        typically its row for ``profile.id``, found or created.

        :data:`flask_plurality.current_user` is what it returns, loaded at most once per
        request. On a ``@plurality_required`` route, ``None`` means the account no longer
        exists: the session is cleared and the route answers 401 ``login_required``.
        """
        self.user_callback = callback
        return callback

    def before_login(self, callback: LoginGate) -> LoginGate:
        """Register ``callback(profile) -> None | bool | str | Response``, run after
        Plurality said yes and before anything is stored (at ``/login``, and for bearer
        requests).

        ``None`` or ``True`` lets the login happen; ``False`` refuses it with 403
        ``login_refused``, a string too, with that message; a response (or a view's
        ``(body, status)`` tuple) is sent as it is. A refused login stores nothing and
        sends ``login_failed`` with ``reason="refused"``. Any other answer is the app's
        bug: a ``TypeError`` naming the callback, logged once per process, and 500
        ``callback_error`` for every login it concerns (docs/users.rst).
        """
        self.before_login_callback = callback
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
        answer = self.answers.lookup(token, claims["exp"])
        return Profile.from_upstream(answer.user, claims)

    def logout(self) -> None:
        """End the current request's login and delete its server-side session; a
        Flask-Login login in it ends too (its remember-me cookie is dropped)."""
        login = end_login()
        other_logins.forget_other_logins()
        signals.logged_out.send(current_app._get_current_object(), profile=login.profile if login else None)  # type: ignore[attr-defined]

    def demo_mode(self, app: Flask | None = None) -> bool:
        """Is ``app`` (default: the current app) running against the built-in stand-in
        (``PLURALITY_FAKE``), so that its logins are minted locally, not by Plurality?"""
        return get_state(app).fake is not None

    def regenerate_session(self) -> None:
        """Give the current request's session a new id, deleting the old id's stored entry.

        Call it when your own login code (not Flask-Login: that is done for you) has
        logged someone in: an id planted in the browser before then must not become
        theirs. An empty session is left alone. Needs a request; raises
        :class:`SessionStoreUnavailable` if the store fails (answer 503).
        """
        if not has_request_context():
            raise RuntimeError("regenerate_session() needs a request (it changes that request's session).")
        if getattr(session, "store_error", False):
            raise SessionStoreUnavailable("The session store is unavailable.")
        other_logins.regenerate(session._get_current_object())  # type: ignore[attr-defined]

    def revoke_user(self, user_id: str) -> int:
        """Make every existing session of ``user_id`` fail on its next request, in every
        worker and machine sharing the session store, and refuse every token of the user
        issued before this call (by its ``iat``), at ``/login`` and as a bearer token,
        with 401 ``token_revoked``. Tokens
        Plurality issues later (the user signs in again) work.

        Plurality cannot do this itself: its logout revokes nothing. Needs an app context.
        Returns how many live sessions of the user it ended (0: the user had none).
        """
        _user_id_argument(user_id, "revoke_user")
        revoke(user_id)
        if not config.revocation_check:  # off: revoke_user has no effect (docs/revalidation.rst)
            return 0
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return end_all(app, get_store(app), user_id, reason="revoked")  # the listed ones end now

    # -- a user's sessions (docs/sessions.rst) -------------------------------------------

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """``user_id``'s live sessions, the most recently seen first; in a request, the
        request's own is marked ``current``. Needs an app context; raises
        :class:`SessionStoreUnavailable` when the store fails."""
        _user_id_argument(user_id, "sessions_of")
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return list_sessions(app, get_store(app), user_id, current_handle() if has_request_context() else None)

    def end_session(self, user_id: str, handle: str) -> bool:
        """End ``user_id``'s session ``handle`` (a :class:`SessionInfo`'s), as final as a
        logout, on every worker sharing the store; ``False`` when ``user_id`` has no such
        session. Needs an app context."""
        _user_id_argument(user_id, "end_session")
        if not isinstance(handle, str) or not handle:
            raise ValueError("end_session() needs a session handle (a non-empty string).")
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        mine = has_request_context() and current_handle() == handle
        if not end(app, get_store(app), user_id, handle):
            return False
        if mine:  # this request's own session: nobody's for the rest of it, and not saved again
            end_login(reason=None)
        return True

    def end_other_sessions(self) -> int:
        """In a request: end every session of the current user but this one; how many
        ended (0 when nobody is logged in)."""
        if not has_request_context():
            raise RuntimeError("end_other_sessions() needs a request (it keeps that request's session).")
        handle = current_handle()
        profile = request_profile()
        if profile is None or handle is None:
            return 0
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return end_all(app, get_store(app), profile.id, keep=handle)


def _user_id_argument(user_id: Any, method: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"{method}() needs a Plurality user id (a non-empty string).")


def _not_configured(exc: NotConfigured) -> Response:
    """A login, revalidation or bearer check that needs the missing credentials: a 503
    that says which, one ERROR line, and never a 500 or a silent 401."""
    log.error("%s %s answered 503 not_configured: %s", request.method, request.path, exc)
    if request.blueprint == blueprint.name and request.endpoint == f"{blueprint.name}.login":
        signals.login_failed.send(current_app._get_current_object(), profile=None, reason=exc.reason)  # type: ignore[attr-defined]
    return json_error(503, "not_configured", message=str(exc))


def _start_fake(app: Flask) -> FakePlurality:
    """PLURALITY_FAKE: point the app at the built-in stand-in, never silently in production."""
    if fake_mode(app.config["PLURALITY_FAKE"]) != "force" and not (app.debug or app.testing):
        raise ConfigurationError(
            "PLURALITY_FAKE is on but the app is neither in debug nor in testing mode: a production "
            "app must not accept fake logins. Run it in debug mode (flask run --debug), or insist "
            "with PLURALITY_FAKE = 'force' (FLASK_PLURALITY_FAKE=force in the environment)."
        )
    from .fake import StandInStateError, shared_fake  # only in demo mode: never on the request path

    # One stand-in per instance folder, its signing key and demo users in a file there:
    # every worker serving the folder accepts the others' tokens, and a process the
    # reloader restarted still accepts the tokens of the one before (no silent logout).
    try:
        fake = shared_fake(app.instance_path)
    except StandInStateError as exc:
        raise ConfigurationError(
            f"PLURALITY_FAKE keeps the stand-in's signing key and demo users in the app's instance "
            f"folder, and {exc}. Give the app a writable instance folder (Flask(instance_path=...))."
        ) from None
    app.config["PLURALITY_API_URL"] = fake.url
    app.config["PLURALITY_CLIENT_ID"] = fake.client_id
    app.config["PLURALITY_CLIENT_SECRET"] = fake.client_secret
    # Said once: under `flask run --debug` the app is loaded by the reloader's watcher too.
    log.log(
        logging.DEBUG if _in_reloader_watcher(app) else logging.WARNING,
        "PLURALITY_FAKE is on: logins are checked by a local stand-in at %s, not by Plurality.",
        fake.url,
    )
    return fake


def _in_reloader_watcher(app: Flask) -> bool:
    """Is this ``flask run``'s reloader process, which loads the app but never serves it
    (it starts the process that does, again on each change)?"""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":  # the serving process the reloader started
        return False
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "run" or not isinstance(ctx.find_root().command, FlaskGroup):
        return False
    reload = ctx.params.get("reload")
    return bool(app.debug if reload is None else reload)
