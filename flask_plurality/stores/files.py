"""cachelib's ``FileSystemCache`` (the default store): one directory, every process.

cachelib writes each entry to a temporary file and renames it into place, so a reader
never sees half an entry; but its ``add`` and the check-then-write of a session are two
steps another process can come between. Here every read-modify-write of one key runs
under an exclusive ``flock`` on one of 64 lock files in the directory (chosen by the
key), shared by every process on the machine: a logout's delete and a late request's
"write only if still there" cannot interleave, a counter's increments are never lost,
and one ``add`` wins. Every failed write or delete (read-only or full disk) raises, and
leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import pickle
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from typing import Any, Final

import msgspec
from cachelib.file import FileSystemCache
from cachelib.serializers import BaseSerializer, FileSystemSerializer

from ..exceptions import ConfigurationError
from .base import LockedKeys, bounded, unavailable_error
from .protocol import UNREAD

#: ``fcntl`` where there is one (not on Windows: one process per directory there).
fcntl: Any = importlib.import_module("fcntl") if os.name == "posix" else None

#: Lock files per directory; a key always takes the same one.
LOCK_STRIPES: Final = 64

#: Files :meth:`FileStore.sweep` reads between two pauses of :data:`SWEEP_PAUSE` seconds,
#: or fewer when reading them takes longer than :data:`SWEEP_SLICE` seconds.
SWEEP_BATCH: Final = 100
SWEEP_SLICE: Final = 0.002
SWEEP_PAUSE: Final = 0.005
#: A temporary file this old (seconds) belongs to no write in progress: its process died.
STALE_TEMPORARY: Final = 600

#: cachelib's default ``threshold``, which Flask-Session also uses for "filesystem".
CACHELIB_DEFAULT_THRESHOLD: Final = 500


def no_size_threshold(cache: FileSystemCache, config: Any) -> None:
    """Make sure cachelib never prunes the directory by size; refuse a threshold the app chose.

    Over its ``threshold`` cachelib deletes entries whether they expired or not (every
    third one, then the oldest): live logins, failed-login counters and revocations
    alike, so users are logged out and throttles forgotten. Its count of files only
    grows, too, as every delete here is a plain remove. A threshold the app did not
    choose (cachelib's and Flask-Session's default of 500) is set to 0; expired entries
    are swept hourly instead. Any other is refused with what to set.
    """
    threshold = cache._threshold
    if not threshold:
        return
    if config.get("SESSION_TYPE") == "filesystem" and "SESSION_FILE_THRESHOLD" in config:
        raise ConfigurationError(
            f"SESSION_FILE_THRESHOLD = {threshold}: cachelib would delete live sessions, failed-login "
            "counters and revocations once the directory holds that many files. Remove "
            "SESSION_FILE_THRESHOLD or set it to 0 (flask-plurality sweeps expired entries hourly)."
        )
    if threshold != CACHELIB_DEFAULT_THRESHOLD:
        raise ConfigurationError(
            f"The sessions' FileSystemCache has threshold={threshold}: cachelib would delete live "
            "sessions, failed-login counters and revocations once the directory holds that many "
            "files. Create it with threshold=0 (flask-plurality sweeps expired entries hourly)."
        )
    cache._threshold = 0


class SessionFormatSerializer(FileSystemSerializer):
    """A ``FileSystemCache`` serializer that writes entries the way Flask-Session's own
    serializer writes sessions to Redis, memcached and SQL (msgspec: msgpack, or JSON
    with ``SESSION_SERIALIZATION_FORMAT = "json"``), instead of pickle.

    The test helpers' store uses it (:func:`flask_plurality.testing.store_config`), so
    a value those stores refuse (a lazy string, any object) fails the app's tests too,
    and what a session reads back (a list for a tuple) is what it would read there.
    ``setup_sessions`` gives it the app's format.
    """

    def __init__(self, serialization_format: str = "msgpack") -> None:
        self.use_format(serialization_format)

    def use_format(self, serialization_format: str) -> None:
        if serialization_format == "json":
            self._encoder: Any = msgspec.json.Encoder()
            self._decoder: Any = msgspec.json.Decoder()
        elif serialization_format == "msgpack":
            self._encoder = msgspec.msgpack.Encoder()
            self._decoder = msgspec.msgpack.Decoder()
        else:
            raise ConfigurationError(
                f"SESSION_SERIALIZATION_FORMAT must be 'msgpack' or 'json', not {serialization_format!r}."
            )
        self.format = serialization_format

    def dump(self, value: Any, f: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        f.write(self._encoder.encode(value))  # raises what msgspec raises: nothing is swallowed

    def load(self, f: Any) -> Any:
        try:
            return self._decoder.decode(f.read())
        except msgspec.DecodeError:
            return None  # junk, as cachelib reads a broken pickle: no entry


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
        # The file cachelib's set would write, without its per-write bookkeeping (an
        # isfile, a stat, the size threshold's check: 0 here): a counter is written on
        # every login attempt. And on a full disk cachelib's set leaves its temporary
        # file behind; this one removes it.
        self._write_file(key, self._dump(value), ttl + 1)

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
        # Encoded first, outside the store's error handling: a value the serializer
        # refuses is the app's bug (it raises as it is), not an unavailable store; and
        # cachelib would write a file holding only a header for some pickling errors.
        blob = self._dump(dict(session))
        with self._locked(store_id):
            if only_if_present and not self.cache.has(store_id):
                return  # deleted (a logout) while this request ran: stays deleted
            self._write_file(store_id, blob, max(1, ttl))

    def _dump(self, value: Any) -> bytes:
        """``value`` as the cache's serializer writes it, or the serializer's error."""
        serializer = self.cache.serializer
        if type(serializer).dump is BaseSerializer.dump:  # plain pickle (it would swallow errors)
            return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        buffer = io.BytesIO()
        serializer.dump(value, buffer)
        return buffer.getvalue()

    def _write_file(self, key: str, blob: bytes, ttl: int) -> None:
        """What ``FileSystemCache.set`` does (a temporary file renamed into place) with
        the value already encoded, and no pruning."""
        path = self.cache._get_filename(key)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(suffix=self.cache._fs_transaction_suffix, dir=self.cache._path)
            with os.fdopen(fd, "wb") as f:
                f.write(struct.pack("I", int(time.time()) + ttl))
                f.write(blob)
            os.chmod(tmp, self.cache._mode or 0o600)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise unavailable_error(exc) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.remove(tmp)

    def delete_session(self, store_id: str) -> None:
        with self._locked(store_id):
            self._remove(store_id)

    def sweep(self) -> None:
        """Delete every expired entry (sessions, answers, counters), and temporary files
        a write left behind when its process died (older than :data:`STALE_TEMPORARY`).

        One pass over the directory, :data:`SWEEP_BATCH` files at a time (fewer when the
        disk is slow: at most :data:`SWEEP_SLICE` seconds of work) with a pause of
        :data:`SWEEP_PAUSE` between batches: run in a thread of a worker (see the session
        guard), it never holds the interpreter, or a gevent worker's loop, for longer than
        one batch, whatever the number of sessions on disk.
        """
        now = time.time()
        with os.scandir(self.cache._path) as entries:
            batch, until = 0, time.monotonic() + SWEEP_SLICE
            for entry in entries:
                self._sweep_entry(entry, now)
                batch += 1
                if batch == SWEEP_BATCH or time.monotonic() >= until:  # a slow disk: a shorter batch
                    time.sleep(SWEEP_PAUSE)
                    batch, until = 0, time.monotonic() + SWEEP_SLICE

    def _sweep_entry(self, entry: os.DirEntry[str], now: float) -> None:
        """Remove ``entry`` if it is an expired entry or a stale temporary file."""
        try:
            if entry.name.endswith(self.cache._fs_transaction_suffix):  # lock files, markers, writes
                if entry.name.startswith(tempfile.gettempprefix()) and entry.stat().st_mtime < now - STALE_TEMPORARY:
                    os.remove(entry.path)
                return
            with open(entry.path, "rb") as f:
                head = f.read(4)
                identity = os.fstat(f.fileno()).st_ino
            expires = struct.unpack("I", head)[0] if len(head) == 4 else 0
            # Not the file a write renamed into place since it was read (a new entry).
            if expires != 0 and expires < now and os.stat(entry.path).st_ino == identity:
                os.remove(entry.path)
        except OSError:
            pass  # gone meanwhile, or unreadable: the next sweep looks again
