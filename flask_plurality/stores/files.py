"""cachelib's ``FileSystemCache`` (the default store): one directory, every process.

cachelib writes each entry to a temporary file and renames it into place, so a reader
never sees half an entry; but its ``add`` and the check-then-write of a session are two
steps another process can come between. Here every read-modify-write of one key runs
under an exclusive ``flock`` on one of 64 lock files in the directory (chosen by the
key), shared by every process on the machine: a logout's delete and a late request's
"write only if still there" cannot interleave, a counter's increments are never lost,
and one ``add`` wins. Every failed write or delete (read-only or full disk) raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import time
import zlib
from collections.abc import Iterator
from typing import Any, Final

from cachelib.file import FileSystemCache

from .base import LockedKeys, bounded, store_errors_as_unavailable, unavailable_error
from .protocol import UNREAD

#: ``fcntl`` where there is one (not on Windows: one process per directory there).
fcntl: Any = importlib.import_module("fcntl") if os.name == "posix" else None

#: Lock files per directory; a key always takes the same one.
LOCK_STRIPES: Final = 64


class FileStore(LockedKeys):
    """The extension's keys and Flask-Session's sessions in a ``FileSystemCache``; each
    read-modify-write under the key's ``flock`` (:class:`~.base.LockedKeys`)."""

    shared = True
    cache: FileSystemCache

    def __init__(self, cache: FileSystemCache) -> None:
        self.cache = cache
        # cachelib skips names ending in its transaction suffix when it lists, counts
        # and sweeps entries: the lock files are never taken for cache entries.
        self._lock_name = os.path.join(cache._path, "plurality-lock-{:02d}" + cache._fs_transaction_suffix)
        # get_rarely_written: key -> its file, and (file's identity, value).
        self._epoch_files: dict[str, str] = {}
        self._epochs: dict[str, tuple[tuple[int, int, int], Any]] = {}
        # still_current: the markers' directory (its name ends in cachelib's suffix, so
        # cachelib never lists, counts or sweeps it), and (key, value) -> marker file.
        self._marker_dir = os.path.join(cache._path, "plurality-current" + cache._fs_transaction_suffix)
        self._markers: dict[tuple[str, str], str] = {}

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        path = self._lock_name.format(zlib.crc32(key.encode()) % LOCK_STRIPES)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise unavailable_error(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _put(self, key: str, value: Any, ttl: int) -> None:
        # FileSystemCache expires at int(now) + ttl: one second more, or an entry written
        # at x.99 with a ttl of 1 would live 0.01 s (readers check ages themselves).
        with store_errors_as_unavailable():
            done = self.cache.set(key, value, timeout=ttl + 1)
        if not done:  # cachelib logs the OSError and returns False
            raise unavailable_error("a session file could not be written (read-only or full disk?)")

    def _remove(self, key: str) -> None:
        try:
            os.remove(self.cache._get_filename(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise unavailable_error(exc) from None

    def get_rarely_written(self, key: str) -> Any:
        """One ``stat`` instead of opening and unpickling a file: cachelib writes through
        a temporary file and a rename, so any write changes the file's inode and mtime,
        and only then is the value read again."""
        path = self._file_of(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise unavailable_error(exc) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._epochs.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
        value = self.get(key)
        if value is None:  # expired (or junk): remove it, so still_current(key, None) holds again
            with self._locked(key):
                if self.get(key) is None:
                    self._unmark(key)
                    self._remove(key)
            return None
        self._epochs[key] = (stamp, value)
        return value

    def still_current(self, key: str, value: Any) -> bool:
        """Does ``key`` still hold ``value``? One ``access`` (a fifth of a ``stat``): while
        ``value`` is the current one, :meth:`set_rarely_written` keeps a marker file named
        after it; ``None`` is current while ``key`` has no file. ``False`` when unsure."""
        if value is None:
            return not os.access(self._file_of(key), os.F_OK)
        if not isinstance(value, str):
            return False
        return os.access(self._marker(key, value), os.F_OK)

    def set_rarely_written(self, key: str, value: Any, ttl: float) -> None:
        """Unmark every older value, write ``key``, then mark ``value`` current. Once this
        returns, :meth:`still_current` of an older value is ``False`` in every process;
        if a step fails (it raises), no marker claims a value that is not the current one,
        so readers read the value itself until the next write."""
        with self._locked(key):
            self._unmark(key)
            self._put(key, value, bounded(ttl))
            if not isinstance(value, str):
                return
            try:
                os.makedirs(self._marker_dir, mode=0o700, exist_ok=True)
                os.close(os.open(self._marker(key, value), os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise unavailable_error(exc) from None

    def _unmark(self, key: str) -> None:
        """Remove every marker of ``key`` (under its lock)."""
        prefix = os.path.basename(self._marker(key, ""))
        try:
            for entry in os.scandir(self._marker_dir):
                if entry.name.startswith(prefix):
                    os.remove(entry.path)
        except FileNotFoundError:
            pass  # no marker yet
        except OSError as exc:
            raise unavailable_error(exc) from None

    def _file_of(self, key: str) -> str:
        path = self._epoch_files.get(key)
        if path is None:
            path = self._epoch_files[key] = self.cache._get_filename(key)
        return path

    def _marker(self, key: str, value: str) -> str:
        """The marker file of ``value`` for ``key`` (``value`` "": the prefix of all of them)."""
        path = self._markers.get((key, value))
        if path is None:
            if len(self._markers) >= 64:
                self._markers.clear()
            name = hashlib.sha256(key.encode()).hexdigest()[:16] + "-"
            if value:
                name += hashlib.sha256(value.encode()).hexdigest()[:32]
            path = self._markers[(key, value)] = os.path.join(self._marker_dir, name)
        return path

    # -- Flask-Session's entries --------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """The session file alone: the epoch is left to :meth:`still_current`, one
        ``access`` of a marker against a ``stat`` here. (cachelib reads a file it cannot
        open or unpickle as nothing; the session guard makes any other failure a 503.)"""
        return self.cache.get(store_id), (UNREAD if epoch_key is not None else None)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        with self._locked(store_id):
            if only_if_present and not self.cache.has(store_id):
                return  # deleted (a logout) while this request ran: stays deleted
            with store_errors_as_unavailable():
                done = self.cache.set(store_id, dict(session), timeout=max(1, ttl))
            if not done:
                raise unavailable_error("a session file could not be written (read-only or full disk?)")

    def delete_session(self, store_id: str) -> None:
        with self._locked(store_id):
            self._remove(store_id)

    def sweep(self) -> None:
        """Delete every expired entry (sessions, answers, counters, markers)."""
        self.cache._remove_expired(time.time())
