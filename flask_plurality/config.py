"""Every config key, its default, and the one accessor that reads them.

Defaults live only in :data:`DEFAULTS`; ``init_app`` ``setdefault``\\s them and the
rest of the package reads them through :data:`config`, so no module repeats a default.
"""

from __future__ import annotations

import difflib
import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from flask import current_app

from .exceptions import ConfigurationError, NotConfigured

log = logging.getLogger("flask_plurality")

#: Every key the extension reads, with its default: the one list of its settings. The
#: config table of the docs (docs/configuration.rst) is checked against this mapping by
#: the docs build and a test, and a ``PLURALITY_*`` key of the app that is not here is
#: reported as a misspelling (:func:`unknown_keys`).
DEFAULTS: Final[dict[str, Any]] = {
    "PLURALITY_CLIENT_ID": None,
    "PLURALITY_CLIENT_SECRET": None,
    "PLURALITY_API_URL": "https://app.plurality.network/api",
    "PLURALITY_VALIDATE_METHOD": "auto",
    "PLURALITY_TIMEOUT": 5.0,
    "PLURALITY_URL_PREFIX": "/plurality",
    "PLURALITY_REVALIDATE": None,
    "PLURALITY_ON_UPSTREAM_ERROR": "deny",
    "PLURALITY_GRACE_PERIOD": 300,
    "PLURALITY_LOGIN_URL": None,
    "PLURALITY_TRUSTED_ORIGINS": [],
    "PLURALITY_FAKE": False,
    "PLURALITY_KEY_PREFIX": "plurality:",
    "PLURALITY_MAX_TOKEN_LENGTH": 4096,
    "PLURALITY_LOGIN_MAX_FAILURES": 10,
    "PLURALITY_LOGIN_FAILURE_WINDOW": 300,
    "PLURALITY_BREAKER_THRESHOLD": 5,
    "PLURALITY_BREAKER_COOLDOWN": 30,
    "PLURALITY_REVOCATION_CHECK": True,
    "PLURALITY_VERIFY_TLS": True,
    "PLURALITY_OPENAPI": False,
    "PLURALITY_ACCEPT_BEARER": False,
    "PLURALITY_BEARER_REVALIDATE": 60,
    "PLURALITY_METRICS": False,
    "PLURALITY_METRICS_PATH": None,
    "PLURALITY_REPLICA_ACKS": "auto",
    "PLURALITY_REPLICA_TIMEOUT": 0.5,
    "PLURALITY_MAX_SESSIONS_PER_USER": None,
    "PLURALITY_SESSION_LIMIT": "end_oldest",
    "PLURALITY_LAST_SEEN_INTERVAL": 300,
    "PLURALITY_SESSION_IP": "prefix",
}

_METHODS: Final = ("AUTO", "POST", "GET")
_POLICIES: Final = ("deny", "allow")
_SESSION_LIMITS: Final = ("end_oldest", "refuse")
_SESSION_IPS: Final = ("full", "prefix", "none")


def parse_interval(value: Any, key: str) -> int | None:
    """Normalise a revalidation setting: None/False never, True/0 always, N seconds."""
    if value is None or value is False:
        return None
    if value is True:
        return 0
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be None, a bool or seconds, not {value!r}") from None
    if seconds < 0:
        raise ConfigurationError(f"{key} must not be negative")
    return seconds


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off", "none"})


def flag(value: Any, key: str) -> bool:
    """A boolean setting; strings as environment variables give them ("false" is False)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigurationError(f"{key} must be true or false, not {value!r}")
    return bool(value)


def fake_mode(value: Any) -> bool | str:
    """What a ``PLURALITY_FAKE`` value asks for: ``False``, ``True`` or ``"force"``.

    Read as ``init_app`` reads it (``"off"``, ``"no"``, ``"0"`` are off, any case); a value
    that is none of these raises :class:`ConfigurationError`. Public, for an app that
    decides on demo mode itself before ``init_app`` (the sample app does)."""
    if isinstance(value, str) and value.strip().lower() == "force":
        return "force"
    return flag(value, "PLURALITY_FAKE")


def _number(app_config: Mapping[str, Any], key: str, *, integer: bool = False, minimum: float = 0) -> None:
    try:
        number = int(app_config[key]) if integer else float(app_config[key])
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and number >= minimum) or isinstance(app_config[key], bool):
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{key} must be {kind} of at least {minimum:g}, not {app_config[key]!r}")


def _credential(value: Any) -> str:
    return "" if value is None else str(value)


def _origins(value: Any) -> list[str]:
    """A list, or a comma/space separated string as an environment variable gives."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    return list(value)


