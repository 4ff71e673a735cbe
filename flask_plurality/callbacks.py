"""What the app's gates may answer: ``before_login`` and ``@plurality_required(allow=...)``.

A gate decides who may enter, so an answer of the wrong kind (``0``, ``1``, a dict, a
predicate's forgotten ``return``) is the app's bug, not a decision: it lets nobody in, it
is not the user's refusal, and it is not an outage. It is a :class:`TypeError` naming the
callback, logged at ERROR with its traceback once per callback and process (not once per
request: a broken gate on a busy route would flood the log), and every request it
concerns is answered 500 ``callback_error``, JSON like every other answer, with no trace.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from werkzeug.wrappers import Response as BaseResponse

from .responses import json_error

log = logging.getLogger("flask_plurality")

#: What each gate may answer, for the error's message.
BEFORE_LOGIN_ANSWERS: Final = (
    "None or True to let the login happen, False or a string (the message) to refuse it, or a response"
)
ALLOW_ANSWERS: Final = "True to let the request in or False to answer 403 forbidden"

#: Callbacks whose wrong answer this process has logged already: (what, qualified name).
_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def qualified_name(callback: Any) -> str:
    """``module.qualname`` of a function (a lambda, a method, a class's instance: what
    there is), so the log line points at the code to fix."""
    target = getattr(callback, "func", callback)  # functools.partial
    module = getattr(target, "__module__", None) or type(target).__module__
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}"


def wrong_answer(what: str, callback: Any, answer: Any, expected: str) -> BaseResponse:
    """The answer to a request whose gate ``callback`` answered ``answer``, of no kind
    it may answer (``expected`` says which): 500 ``callback_error``, and the TypeError
    in the log the first time this callback does it in this process."""
    name = qualified_name(callback)
    with _reported_lock:
        first = (what, name) not in _reported
        _reported.add((what, name))
    if first:
        # The type only: the value may be anything the app had at hand (a profile, a row).
        error = TypeError(f"{what} {name} returned {type(answer).__qualname__}; it must return {expected}.")
        log.error(
            "The app's %s %s gave an answer of the wrong kind: answered 500 callback_error "
            "(logged once per process, refused the same way every time)",
            what,
            name,
            exc_info=error,
        )
    return json_error(500, "callback_error")


def is_response(answer: Any) -> bool:
    """A response ``before_login`` may send as it is: a response object, or a view's
    ``(body, status)`` / ``(body, status, headers)`` tuple."""
    return isinstance(answer, BaseResponse) or (isinstance(answer, tuple) and len(answer) in (2, 3))
