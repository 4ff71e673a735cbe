"""Blinker signals; the sender is the app, keyword args include ``profile``.

Failures also carry ``reason``, a short code such as ``"expired"``, ``"rejected"``,
``"wrong_client"``, ``"timeout"``, ``"credentials_rejected"``.
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

__all__ = ["logged_in", "logged_out", "login_failed", "revalidated", "revalidation_failed"]