class ConfigView:
    """Typed, read-only view of the current app's ``PLURALITY_*`` keys.

    ``ConfigView(app.config)`` reads one mapping directly: the per-request check builds one
    so that it resolves ``current_app`` once, not once per key.
    """

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[str, Any] | None = None) -> None:
        self._mapping = mapping

    def _get(self, key: str) -> Any:
        return (current_app.config if self._mapping is None else self._mapping)[key]

    @property
    def client_id(self) -> str:
        """``""`` when unset (never ``"None"``): the client refuses to call without it."""
        return _credential(self._get("PLURALITY_CLIENT_ID"))

    @property
    def client_secret(self) -> str:
        return _credential(self._get("PLURALITY_CLIENT_SECRET"))

    @property
    def api_url(self) -> str:
        return str(self._get("PLURALITY_API_URL")).rstrip("/")

    @property
    def validate_method(self) -> str:
        return str(self._get("PLURALITY_VALIDATE_METHOD")).upper()

    @property
    def timeout(self) -> float:
        return float(self._get("PLURALITY_TIMEOUT"))

    @property
    def on_upstream_error(self) -> str:
        return str(self._get("PLURALITY_ON_UPSTREAM_ERROR")).lower()

    @property
    def grace_period(self) -> int:
        return int(self._get("PLURALITY_GRACE_PERIOD"))

    @property
    def login_url(self) -> str | None:
        value = self._get("PLURALITY_LOGIN_URL")
        return str(value) if value else None

    @property
    def trusted_origins(self) -> frozenset[str]:
        return frozenset(o.rstrip("/").lower() for o in _origins(self._get("PLURALITY_TRUSTED_ORIGINS")))

    @property
    def fake(self) -> bool | str:
        return fake_mode(self._get("PLURALITY_FAKE"))

    @property
    def key_prefix(self) -> str:
        return str(self._get("PLURALITY_KEY_PREFIX"))

    @property
    def max_token_length(self) -> int:
        return int(self._get("PLURALITY_MAX_TOKEN_LENGTH"))

    @property
    def login_max_failures(self) -> int:
        return int(self._get("PLURALITY_LOGIN_MAX_FAILURES"))

    @property
    def login_failure_window(self) -> int:
        return int(self._get("PLURALITY_LOGIN_FAILURE_WINDOW"))

    @property
    def breaker_threshold(self) -> int:
        return int(self._get("PLURALITY_BREAKER_THRESHOLD"))

    @property
    def breaker_cooldown(self) -> float:
        return float(self._get("PLURALITY_BREAKER_COOLDOWN"))

    @property
    def revocation_check(self) -> bool:
        return flag(self._get("PLURALITY_REVOCATION_CHECK"), "PLURALITY_REVOCATION_CHECK")

    @property
    def verify_tls(self) -> bool:
        return flag(self._get("PLURALITY_VERIFY_TLS"), "PLURALITY_VERIFY_TLS")

    @property
    def openapi(self) -> bool:
        return flag(self._get("PLURALITY_OPENAPI"), "PLURALITY_OPENAPI")

    @property
    def accept_bearer(self) -> bool:
        value = self._get("PLURALITY_ACCEPT_BEARER")
        return value if value is True or value is False else flag(value, "PLURALITY_ACCEPT_BEARER")

    @property
    def bearer_revalidate(self) -> int:
        return int(self._get("PLURALITY_BEARER_REVALIDATE"))


#: The accessor; use inside an app context.
config: Final = ConfigView()


