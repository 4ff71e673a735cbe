"""Blinker signals; the sender is the app (``None`` for a client used outside an app
context). The login signals carry ``profile``, and their failures also ``reason``, a
short code such as ``"expired"``, ``"rejected"``, ``"wrong_client"``, ``"timeout"``,
``"credentials_rejected"``.
"""

from blinker import Namespace

_signals = Namespace()

#: A login succeeded: ``profile``.
logged_in = _signals.signal("plurality.logged-in")
#: A session was logged out: ``profile`` (``None`` if nobody was logged in).
logged_out = _signals.signal("plurality.logged-out")
#: A login was refused: ``profile`` (``None``), ``reason``.
login_failed = _signals.signal("plurality.login-failed")
#: Plurality confirmed a session again: ``profile``; ``cached`` is ``True`` when the
#: answer came from the shared answer cache (another worker had just asked).
revalidated = _signals.signal("plurality.revalidated")
#: A revalidation did not confirm the session: ``profile``, ``reason``; ``allowed`` is
#: ``True`` when the outage policy let the request through anyway.
revalidation_failed = _signals.signal("plurality.revalidation-failed")


# What an operator counts (flask_plurality.metrics connects to these; see docs/metrics.rst).
# Each is sent where it happens: the answer cache, the client, the breaker. None is sent
# on the hot path (a protected request that does not ask Plurality).

#: A login or revalidation needed Plurality's answer about a token (sent by the answer
#: cache): ``cached`` is ``True`` when the shared answer cache had it (no call),
#: ``outcome`` one of ``"valid"``, ``"invalid"``, ``"unavailable"``, ``"credentials_rejected"``.
answer_served = _signals.signal("plurality.answer-served")
#: A call to Plurality's validate API finished (sent by the client; a breaker fail-fast,
#: or a call refused for want of credentials, is no call): ``outcome`` as for
#: ``answer_served`` (or ``"error"``), ``reason`` (``None`` when valid), ``duration``
#: in seconds, ``upstream`` (the API URL).
upstream_called = _signals.signal("plurality.upstream-called")
#: This process's circuit breaker to ``upstream`` (the API URL) opened: calls fail fast
#: (sent by the breaker). ``retry_after``: seconds they will; ``reopened``: ``True``
#: when the probe of a half-open breaker failed (not a new opening).
breaker_opened = _signals.signal("plurality.breaker-opened")
#: ... its hold passed: the next call goes through as a probe, the others still fail
#: fast until it reports. ``upstream``.
breaker_half_opened = _signals.signal("plurality.breaker-half-opened")
#: ... and closed again: a call after the hold succeeded. ``upstream``.
breaker_closed = _signals.signal("plurality.breaker-closed")
#: The failed-login throttle refused a request (429): ``scope`` is ``"client"`` or ``"token"``.
throttled = _signals.signal("plurality.throttled")
#: A read or write of the session store failed (answered 503): ``where`` is
#: ``"session_load"``, ``"session_save"`` or ``"extension"`` (answer cache, throttle, revocation).
store_failed = _signals.signal("plurality.store-failed")
#: ``revoke_user`` took effect: ``user_id``.
user_revoked = _signals.signal("plurality.user-revoked")
#: A session of a user ended: ``user_id``, ``handle`` (its name in the user's index,
#: ``None`` for a login from before there was one) and ``reason``: ``"logout"``,
#: ``"ended"`` (``end_session``, the sessions endpoints, the user loader's ``None``),
#: ``"limit"`` (``PLURALITY_MAX_SESSIONS_PER_USER``), ``"revoked"`` (``revoke_user``,
#: Plurality's "no" at a revalidation) or ``"expired"``.
session_ended = _signals.signal("plurality.session-ended")

__all__ = [
    "answer_served",
    "breaker_closed",
    "breaker_half_opened",
    "breaker_opened",
    "logged_in",
    "logged_out",
    "login_failed",
    "revalidated",
    "revalidation_failed",
    "session_ended",
    "store_failed",
    "throttled",
    "upstream_called",
    "user_revoked",
]
