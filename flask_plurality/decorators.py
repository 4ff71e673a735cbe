"""``@plurality_required`` and ``current_profile``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast, overload

from flask import current_app, g, has_request_context, request
from werkzeug.local import LocalProxy

from .config import _interval
from .extension import _UNSET, get_extension
from .profile import ANONYMOUS, AnonymousProfile, Profile

F = TypeVar("F", bound=Callable[..., Any])


@overload
def plurality_required(view: F) -> F: ...


@overload
def plurality_required(*, revalidate: bool | int | None = ...) -> Callable[[F], F]: ...


def plurality_required(view: F | None = None, *, revalidate: bool | int | None = None) -> F | Callable[[F], F]:
    """Let the view run only for a logged-in Plurality user.

    ``revalidate`` overrides ``PLURALITY_REVALIDATE`` for this view: ``True`` or ``0``
    asks Plurality on every request, ``N`` when the last good answer is older than N
    seconds, ``False`` never; ``None`` (the default) keeps the app's setting. Works bare
    or called, on sync and async views and in ``MethodView.decorators``; ``OPTIONS``
    (CORS preflight) always passes.
    """
    if view is None:
        return lambda f: _guard(f, revalidate)
    return _guard(view, revalidate)


def _guard(view: F, revalidate: bool | int | None) -> F:
    # Resolved once here, not per request; a bad value fails at import time.
    policy: Any = _UNSET if revalidate is None else _interval(revalidate, "revalidate")
    is_async = inspect.iscoroutinefunction(view)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method != "OPTIONS":
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            extension = app.extensions.get("plurality") or get_extension()  # the latter raises clearly
            outcome = extension._authorize(policy, app)
            if not isinstance(outcome, Profile):
                return outcome
        if is_async:
            return current_app.ensure_sync(view)(*args, **kwargs)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _load_profile() -> Profile | AnonymousProfile:
    if not has_request_context():
        return ANONYMOUS
    profile = g.get("_plurality_profile")
    if profile is None:
        extension = current_app.extensions.get("plurality")
        profile = extension._current() if extension is not None else None
        g._plurality_profile = profile
    return profile or ANONYMOUS


#: The logged-in user's :class:`Profile`; falsy (an :class:`AnonymousProfile`) otherwise.
current_profile: Profile = cast(Profile, LocalProxy(_load_profile))