def check_values(app_config: dict[str, Any]) -> None:
    """Refuse settings that would fail later, at a confusing moment, at ``init_app``."""
    method = str(app_config["PLURALITY_VALIDATE_METHOD"]).upper()
    if method not in _METHODS:
        raise ConfigurationError(f"PLURALITY_VALIDATE_METHOD must be one of auto, POST, GET; not {method!r}")
    policy = str(app_config["PLURALITY_ON_UPSTREAM_ERROR"]).lower()
    if policy not in _POLICIES:
        raise ConfigurationError(f"PLURALITY_ON_UPSTREAM_ERROR must be 'deny' or 'allow'; not {policy!r}")
    parse_interval(app_config["PLURALITY_REVALIDATE"], "PLURALITY_REVALIDATE")
    origins = app_config["PLURALITY_TRUSTED_ORIGINS"]
    if not isinstance(origins, str | list | tuple | set | frozenset) or not all(
        isinstance(o, str) and "://" in o for o in _origins(origins)
    ):
        raise ConfigurationError("PLURALITY_TRUSTED_ORIGINS must be a list of 'scheme://host[:port]' strings")
    # Numbers and flags are checked here, so that a typo fails at start-up, not as a 500
    # on the first login.
    _number(app_config, "PLURALITY_TIMEOUT", minimum=0.001)
    _number(app_config, "PLURALITY_GRACE_PERIOD")
    _number(app_config, "PLURALITY_BREAKER_COOLDOWN", minimum=0.001)
    _number(app_config, "PLURALITY_BEARER_REVALIDATE", integer=True)
    _number(app_config, "PLURALITY_REPLICA_TIMEOUT", minimum=0.001)
    acks = app_config["PLURALITY_REPLICA_ACKS"]
    if acks != "auto" and (isinstance(acks, bool) or not str(acks).strip().isdigit()):
        raise ConfigurationError(
            f"PLURALITY_REPLICA_ACKS must be 'auto' or a number of replicas (0: none), not {acks!r}"
        )
    for key in (
        "PLURALITY_MAX_TOKEN_LENGTH",
        "PLURALITY_LOGIN_MAX_FAILURES",
        "PLURALITY_LOGIN_FAILURE_WINDOW",
        "PLURALITY_BREAKER_THRESHOLD",
    ):
        _number(app_config, key, integer=True, minimum=1)
    _sessions_settings(app_config)
    for key in (
        "PLURALITY_REVOCATION_CHECK",
        "PLURALITY_VERIFY_TLS",
        "PLURALITY_OPENAPI",
        "PLURALITY_ACCEPT_BEARER",
        "PLURALITY_METRICS",
    ):
        flag(app_config[key], key)
    if not fake_mode(app_config["PLURALITY_FAKE"]):  # fake mode brings its own (a UUID)
        problem = client_id_problem(app_config.get("PLURALITY_CLIENT_ID"))
        if problem is not None and ":" in str(app_config["PLURALITY_CLIENT_ID"]):
            raise ConfigurationError(f"PLURALITY_CLIENT_ID {problem}")
        if problem is not None:
            log.warning("PLURALITY_CLIENT_ID %s", problem)


def _sessions_settings(app_config: dict[str, Any]) -> None:
    """A user's sessions (docs/sessions.rst): checked, and normalised where the hot path
    reads them straight from the config (``PLURALITY_LAST_SEEN_INTERVAL``)."""
    limit = app_config["PLURALITY_MAX_SESSIONS_PER_USER"]
    if limit is not None:
        _number(app_config, "PLURALITY_MAX_SESSIONS_PER_USER", integer=True, minimum=1)
        app_config["PLURALITY_MAX_SESSIONS_PER_USER"] = int(limit)
    policy = str(app_config["PLURALITY_SESSION_LIMIT"]).lower()
    if policy not in _SESSION_LIMITS:
        raise ConfigurationError(f"PLURALITY_SESSION_LIMIT must be 'end_oldest' or 'refuse'; not {policy!r}")
    app_config["PLURALITY_SESSION_LIMIT"] = policy
    _number(app_config, "PLURALITY_LAST_SEEN_INTERVAL", integer=True)
    app_config["PLURALITY_LAST_SEEN_INTERVAL"] = int(app_config["PLURALITY_LAST_SEEN_INTERVAL"])
    address = str(app_config["PLURALITY_SESSION_IP"]).lower()
    if address not in _SESSION_IPS:
        raise ConfigurationError(f"PLURALITY_SESSION_IP must be 'full', 'prefix' or 'none'; not {address!r}")
    app_config["PLURALITY_SESSION_IP"] = address


