"""DiskcacheStore: blobs as entries of a `diskcache.Cache`, for many small objects.

The ``diskcache://PATH`` backend, the crate's embedded small-object backend on Python's
embedded database. Each blob, framed by `fb.blobformat`, is one entry of a diskcache: its
SQLite index holds a blob under 32 KiB inline, and a larger one in a file of its own that
diskcache names. Storing a small blob costs one SQLite insert instead of a file create,
write, rename and (later) unlink; a large one costs about what `FBStore` does.

Persist locations are local directories, as for `FBStore`: the backend keeps a diskcache
database inside each (next to a marker, ``.fb-diskcache``). Persist and register are byte
copies between the two databases, never decoding; `fsync` checkpoints the persist
database's write-ahead log into its main file and syncs the value files' directories.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any, TypeVar
from uuid import UUID

import diskcache
from diskcache.core import DBNAME

from ..blobformat import BlobFormat, blob_not_found
from ..codecs import get_codec
from ..exceptions import ForeignLocationError, StoreLockedError
from ..typing import Codec
from ._diskcache_disk import Copy, Encode, open_cache
from ._prepared_path import PreparedPath

__all__ = ["DiskcacheStore", "diskcache_backend", "open_cache"]

T = TypeVar("T")

_log = logging.getLogger("fb")

PROTOCOL = "diskcache"
LOCK_NAME = ".fb-lock"
MARKER_NAME = ".fb-diskcache"
MARKER_TEXT = b"fb diskcache persist location, format 1\n"
FBSTORE_MARKER = ".fb-persist"
_DB_FILES = frozenset({DBNAME, f"{DBNAME}-wal", f"{DBNAME}-shm"})
_VALUE_DIR = re.compile(r"^[0-9a-f]{2}$")
_HEX_KEY = re.compile(r"^[0-9a-f]{32}$")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def _database_errors(where: str) -> Iterator[None]:
    """Re-raise SQLite's and diskcache's errors as the OSError they mean, naming ``where``.

    A full disk or a damaged database file is a storage failure, which fb reports as
    ``OSError`` with the path, like every backend.
    """
    try:
        yield
    except diskcache.Timeout as exc:
        raise TimeoutError(errno.ETIMEDOUT, f"the database stayed locked: {exc}", where) from exc
    except sqlite3.Error as exc:
        raise OSError(errno.EIO, f"{type(exc).__name__}: {exc}", where) from exc


def _local_root(path: PreparedPath | str | os.PathLike[str]) -> PreparedPath:
    if isinstance(path, PreparedPath):
        location = path
    else:
        target = os.fspath(path)
        if target.startswith(f"{PROTOCOL}://"):
            target = target[len(PROTOCOL) + 3 :]
        location = PreparedPath(target)
    if not location.is_local:
        raise ValueError(f"a diskcache lives in a local directory, not at {location.url}")
    return location


class DiskcacheStore(BlobFormat[T]):
    """A `Strategy` that keeps each blob as one entry of a diskcache in a local directory.

    A blob under 32 KiB lives inline in the SQLite index; a larger one is streamed into a
    file of its own, which becomes visible (its index row committed) only complete. The
    directory is owned by one store at a time (an advisory ``flock`` on ``.fb-lock``) and
    its entries, leftovers of an earlier owner, are swept when the store opens.

    Args:
        codec: a `Codec` or a codec name.
        path: ``diskcache://PATH``, a local path, or a local `PreparedPath`.
        secret_key: sign and check every blob (see `fb.backends.FBStore`).
        sweep: delete what an earlier owner left (default yes: the cache is temporary).

    Raises:
        StoreLockedError: another live store owns the directory.
        ForeignLocationError: the directory is a persist location (it has fb's marker).
        ValueError: ``path`` is not local.

    Notes:
        Thread-safe: diskcache gives each thread its own SQLite connection. Every method
        but `close` may block on disk I/O or on SQLite's lock (60 s at most).
    """

    def __init__(
        self,
        codec: Codec[T] | str,
        path: PreparedPath | str | os.PathLike[str],
        *,
        secret_key: bytes | str | None = None,
        sweep: bool | None = None,
    ) -> None:
        super().__init__(get_codec(codec), secret_key=secret_key)
        self.path = _local_root(path)
        self.path.prepare()
        for marker in (MARKER_NAME, FBSTORE_MARKER):
            # Opening sweeps the directory: a persist location must never be taken for a cache.
            if os.path.exists(f"{self.path.root}/{marker}"):
                raise ForeignLocationError(
                    f"{self.path.root} is a persist location ({marker}), not a cache directory"
                )
        self._lock = threading.Lock()
        self._lock_fd: int | None = self._acquire_lock()
        self._persisted: dict[str, diskcache.Cache] = {}
        try:
            if sweep is None or sweep:
                self.sweep()
            with _database_errors(self.url):
                self._cache = open_cache(self.path.root)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        signed = ", signed" if self.signed else ""
        return f"DiskcacheStore({self.codec!r}, {self.url!r}{signed})"

    @property
    def url(self) -> str:
        """``diskcache://`` and the cache directory."""
        return f"{PROTOCOL}://{self.path.root}"

    def _where(self, key: UUID) -> str:
        return f"{PROTOCOL}://{self.path.root}#{key.hex}"

    # -- ownership -------------------------------------------------------------------------

    def _acquire_lock(self) -> int:
        lock_path = f"{self.path.root}/{LOCK_NAME}"
        flags = os.O_RDWR | os.O_CREAT | _O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(lock_path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"diskcache directory {self.path.root} is owned by another live store "
                f"(lock file {lock_path}); close that store or use another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def sweep(self) -> int:
        """Delete the database and value files an earlier owner left; return the file count.

        Only diskcache's own names are touched (its database files and its two-level
        directories of ``.val`` files); anything else in the directory is left alone.
        """
        root = self.path.root
        removed = 0
        for name in os.listdir(root):
            path = f"{root}/{name}"
            if name in _DB_FILES:
                os.unlink(path)
                removed += 1
            elif _VALUE_DIR.match(name) and os.path.isdir(path) and not os.path.islink(path):
                # A link is never followed: it could point at anything on the machine.
                for parent, _dirs, files in os.walk(path, topdown=False, followlinks=False):
                    for file in files:
                        if file.endswith(".val"):
                            os.unlink(f"{parent}/{file}")
                            removed += 1
                    with contextlib.suppress(OSError):
                        os.rmdir(parent)
        if removed:
            _log.info("fb: swept %d leftover file(s) from %s", removed, root)
        return removed

    def close(self) -> None:
        """Close every thread's database connections and release the lock. Idempotent."""
        with self._lock:
            caches = [getattr(self, "_cache", None), *self._persisted.values()]
            self._persisted.clear()
            fd, self._lock_fd = self._lock_fd, None
        for cache in caches:
            if cache is not None:
                cache.close()
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    # -- blobs -----------------------------------------------------------------------------

    def store(self, key: UUID, value: T) -> int:
        """Encode ``value`` as blob ``key``, streamed; return the blob's size in bytes.

        Raises:
            CodecError: the codec failed; nothing is left behind.
            OSError: storage failed.
        """
        encode = Encode(self, key, value)
        with _database_errors(self.url):
            self._cache.set(key.hex, encode)
        return encode.size

    def load(self, key: UUID) -> T:
        """Check and decode blob ``key``.

        Raises:
            BlobNotFoundError: there is no blob ``key``.
            CorruptBlobError: the blob is damaged.
            CodecError: another codec wrote it, or the codec failed on intact bytes.
        """
        with _database_errors(self.url):
            found = self._cache.get(key.hex, read=True)
        if found is None:
            raise blob_not_found(key, self._where(key))
        if isinstance(found, bytes):
            return self.decode(key, found, where=self._where(key))
        with found:
            return self.read(key, found, where=self._where(key))

    def delete(self, key: UUID) -> None:
        """Delete blob ``key``; a missing blob is not an error."""
        with _database_errors(self.url):
            self._cache.delete(key.hex)

    def exists(self, key: UUID) -> bool:
        """Return whether blob ``key`` is in the cache."""
        with _database_errors(self.url):
            return key.hex in self._cache

    # -- durable locations -----------------------------------------------------------------

    def _check_location(self, location: PreparedPath) -> str:
        """Return the root of a local persist location that is not a cache; else raise."""
        if not location.is_local:
            raise ForeignLocationError(
                f"{location.url}: the diskcache backend persists into a local directory "
                "(it keeps a diskcache database there)"
            )
        root = location.root
        if root == self.path.root:
            raise ForeignLocationError(f"{location.url} is this store's cache; persist elsewhere")
        if not os.path.isdir(root):
            raise FileNotFoundError(errno.ENOENT, "persist location does not exist", root)
        if os.path.exists(f"{root}/{LOCK_NAME}"):
            raise ForeignLocationError(
                f"{root} is the cache directory of a store, not a persist location"
            )
        if os.path.exists(f"{root}/{FBSTORE_MARKER}"):
            raise ForeignLocationError(
                f"{root} is a persist location of the file backend (FBStore), not of diskcache"
            )
        return root

    def _persist_cache(self, root: str, *, create: bool) -> diskcache.Cache | None:
        with self._lock:
            cache = self._persisted.get(root)
        if cache is not None:
            return cache
        if not create and not os.path.exists(f"{root}/{DBNAME}"):
            return None
        with _database_errors(f"{PROTOCOL}://{root}"):
            cache = open_cache(root)
        with self._lock:
            if self._lock_fd is None:  # closed meanwhile
                cache.close()
                raise ValueError("the store is closed")
            kept = self._persisted.setdefault(root, cache)
        if kept is not cache:
            cache.close()  # another thread opened it first
        return kept

    def _claim(self, root: str) -> None:
        """Mark ``root`` as a diskcache persist location, refusing a directory in use."""
        marker = f"{root}/{MARKER_NAME}"
        if not os.path.exists(marker):
            foreign = sorted(
                name
                for name in os.listdir(root)
                if name not in _DB_FILES and not name.startswith(f"{MARKER_NAME}.")
            )
            if foreign:
                raise ForeignLocationError(
                    f"{root} is not empty ({len(foreign)} name(s) fb did not write, first: "
                    f"{foreign[0]}) and is not an fb persist location; persist into a new or "
                    "empty directory"
                )
            tmp = f"{marker}.{secrets.token_hex(4)}.tmp"
            with open(tmp, "xb") as file:
                file.write(MARKER_TEXT)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(tmp, marker)
            except FileExistsError:
                pass  # another persist claimed it first: its content is checked below
            finally:
                os.unlink(tmp)
        with open(marker, "rb") as file:
            if file.read(len(MARKER_TEXT) + 1) != MARKER_TEXT:
                raise ForeignLocationError(f"{marker} is a marker fb did not write; refusing")

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        """Return the keys persisted at ``location`` and the names there fb does not own.

        Raises:
            FileNotFoundError: the location does not exist.
            ForeignLocationError: the location is a cache (this store's or another's), an
                `FBStore` persist location, or not local.
        """
        root = self._check_location(location)
        keys: set[UUID] = set()
        unknown: list[str] = []
        cache = self._persist_cache(root, create=False)
        if cache is not None:
            with _database_errors(location.url):
                names = list(cache.iterkeys())
            for name in names:
                if isinstance(name, str) and _HEX_KEY.match(name):
                    keys.add(UUID(hex=name))
                else:
                    unknown.append(f"{DBNAME}#{name!r}")
        for name in os.listdir(root):
            if name in _DB_FILES or name == MARKER_NAME or name.startswith(f"{MARKER_NAME}."):
                continue
            if _VALUE_DIR.match(name) and os.path.isdir(f"{root}/{name}"):
                continue
            unknown.append(name)
        if unknown:
            _log.warning(
                "fb: %d name(s) at %s are not fb blobs and are left alone (first: %s)",
                len(unknown),
                location.url,
                sorted(unknown)[0],
            )
        return keys, sorted(unknown)

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        """Copy blob ``key`` into the persist database at ``location`` (idempotent).

        Returns:
            The database and the value file's directories, for `fsync`.

        Raises:
            BlobNotFoundError: the cache holds no blob ``key``.
            ForeignLocationError: the location is not a diskcache persist location.
        """
        root = self._check_location(location)
        self._claim(root)
        target = self._persist_cache(root, create=True)
        assert target is not None
        synced = [f"{root}/{DBNAME}", root]
        with _database_errors(location.url):
            if key.hex in target:
                return synced
            source = self._cache.get(key.hex, read=True)
            if source is None:
                raise blob_not_found(key, self._where(key))
            copy = Copy(source, durable=True)
            try:
                target.set(key.hex, copy)
            finally:
                if not isinstance(source, bytes):
                    source.close()
        if copy.path is not None:
            value_dir = os.path.dirname(copy.path)
            synced += [value_dir, os.path.dirname(value_dir)]
        return synced

    def register(self, key: UUID, location: PreparedPath) -> bool:
        """Copy blob ``key`` from ``location`` into the cache, undecoded; False if absent."""
        root = self._check_location(location)
        target = self._persist_cache(root, create=False)
        with _database_errors(location.url):
            source = None if target is None else target.get(key.hex, read=True)
            if source is None:
                return False
            try:
                if key.hex not in self._cache:
                    self._cache.set(key.hex, Copy(source, durable=False))
            finally:
                if not isinstance(source, bytes):
                    source.close()
        return True

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        """Delete blob ``key`` from ``location``; return the database, for `fsync`."""
        root = self._check_location(location)
        target = self._persist_cache(root, create=False)
        if target is not None:
            with _database_errors(location.url):
                target.delete(key.hex)
        return [f"{root}/{DBNAME}"]

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        """The durability barrier: checkpoint the persist database and sync directories.

        Value files were fsynced when they were copied. The checkpoint moves every
        committed row from the write-ahead log into the database file and syncs both.

        Raises:
            OSError: the checkpoint could not complete (another connection kept it busy).
        """
        root = location.root
        database = f"{root}/{DBNAME}"
        if os.path.exists(database):
            # A connection of its own, with synchronous=FULL: the checkpoint syncs the log
            # before, and the database after, copying (TRUNCATE then empties the log).
            with _database_errors(database):
                connection = sqlite3.connect(database, timeout=60, isolation_level=None)
                try:
                    connection.execute("PRAGMA synchronous = FULL")
                    busy, _log_frames, _done = connection.execute(
                        "PRAGMA wal_checkpoint(TRUNCATE)"
                    ).fetchone()
                finally:
                    connection.close()
            if busy:
                raise OSError(errno.EBUSY, "cannot checkpoint the persist database", database)
        for path in sorted((p for p in paths if p != database), key=len, reverse=True):
            try:
                fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
            except FileNotFoundError:
                continue  # deleted since: nothing to make durable
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def diskcache_backend(
    codec: Codec[Any] | str,
    path_or_url: PreparedPath | str | os.PathLike[str],
    /,
    *,
    secret_key: bytes | str | None = None,
    sweep: bool | None = None,
    **options: Any,
) -> DiskcacheStore[Any]:
    """The factory of ``diskcache://PATH``: a `DiskcacheStore` in the local directory PATH.

    Raises:
        TypeError: an option other than ``secret_key`` and ``sweep`` (storage options
            mean nothing to a local database).
    """
    if options:
        raise TypeError(f"the diskcache backend takes no storage options: {sorted(options)}")
    return DiskcacheStore(codec, path_or_url, secret_key=secret_key, sweep=sweep)
