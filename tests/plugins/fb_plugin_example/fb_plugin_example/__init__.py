"""An fb plugin to copy: `Rot13Codec` (str as rot13 UTF-8) and `SqliteStore` (blobs in SQLite).

Both are found by fb through the entry points declared in this distribution's
pyproject.toml: ``fb.codecs.get_codec("rot13")`` and ``fb.open_pool("exampledb:///some/dir")``.

`SqliteStore` is a complete database backend: it passes every suite of `fb.testing.backends`
(see ``tests/plugins/test_example_plugin.py``). Its cache and each persist location are
local directories, each holding one SQLite database, ``blobs.sqlite``, with one row per blob.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import IO, Any
from uuid import UUID

from fb.backends import PreparedPath
from fb.blobformat import BlobFormat, blob_not_found
from fb.codecs import get_codec
from fb.exceptions import ForeignLocationError
from fb.typing import Codec

__all__ = ["DB_NAME", "PROTOCOL", "Rot13Codec", "SqliteStore", "sqlite_backend"]

_SLICE = 1 << 20
PROTOCOL = "exampledb"
DB_NAME = "blobs.sqlite"
_DB_FILES = {DB_NAME, f"{DB_NAME}-journal"}


class Rot13Codec:
    """Stores a str as its rot13 in UTF-8: a toy that shows the codec interface.

    It streams: text goes out and comes back a slice at a time, so its UTF-8 is never held
    whole next to the string (the slices read back are joined into one string at the end).

    Notes:
        Stateless and thread-safe.
    """

    @property
    def name(self) -> str:
        """``"rot13"``: it goes into every blob header."""
        return "rot13"

    def dump(self, value: str, file: IO[bytes]) -> None:
        """Write ``value`` rot13-ed, as UTF-8."""
        if not isinstance(value, str):
            raise TypeError(f"Rot13Codec stores str, not {type(value).__name__}")
        for start in range(0, len(value), _SLICE):
            file.write(codecs.encode(value[start : start + _SLICE], "rot13").encode("utf-8"))

    def load(self, file: IO[bytes]) -> str:
        """Read the whole payload back into a str."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        pieces = []
        while chunk := file.read(_SLICE):
            pieces.append(codecs.decode(decoder.decode(chunk), "rot13"))
        pieces.append(decoder.decode(b"", final=True))
        return "".join(pieces)