def client_id_problem(value: Any) -> str | None:
    """What is wrong with a client id, as Plurality reads it; ``None`` if nothing (or unset).

    Plurality splits the Basic credentials at ``:``, so an id containing one can never
    authenticate; its ids are UUIDs, and it checks that without error handling, so an id
    that is not one probably gets no answer at all (a hang or a proxy's 5xx), not a 401.
    """
    if not isinstance(value, str) or not value:
        return None
    if ":" in value:
        return f"{value!r} contains ':', so Plurality can never authenticate it (Basic credentials split at ':')"
    try:
        uuid.UUID(value)
    except ValueError:
        return (
            f"{value!r} is not a UUID, as Plurality's client ids are; copy it from the developer "
            "dashboard (Plurality may not answer at all for an id that is not one)"
        )
    return None


def secret_hint(secret: Any) -> str | None:
    """Why Plurality may refuse a secret it issued: it cuts Basic credentials at the first ``:``."""
    if isinstance(secret, str) and ":" in secret:
        return "PLURALITY_CLIENT_SECRET contains ':', and Plurality keeps only what comes before the first ':'"
    return None


# -- what may be missing or misspelled ----------------------------------------------

#: The settings without which nothing can be asked of Plurality. ``init_app`` only warns
#: when one is missing; every use that needs it raises :class:`.NotConfigured`.
CREDENTIALS: Final = ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET")


def missing_credentials(app_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The :data:`CREDENTIALS` that are unset or empty, in order."""
    return tuple(key for key in CREDENTIALS if not app_config.get(key))


def not_configured(missing: tuple[str, ...]) -> NotConfigured:
    """The error for a use that needs ``missing``: what to set, in either way an app sets
    it (its config, or the environment read by ``from_prefixed_env``), or demo mode."""
    names = " and ".join(missing)
    env = " and ".join(f"FLASK_{key}" for key in missing)
    one = len(missing) == 1
    return NotConfigured(
        f"{names} {'is' if one else 'are'} not set, so Plurality cannot be asked about a login. "
        f"Copy {'it' if one else 'them'} from Plurality's developer dashboard into the app's config "
        f"as {names}, or into the environment as {env}, read by app.config.from_prefixed_env(); "
        "or set PLURALITY_FAKE = True (FLASK_PLURALITY_FAKE=true) to develop against the built-in stand-in.",
        missing=missing,
    )


def require_credentials(client_id: str, client_secret: str) -> None:
    """Raise :class:`.NotConfigured` naming whichever of the two is empty."""
    if not client_id or not client_secret:
        raise not_configured(missing_credentials({CREDENTIALS[0]: client_id, CREDENTIALS[1]: client_secret}))


_PREFIX_LENGTH: Final = len("PLURALITY_")
_TAILS: Final = [key[_PREFIX_LENGTH:] for key in DEFAULTS]


def unknown_keys(keys: Iterable[str]) -> list[str]:
    """A sentence for each ``PLURALITY_*`` key (in any case) that is not a setting, naming
    the closest setting: a misspelt key is otherwise silently ignored, and its default used.
    Only the key is named, never its value (a misspelt secret's value is a secret)."""
    found = []
    for name in sorted(k for k in keys if isinstance(k, str) and k.upper().startswith("PLURALITY_")):
        if name in DEFAULTS:
            continue
        # Compared without the prefix, which every key shares and which would make any
        # two keys look alike.
        close = difflib.get_close_matches(name.upper()[_PREFIX_LENGTH:], _TAILS, n=1, cutoff=0.6)
        hint = (
            f"did you mean PLURALITY_{close[0]}?"
            if close
            else "see the configuration page of the docs for the settings"
        )
        found.append(f"{name} is not a flask-plurality setting; {hint}")
    return found
