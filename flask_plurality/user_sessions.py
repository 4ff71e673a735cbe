"""A user's active sessions: the per-user index, listing, ending one, the limit.

Each login gets a **handle**: a random, unguessable name for that session, unique to
its user. The user's index (one key of the shared store, ``sessions:{<user hash>}``)
maps each handle to what the "where am I signed in?" page shows (when the login began,
the browser's ``User-Agent``, the address as ``PLURALITY_SESSION_IP`` says) and to the
session's store id *sealed* with a key derived from the client secret: the index holds
no session id, and nothing in it opens a session. A handle opens nothing either: it is
only ever looked up in its own user's index.

- Every change of a user's index (a login, a logout, ending one, the limit) runs under
  a lock of that user in the store (the store's atomic ``add``), so 20 logins at once
  with a limit of 3 leave exactly 3 sessions, on every backend.
- A session ends through the store path a logout takes (:meth:`.stores.Store.delete_session`);
  a request of it still in flight writes only over an entry still stored, so ending one
  is as final as a logout.
- ``last_seen`` lives in the session itself (``seen``, rewritten at most once per
  ``PLURALITY_LAST_SEEN_INTERVAL``), not in the index: the hot path writes nothing but
  that, takes no lock, and the index is written at logins and endings only. Listing reads
  each session (which also drops an entry whose session is gone).
- The index is bounded: every entry carries its session's expiry, expired ones are left
  out when read and dropped at the next change, the key itself expires with the last
  of them, and a user has at most :data:`INDEX_MAX` entries.

Every key of one user's index shares the hash tag ``{<user hash>}`` (one Redis Cluster
slot), and each operation touches one key at a time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from flask import Flask, Request

from . import signals
from .config import config
from .flask_context import SESSION_KEY
from .stores import MAX_TTL, Store, unavailable_error

log = logging.getLogger("flask_plurality")

#: Most sessions one user's index holds, whatever ``PLURALITY_MAX_SESSIONS_PER_USER``
#: says: beyond it, the least recently seen session ends (reason ``limit``).
INDEX_MAX: Final = 100
#: ``user_agent`` is cut to this many characters.
USER_AGENT_MAX: Final = 200
#: Seconds a user's lock is held at most (a worker that died holding it).
LOCK_TTL: Final = 10
#: Seconds a change waits for the lock before answering 503.
LOCK_WAIT: Final = 10.0


#: Called with the store id of each session ended here (:mod:`.logins` registers the one
#: that drops this process's parsed copy of its login, token included).
on_store_id_ended: list[Callable[[Flask, str], None]] = []


class TooManySessions(Exception):
    """A login beyond ``PLURALITY_MAX_SESSIONS_PER_USER`` with ``PLURALITY_SESSION_LIMIT = "refuse"``."""


@dataclass(frozen=True)
class SessionInfo:
    """One of a user's sessions, as :meth:`.Plurality.sessions_of` lists it."""

    #: Opaque and unguessable; names this session to ``end_session`` (never its id).
    handle: str
    #: When the login began (epoch seconds).
    created_at: int
    #: When a request of it was last seen (epoch seconds), to ``PLURALITY_LAST_SEEN_INTERVAL``.
    last_seen: int
    #: The browser's ``User-Agent`` at login, cut to 200 characters.
    user_agent: str | None
    #: The address at login, as ``PLURALITY_SESSION_IP`` says (``None`` for ``"none"``).
    ip: str | None
    #: Is it the session of the current request?
    current: bool
    #: When it expires (the token's ``exp``, epoch seconds).
    expires_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "created_at": self.created_at,
            "last_seen": self.last_seen,
            "user_agent": self.user_agent,
            "ip": self.ip,
            "current": self.current,
            "expires_at": self.expires_at,
        }


# -- keys, handles, the sealed store id --------------------------------------------------


