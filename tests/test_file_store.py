"""The default store on disk when the disk fills up, and its sweep of expired files.

A full disk (a 64 KiB tmpfs, filled) fails every write with ENOSPC: each is a 503 and
leaves no temporary file behind. The sweep deletes expired entries and the temporary
files of writes whose process died, a batch at a time with a pause between batches,
so that a directory of 100,000 sessions never stalls a worker for more than a batch.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cachelib.file import FileSystemCache
from flask import Flask
from helpers import AppFactory, error_of, login

from flask_plurality.stores import files
from flask_plurality.stores.files import SWEEP_BATCH, FileStore
from flask_plurality.testing import FakePlurality

SUFFIX = ".__wz_cache"


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted on ``path`` (root only): the sessions' directory."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace')}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path) -> Path:
    """Write a file until the disk is full; the file, to delete to make room again."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"x" * 512)
    return filler


def temporary_files(path: Path) -> list[str]:
    """cachelib's and the store's temporary files (``tmp...`` + the transaction suffix)."""
    return [name for name in os.listdir(path) if name.startswith("tmp") and name.endswith(SUFFIX)]


def disk_app(make_app: AppFactory, directory: Path) -> Flask:
    return make_app(
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=FileSystemCache(str(directory), threshold=0),
        PLURALITY_LOGIN_MAX_FAILURES=1000,
    )


def test_a_full_disk_answers_503_and_leaves_no_temporary_file(
    make_app: AppFactory, fake: FakePlurality, tmp_path: Path
) -> None:
    """Before, every failed write of the extension's own keys (a failed-login counter,
    an answer) left a zero-byte temporary file that no sweep removed: 30 of 30."""
    with small_disk(tmp_path / "sessions") as directory:
        app = disk_app(make_app, directory)
        browser = app.test_client()
        assert login(browser, fake.issue_token()).status_code == 200  # room enough still
        filler = fill(directory)
        refused = [fake.issue_token() for _ in range(30)]
        for token in refused:
            fake.revoke(token)
        statuses = [login(app.test_client(), token).status_code for token in refused]  # counters written
        statuses += [login(app.test_client(), fake.issue_token()).status_code for _ in range(30)]  # sessions
        assert statuses == [503] * 60
        error_of(login(app.test_client(), fake.issue_token()), 503, "session_store_unavailable")
        assert temporary_files(directory) == []
        filler.unlink()  # room again: back to normal, by itself
        assert login(app.test_client(), fake.issue_token()).status_code == 200
        assert browser.get("/protected").status_code == 200
        assert temporary_files(directory) == []


def entry_file(directory: Path, name: str, expires: float) -> Path:
    """A file as the store writes one: the expiry (0: never), then the value."""
    path = directory / name
    path.write_bytes(struct.pack("I", int(expires)) + b"value")
    return path


def test_the_sweep_removes_expired_entries_and_dead_writes_only(tmp_path: Path) -> None:
    store = FileStore(FileSystemCache(str(tmp_path), threshold=0))
    now = time.time()
    expired = [entry_file(tmp_path, f"expired-{n}", now - 10) for n in range(5)]
    live = [entry_file(tmp_path, f"live-{n}", now + 3600) for n in range(5)]
    forever = entry_file(tmp_path, "forever", 0)
    stale = tmp_path / f"{tempfile.gettempprefix()}dead{SUFFIX}"
    stale.write_bytes(b"")
    old = now - files.STALE_TEMPORARY - 60
    os.utime(stale, (old, old))
    writing = tmp_path / f"{tempfile.gettempprefix()}busy{SUFFIX}"  # a write in progress
    writing.write_bytes(b"")
    with store._locked("some key"):  # a lock file: never swept
        pass
    locks = [name for name in os.listdir(tmp_path) if name.startswith("plurality-lock-")]
    store.sweep()
    left = set(os.listdir(tmp_path))
    assert not any(path.name in left for path in expired)
    assert stale.name not in left
    assert {path.name for path in [*live, forever, writing]} <= left
    assert set(locks) <= left and locks


def test_the_sweep_pauses_after_every_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep used to read every file of the directory in one go (5 s at 50,000
    sessions), holding a worker for as long; now it rests after each batch."""
    store = FileStore(FileSystemCache(str(tmp_path), threshold=0))
    now = time.time()
    count = 5 * SWEEP_BATCH + 7
    for n in range(count):
        entry_file(tmp_path, f"entry-{n}", now - 10 if n % 2 else now + 3600)
    read: list[int] = [0]
    batches: list[int] = []
    sweep_entry = FileStore._sweep_entry

    def counted(self: FileStore, entry: Any, now: float) -> None:
        read[0] += 1
        sweep_entry(self, entry, now)

    def pause(seconds: float) -> None:
        batches.append(read[0])
        read[0] = 0

    monkeypatch.setattr(FileStore, "_sweep_entry", counted)
    monkeypatch.setattr(files, "time", _Clock(pause))
    store.sweep()
    assert len(batches) >= 5 and max(batches) <= SWEEP_BATCH  # never more than a batch without a pause
    assert sum(batches) + read[0] == count
    assert len(os.listdir(tmp_path)) == count - count // 2


class _Clock:
    """``time`` for the store's module, with ``sleep`` recorded instead of slept."""

    def __init__(self, sleep: Any) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
