"""What a process keeps in memory stays bounded in bytes, whatever clients send.

Two maps live in each process: the parse cache of stored logins (by session id) and
the bearer tokens Plurality confirmed. Both are :class:`flask_plurality.lru.BoundedLRU`:
least recently used out first, one entry at a time, never emptied at once, and safe
under threads. Junk bearer tokens (JWT-shaped, with claims as large as the token limit
allows) are never kept at all: only Plurality's "yes" earns a token a place.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

import jwt
import pytest
from flask import Flask
from flask_session.base import ServerSideSession
from helpers import AppFactory

from flask_plurality import current_profile, logins, plurality_required
from flask_plurality.lru import ENTRY_OVERHEAD, BoundedLRU, size_of
from flask_plurality.profile import Profile
from flask_plurality.state import BEARER_MEMORY_BYTES, get_state
from flask_plurality.testing import FakePlurality

# -- the map itself ---------------------------------------------------------------------------


def test_the_map_evicts_the_least_recently_used_one_at_a_time_within_its_bytes() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(max_bytes=10 * (100 + ENTRY_OVERHEAD))
    for n in range(10):
        lru.put(f"k{n}", n, 100)
    assert len(lru) == 10 and lru.size == lru.max_bytes
    assert lru.get("k0") == 0  # used: now the most recent
    lru.put("k10", 10, 100)
    assert "k0" in lru and "k1" not in lru  # the least recently used left, alone
    assert len(lru) == 10
    lru.put("big", -1, 5 * (100 + ENTRY_OVERHEAD) - ENTRY_OVERHEAD)  # worth five entries: five leave
    assert len(lru) == 6 and lru.size <= lru.max_bytes
    assert "k0" in lru and "big" in lru
    lru.put("huge", -2, lru.max_bytes)  # over the whole budget alone: not kept, nothing evicted
    assert "huge" not in lru and len(lru) == 6
    assert lru.pop("big") == -1 and lru.pop("big") is None
    assert lru.size == sum(100 + ENTRY_OVERHEAD for _ in range(len(lru)))


# -- the parse cache of stored logins -----------------------------------------------------------


#: Each session's own token, by session id.
TOKENS: dict[str, str] = {}


def _session(n: int) -> ServerSideSession:
    """A session as Flask-Session loads it, holding a login of its own."""
    token = jwt.encode({"id": f"user-{n}", "n": uuid.uuid4().hex, "exp": 2**31 - 1}, "k" * 32, algorithm="HS256")
    profile = Profile.from_upstream({"id": f"user-{n}", "email": f"u{n}@example.com"}, {"exp": 2**31 - 1})
    now = time.time()
    login = logins.Login(profile, token, 2**31 - 1, now, now)
    sid = f"sid-{n}-{uuid.uuid4().hex}"
    TOKENS[sid] = token
    return ServerSideSession({logins.SESSION_KEY: login.dump()}, sid=sid)


def test_a_working_set_above_1024_sessions_still_hits_the_parse_cache() -> None:
    """The cache used to drop the oldest entry first (FIFO, 1,024 entries): 1,025
    sessions used in turn missed on every request. Now every one of 1,500 hits."""
    sessions = [_session(n) for n in range(1500)]
    first = [logins.stored_login(sess) for sess in sessions]
    for _ in range(2):
        again = [logins.stored_login(sess) for sess in sessions]
        hits = sum(a is b for a, b in zip(first, again, strict=True))
        assert hits == len(sessions)
    assert logins._parsed.size <= logins.PARSED_MAX_BYTES
    for sess in sessions:
        logins.forget_parsed(sess)


def test_the_parse_cache_is_bounded_in_bytes_and_keeps_the_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    small: BoundedLRU[str | None, Any] = BoundedLRU(max_bytes=200_000)
    monkeypatch.setattr(logins, "_parsed", small)
    hot = _session(0)
    held = logins.stored_login(hot)
    for n in range(1, 2000):
        logins.stored_login(_session(n))
        if n % 10 == 0:
            assert logins.stored_login(hot) is held  # used often: never pushed out
        assert small.size <= small.max_bytes
    assert 10 < len(small) < 200  # a byte budget, full, not emptied


def test_the_parse_cache_under_threads_raises_nothing_and_never_mixes_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FIFO eviction raised RuntimeError (the dict changed size while it looked for
    the oldest entry) under threads. 16 threads over 400 sessions through a cache that
    holds about 40, with logouts mixed in: every answer is the session's own login."""
    sessions = [_session(n) for n in range(400)]
    one = size_of(sessions[0][logins.SESSION_KEY]) + ENTRY_OVERHEAD
    monkeypatch.setattr(logins, "_parsed", BoundedLRU(max_bytes=40 * one))
    rounds, threads = 4000, 16
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(seed: int) -> None:
        counted: Counter[str] = Counter()
        start.wait()
        for step in range(rounds):
            sess = sessions[(seed * 7919 + step * 31) % len(sessions)]
            try:
                if step % 13 == 0:
                    logins.forget_parsed(sess)
                    continue
                login = logins.stored_login(sess)
                good = login is not None and login.token == TOKENS[sess.sid]
                counted["ok" if good else "wrong"] += 1
            except Exception as exc:  # counted, not lost in a thread
                counted[type(exc).__name__] += 1
        with lock:
            outcomes.update(counted)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    finally:
        sys.setswitchinterval(interval)
    print(f"\nparse cache under {threads} threads: {dict(outcomes)}")
    assert set(outcomes) == {"ok"}
    assert outcomes["ok"] == sum(1 for n in range(threads) for s in range(rounds) if s % 13) > 50_000