class _Database:
    """One ``blobs.sqlite`` in a directory: a table of framed blobs by key (32 hex)."""

    def __init__(self, root: str, *, durable: bool) -> None:
        self.path = f"{root}/{DB_NAME}"
        # One connection behind a lock keeps the example short; a faster backend gives each
        # thread a connection of its own (WAL mode lets readers run beside one writer).
        self._connection = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=60
        )
        self._lock = threading.Lock()
        with self.cursor() as sql:
            # A persist database commits durably (synchronous FULL, the rollback journal):
            # each commit is on disk when it returns. A cache needs no durability.
            sql.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
            sql.execute("CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB)")

    @contextlib.contextmanager
    def cursor(self) -> Iterator[sqlite3.Cursor]:
        """Hold the lock and give a cursor; an SQLite error comes out as an OSError."""
        with self._lock:
            try:
                yield self._connection.cursor()
            except sqlite3.Error as exc:
                raise OSError(errno.EIO, f"{type(exc).__name__}: {exc}", self.path) from exc

    def get(self, key: UUID) -> bytes | None:
        with self.cursor() as sql:
            row = sql.execute("SELECT data FROM blobs WHERE key = ?", (key.hex,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: UUID, data: bytes) -> None:
        """Insert blob ``key``, once: blobs never change, so an existing row is kept."""
        with self.cursor() as sql:
            sql.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (key.hex, data))

    def delete(self, key: UUID) -> None:
        with self.cursor() as sql:
            sql.execute("DELETE FROM blobs WHERE key = ?", (key.hex,))

    def all_keys(self) -> list[str]:
        with self.cursor() as sql:
            return [row[0] for row in sql.execute("SELECT key FROM blobs")]

    def clear(self) -> None:
        with self.cursor() as sql:
            sql.execute("DELETE FROM blobs")

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class SqliteStore:
    """A `Strategy` keeping each blob as one row of an SQLite database in a local directory.

    Blobs are framed by `fb.blobformat.BlobFormat`, so they are checked on every load
    exactly as fb's own backends check theirs. The cache database is emptied on open (a
    cache is temporary). Persist locations are local directories too (fsspec paths, as fb
    gives them): each gets its own ``blobs.sqlite``; persist and register copy a row's bytes
    from one database to the other without decoding them.

    Args:
        codec: a codec or a codec name.
        path: ``exampledb://DIR``, a local directory, or a local `PreparedPath`.
        secret_key: sign and check every blob (fb.open_pool passes it to the factory).

    Notes:
        Thread-safe: each database serialises its statements behind a lock.
    """

    def __init__(
        self,
        codec: Codec[Any] | str,
        path: PreparedPath | str | os.PathLike[str],
        *,
        secret_key: bytes | str | None = None,
    ) -> None:
        self.codec: Codec[Any] = get_codec(codec)
        self.blobs: BlobFormat[Any] = BlobFormat(self.codec, secret_key=secret_key)
        if not isinstance(path, PreparedPath):
            path = PreparedPath(os.fspath(path).removeprefix(f"{PROTOCOL}://"))
        if not path.is_local:
            raise ValueError(f"SqliteStore keeps its database in a local directory: {path.url}")
        self.root = path.root
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._cache = _Database(self.root, durable=False)
        self._cache.clear()
        self._persisted: dict[str, _Database] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({self.codec!r}, {PROTOCOL}://{self.root!r})"

    def _where(self, key: UUID) -> str:
        return f"{PROTOCOL}://{self.root}#{key.hex}"

    def raw(self, key: UUID) -> bytes:
        """Return blob ``key`` as stored: fb's framing around the codec's bytes."""
        data = self._cache.get(key)
        if data is None:
            raise blob_not_found(key, self._where(key))
        return data

    # -- the cache tier --------------------------------------------------------------------

    def store(self, key: UUID, value: Any) -> int:
        """Frame and encode ``value`` and keep it as blob ``key``; return its size."""
        data = self.blobs.encode(key, value)  # a CodecError leaves no row behind
        self._cache.put(key, data)
        return len(data)

    def load(self, key: UUID) -> Any:
        """Check and decode blob ``key`` (BlobNotFoundError, CorruptBlobError, CodecError)."""
        return self.blobs.decode(key, self.raw(key), where=self._where(key))

    def delete(self, key: UUID) -> None:
        """Forget blob ``key``; a missing blob is not an error."""
        self._cache.delete(key)

    def close(self) -> None:
        """Close every database connection. Idempotent."""
        with self._lock:
            databases = [self._cache, *self._persisted.values()]
            self._persisted.clear()
        for database in databases:
            database.close()

    # -- durable locations -----------------------------------------------------------------

    def _database(self, location: PreparedPath) -> _Database:
        """Return the database of a persist location, refusing the cache itself."""
        if location.root == self.root:
            raise ForeignLocationError(f"{location.url} is this store's cache; persist elsewhere")
        if not location.is_local:
            raise ForeignLocationError(f"{location.url}: SqliteStore persists to local dirs")
        if not os.path.isdir(location.root):
            raise FileNotFoundError(errno.ENOENT, "persist location does not exist", location.root)
        with self._lock:
            database = self._persisted.get(location.root)
            if database is None:
                database = self._persisted[location.root] = _Database(location.root, durable=True)
            return database

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        """Return the keys persisted at ``location`` and the other names in its directory."""
        database = self._database(location)
        keys = {UUID(hex=key) for key in database.all_keys()}
        unknown = sorted(set(os.listdir(location.root)) - _DB_FILES)
        return keys, unknown

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        """Copy blob ``key`` into the database at ``location`` (idempotent)."""
        database = self._database(location)
        database.put(key, self.raw(key))
        return [location.root]  # the directory that holds the database, for fsync

    def register(self, key: UUID, location: PreparedPath) -> bool:
        """Copy blob ``key`` from ``location`` into the cache; False if it is not there."""
        data = self._database(location).get(key)
        if data is None:
            return False
        self._cache.put(key, data)
        return True

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        """Delete blob ``key`` from ``location``."""
        self._database(location).delete(key)
        return []

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        """Sync the directories that hold new databases (each commit is durable already)."""
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def sqlite_backend(
    codec: Codec[Any] | str,
    path_or_url: PreparedPath | str | os.PathLike[str],
    /,
    *,
    secret_key: bytes | str | None = None,
    **options: Any,
) -> SqliteStore:
    """The ``fb.backends`` entry point: a `SqliteStore` for ``exampledb://DIR``.

    `fb.open_pool` calls it as ``factory(codec, url, secret_key=…, **storage_options)``,
    passing ``secret_key`` only when one was given.
    """
    if options:
        raise TypeError(f"SqliteStore takes no storage options, not {sorted(options)}")
    return SqliteStore(codec, path_or_url, secret_key=secret_key)