def _user_tag(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()[:32]


def index_key(user_id: str) -> str:
    """The key of ``user_id``'s index (its hash tag: one Redis Cluster slot per user)."""
    return f"{config.key_prefix}sessions:{{{_user_tag(user_id)}}}"


def _lock_key(user_id: str) -> str:
    return f"{config.key_prefix}sessions-lock:{{{_user_tag(user_id)}}}"


def new_handle() -> str:
    return secrets.token_urlsafe(12)  # 96 random bits: unguessable, and short in every session


def _seal_key(app: Flask) -> bytes:
    secret = str(app.config.get("PLURALITY_CLIENT_SECRET") or "")
    return hmac.new(secret.encode(), b"flask-plurality session index", hashlib.sha256).digest()


def seal(app: Flask, handle: str, store_id: str) -> str:
    """``store_id`` encrypted for ``handle`` (a key stream from the app's key and the
    handle, never reused), with a tag: the index then holds nothing that opens a session."""
    key = _seal_key(app)
    plain = store_id.encode()
    stream = hashlib.shake_256(key + b"stream" + handle.encode()).digest(len(plain))
    sealed = bytes(a ^ b for a, b in zip(plain, stream, strict=True))
    tag = hmac.new(key, handle.encode() + b"\0" + plain, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(tag + sealed).decode()


def unseal(app: Flask, handle: str, sealed: Any) -> str | None:
    """The store id :func:`seal` sealed; ``None`` when it does not open (another key:
    the client secret changed since that login)."""
    try:
        raw = base64.urlsafe_b64decode(str(sealed).encode())
    except (ValueError, TypeError):
        return None
    key = _seal_key(app)
    tag, body = raw[:12], raw[12:]
    stream = hashlib.shake_256(key + b"stream" + handle.encode()).digest(len(body))
    plain = bytes(a ^ b for a, b in zip(body, stream, strict=True))
    if not hmac.compare_digest(tag, hmac.new(key, handle.encode() + b"\0" + plain, hashlib.sha256).digest()[:12]):
        return None
    return plain.decode(errors="replace")


def masked_ip(address: str | None, setting: str) -> str | None:
    """``address`` as ``PLURALITY_SESSION_IP`` keeps it: ``"full"``, ``"prefix"`` (the
    IPv4 /24 or IPv6 /48 network) or ``"none"``."""
    if not address or setting == "none":
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if setting == "full":
        return str(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def user_agent_of(request: Request) -> str | None:
    agent = request.headers.get("User-Agent")
    return agent[:USER_AGENT_MAX] if agent else None


# -- the index -----------------------------------------------------------------------


@contextlib.contextmanager
def _user_lock(store: Store, user_id: str) -> Iterator[None]:
    """Exclusive access to ``user_id``'s index, in every process sharing the store."""
    name, mine = _lock_key(user_id), secrets.token_hex(8)
    deadline = time.monotonic() + LOCK_WAIT
    pause = 0.001
    while not store.add(name, mine, LOCK_TTL):
        if time.monotonic() > deadline:
            raise unavailable_error("a user's session index stayed locked")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    try:
        yield
    finally:
        store.delete(name)


def _entries(store: Store, user_id: str, now: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(the live entries of the index, the handles of expired ones)."""
    raw = store.get(index_key(user_id))
    live: dict[str, dict[str, Any]] = {}
    expired: list[str] = []
    if isinstance(raw, dict):
        for handle, entry in raw.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("e"), int):
                continue
            if entry["e"] > now:
                live[handle] = entry
            else:
                expired.append(handle)
    return live, expired


def _write(store: Store, user_id: str, entries: dict[str, dict[str, Any]], now: float) -> None:
    name = index_key(user_id)
    if not entries:
        store.delete(name)
        return
    last = max(entry["e"] for entry in entries.values())
    store.set(name, entries, min(MAX_TTL, max(1, last - int(now))))  # gone with the last of them


def _ended(app: Flask, user_id: str, handle: str | None, reason: str) -> None:
    signals.session_ended.send(app, user_id=user_id, handle=handle, reason=reason)


def _end(app: Flask, store: Store, user_id: str, handle: str, entry: dict[str, Any], reason: str) -> None:
    """Delete the session of ``entry`` the way a logout does (its entry leaves the index
    with the caller's write)."""
    store_id = unseal(app, handle, entry.get("s"))
    if store_id is None:
        log.warning(
            "A session of user %s cannot be ended by handle (it began under another client secret); "
            "revoke_user ends it",
            user_id,
        )
    else:
        store.delete_session(store_id)
        for forget in on_store_id_ended:
            forget(app, store_id)
    _ended(app, user_id, handle, reason)


def _last_seen(store: Store, app: Flask, handle: str, entry: dict[str, Any]) -> int | None:
    """When ``entry``'s session was last seen; ``None`` when its session is gone."""
    store_id = unseal(app, handle, entry.get("s"))
    if store_id is None:
        return int(entry.get("c", 0))
    data, _ = store.retrieve_session(store_id, None)
    if not isinstance(data, dict):
        return None
    login = data.get(SESSION_KEY)  # as logins.Login.dump stores it: "h" the handle, "s" last seen
    if not isinstance(login, dict) or login.get("h") != handle:
        return None  # another login took the id over (or none is left): not this session
    seen = login.get("s")
    return int(seen) if isinstance(seen, int | float) else int(entry.get("c", 0))


def register(
    app: Flask,
    store: Store,
    user_id: str,
    *,
    handle: str,
    store_id: str,
    session: Any,
    exp: int,
    request: Request | None,
    previous: str | None,
) -> None:
    """Index a login that is starting as ``handle`` (and write its session, under the
    lock, so that an ending cannot come before the write); end what the limit says.

    Raises :class:`TooManySessions` (nothing written) under ``"refuse"``."""
    now = time.time()
    limit = app.config["PLURALITY_MAX_SESSIONS_PER_USER"]
    policy = str(app.config["PLURALITY_SESSION_LIMIT"]).lower()
    cap = INDEX_MAX if limit is None else min(int(limit), INDEX_MAX)
    ttl = max(1, min(exp - int(now), int(app.permanent_session_lifetime.total_seconds())))
    with _user_lock(store, user_id):
        entries, expired = _entries(store, user_id, now)
        for gone in expired:
            _ended(app, user_id, gone, "expired")
        entries.pop(previous or "", None)  # this browser's own login before: it ends (a new id)
        seen: dict[str, int] = {}
        if len(entries) >= cap:  # over the limit? first drop the sessions already gone
            for other, entry in list(entries.items()):
                last = _last_seen(store, app, other, entry)
                if last is None:
                    del entries[other]
                else:
                    seen[other] = last
        if len(entries) >= cap and policy == "refuse" and limit is not None:
            _write(store, user_id, entries, now)
            raise TooManySessions
        store.save_session(store_id, session, ttl, only_if_present=False)
        agent = user_agent_of(request) if request is not None else None
        address = masked_ip(request.remote_addr, str(app.config["PLURALITY_SESSION_IP"])) if request else None
        for other in sorted(seen, key=lambda h: (seen[h], entries[h].get("c", 0)))[: max(0, len(entries) - cap + 1)]:
            _end(app, store, user_id, other, entries.pop(other), "limit")
        entries[handle] = {"s": seal(app, handle, store_id), "c": int(now), "e": int(exp), "a": agent, "i": address}
        _write(store, user_id, entries, now)


def unregister(app: Flask, store: Store, user_id: str, handle: str) -> None:
    """The session of ``handle`` ended by itself (logout, expiry, revocation): it leaves the index."""
    with _user_lock(store, user_id):
        entries, _ = _entries(store, user_id, time.time())
        if entries.pop(handle, None) is not None or entries:
            _write(store, user_id, entries, time.time())


def moved(app: Flask, store: Store, user_id: str, handle: str, store_id: str) -> None:
    """The session of ``handle`` got a new id (another login system regenerated it)."""
    with _user_lock(store, user_id):
        entries, _ = _entries(store, user_id, time.time())
        if handle in entries:
            entries[handle]["s"] = seal(app, handle, store_id)
            _write(store, user_id, entries, time.time())


def list_sessions(app: Flask, store: Store, user_id: str, current: str | None) -> list[SessionInfo]:
    """``user_id``'s live sessions, the most recently seen first."""
    now = time.time()
    entries, _ = _entries(store, user_id, now)
    found: list[SessionInfo] = []
    gone: list[str] = []
    for handle, entry in entries.items():
        last = _last_seen(store, app, handle, entry)
        if last is None:
            gone.append(handle)
            continue
        agent, address = entry.get("a"), entry.get("i")
        found.append(
            SessionInfo(
                handle=handle,
                created_at=int(entry.get("c", 0)),
                last_seen=last,
                user_agent=agent if isinstance(agent, str) else None,
                ip=address if isinstance(address, str) else None,
                current=handle == current,
                expires_at=int(entry["e"]),
            )
        )
    if gone:  # their sessions ended without the index hearing of it (evicted, deleted by hand)
        with _user_lock(store, user_id):
            latest, _ = _entries(store, user_id, time.time())
            for handle in gone:
                latest.pop(handle, None)
            _write(store, user_id, latest, time.time())
    found.sort(key=lambda info: (info.last_seen, info.created_at), reverse=True)
    return found


def end(app: Flask, store: Store, user_id: str, handle: str, reason: str = "ended") -> bool:
    """End ``user_id``'s session ``handle``; ``False`` when it has no such session."""
    with _user_lock(store, user_id):
        entries, _ = _entries(store, user_id, time.time())
        entry = entries.pop(handle, None)
        if entry is None:
            return False
        _end(app, store, user_id, handle, entry, reason)
        _write(store, user_id, entries, time.time())
    return True


def end_all(app: Flask, store: Store, user_id: str, *, keep: str | None = None, reason: str = "ended") -> int:
    """End every session of ``user_id`` but ``keep``; how many were ended."""
    with _user_lock(store, user_id):
        entries, _ = _entries(store, user_id, time.time())
        ended = 0
        for handle in [h for h in entries if h != keep]:
            _end(app, store, user_id, handle, entries.pop(handle), reason)
            ended += 1
        _write(store, user_id, entries, time.time())
    return ended


__all__ = [
    "INDEX_MAX",
    "SessionInfo",
    "TooManySessions",
    "end",
    "end_all",
    "list_sessions",
    "masked_ip",
    "moved",
    "register",
    "unregister",
]