# -- bearer tokens ------------------------------------------------------------------------------


def bearer_app(make_app: AppFactory) -> Flask:
    app = make_app(PLURALITY_LOGIN_MAX_FAILURES=10)

    @app.get("/api/me")
    @plurality_required(bearer=True)
    def me() -> dict[str, Any]:
        return {"id": current_profile.id}

    return app


def junk_token(n: int, size: int = 3000) -> str:
    """JWT-shaped, unexpired, claims as large as PLURALITY_MAX_TOKEN_LENGTH lets through,
    signed with a key that is not Plurality's."""
    claims = {"id": f"junk-{n}", "exp": int(time.time()) + 3600, "pad": uuid.uuid4().hex * (size // 44)}
    token = jwt.encode(claims, "not-plurality-s-key-but-long-enough", algorithm="HS256")
    assert len(token) <= 4096
    return token


def get_me(client: Any, token: str) -> int:
    return int(client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code)


def test_junk_bearer_tokens_are_not_kept_and_a_good_tokens_memory_survives(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    """Every JWT-shaped token used to be kept with its claims before the throttle or
    Plurality was asked (10,000 per process, then all forgotten at once): hundreds of
    megabytes from unauthenticated requests. Now junk keeps nothing (benchmarks/memory.py
    measures 10,000 of them; 2,000 here)."""
    app = bearer_app(make_app)
    client = app.test_client()
    remembered = get_state(app).bearer_tokens
    good = fake.issue_token(user_id="good-user")
    assert get_me(client, good) == 200
    assert good in remembered and len(remembered) == 1
    kept, held = remembered.size, remembered.get(good)
    statuses: Counter[int] = Counter()
    fake.reset_calls()
    for n in range(2000):
        statuses[get_me(client, junk_token(n, size=3000 if n % 10 == 0 else 600))] += 1
    assert set(statuses) == {401, 429}
    assert statuses[401] == len(fake.calls) <= 10  # the throttle held; the rest never reached Plurality
    assert len(remembered) == 1 and remembered.size == kept <= BEARER_MEMORY_BYTES
    fake.reset_calls()
    assert get_me(client, good) == 200  # its answer is still cached: no call, no throttle
    assert fake.calls == []
    assert remembered.get(good) is held  # and its memory is the one from before


def test_a_token_plurality_refuses_is_not_kept(make_app: AppFactory, fake: FakePlurality) -> None:
    app = bearer_app(make_app)
    token = fake.issue_token()
    fake.revoke(token)
    assert get_me(app.test_client(), token) == 401
    assert len(get_state(app).bearer_tokens) == 0


def test_a_kept_token_that_plurality_refuses_later_is_forgotten(make_app: AppFactory, fake: FakePlurality) -> None:
    app = bearer_app(make_app)
    app.config["PLURALITY_BEARER_REVALIDATE"] = 0  # ask on every request
    client = app.test_client()
    token = fake.issue_token()
    assert get_me(client, token) == 200
    assert token in get_state(app).bearer_tokens
    fake.revoke(token)
    assert get_me(client, token) == 401
    assert token not in get_state(app).bearer_tokens


def test_confirmed_bearer_tokens_are_bounded_in_bytes_least_recently_used_out(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    app = bearer_app(make_app)
    remembered = get_state(app).bearer_tokens
    remembered.max_bytes = 40_000  # a few dozen tokens, so that this test fills it
    client = app.test_client()
    hot = fake.issue_token(user_id="hot")
    assert get_me(client, hot) == 200
    sizes = []
    for n in range(200):
        assert get_me(client, fake.issue_token(user_id=f"user-{n}")) == 200
        if n % 5 == 0:
            assert get_me(client, hot) == 200
            assert hot in remembered  # used often: kept
        sizes.append(len(remembered))
        assert remembered.size <= remembered.max_bytes
    assert 10 < min(sizes[100:]) == max(sizes[100:])  # full, one out per one in, never emptied
