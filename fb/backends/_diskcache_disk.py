"""How the ``diskcache://`` backend puts blobs into a `diskcache.Cache` (its `diskcache.Disk`).

diskcache pickles values by default; fb's blobs are framed bytes already, and a large one
must stream to its file rather than be built whole in memory. `_BlobDisk` takes two kinds of
value: `Encode` (a value to encode as a blob, streamed) and `Copy` (a blob's bytes, or a
file of them, copied from another cache, fsynced when it must be durable). A blob under
diskcache's ``min_file_size`` (32 KiB) goes inline into the SQLite row; a larger one into a
file of its own, which is removed if the encode fails, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import threading
from typing import IO, Any
from uuid import UUID

import diskcache
from diskcache.core import DBNAME, MODE_BINARY, MODE_RAW, UNKNOWN

from ..blobformat import BlobFormat

__all__ = ["SETTINGS", "Copy", "Encode", "open_cache"]

SETTINGS: dict[str, Any] = {
    # A blob must never be dropped behind the pool's back: no eviction, no size limit.
    "eviction_policy": "none",
    "size_limit": 2**62,
    "cull_limit": 0,
    "statistics": 0,
    "tag_index": 0,
    # WAL with NORMAL sync: a commit is atomic at once and durable at the next checkpoint,
    # which the backend's fsync forces; the cache tier never needs durability.
    "sqlite_journal_mode": "wal",
    "sqlite_synchronous": 1,
}


class Encode:
    """A value on its way into the cache: `_BlobDisk` streams its blob into place."""

    __slots__ = ("blobs", "key", "size", "value")

    def __init__(self, blobs: BlobFormat[Any], key: UUID, value: Any) -> None:
        self.blobs = blobs
        self.key = key
        self.value = value
        self.size = 0


class Copy:
    """Raw blob bytes (or a file of them) to copy into a cache, fsynced when ``durable``."""

    __slots__ = ("durable", "path", "source")

    def __init__(self, source: bytes | IO[bytes], *, durable: bool) -> None:
        self.source = source
        self.durable = durable
        self.path: str | None = None


class _Spill(io.RawIOBase):
    """A sink that buffers a blob in memory and moves to a file once it is too large inline."""

    def __init__(self, disk: _BlobDisk, key: Any) -> None:
        super().__init__()
        self._disk = disk
        self._key = key
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None
        self.filename: str | None = None
        self.path: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._file is None:
            if len(self._buffer) + view.nbytes < self._disk.min_file_size:
                self._buffer += view
                return view.nbytes
            self.filename, self.path = self._disk.filename(self._key)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed in finish/discard
            self._file.write(self._buffer)
            self._buffer = bytearray()
        self._file.write(view)
        return view.nbytes

    def finish(self, *, durable: bool) -> tuple[int, int, str | None, Any]:
        """Return diskcache's (size, mode, filename, value) for what was written."""
        if self._file is None:
            return 0, MODE_RAW, None, sqlite3.Binary(bytes(self._buffer))
        file, self._file = self._file, None
        with file:
            if durable:
                file.flush()
                os.fsync(file.fileno())
            size = file.tell()
        return size, MODE_BINARY, self.filename, None

    def discard(self) -> None:
        """Remove a partial file (a failed encode must leave nothing behind)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class _BlobDisk(diskcache.Disk):  # type: ignore[misc]
    """A `diskcache.Disk` that streams fb blobs into place instead of pickling values."""

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        kind = type(value)
        if kind is not Encode and kind is not Copy:
            return super().store(value, read, key=key)  # type: ignore[no-any-return]
        sink = _Spill(self, key)
        try:
            if kind is Encode:
                value.size = value.blobs.write(value.key, value.value, sink)
                return sink.finish(durable=False)
            source = value.source
            if isinstance(source, bytes):
                sink.write(source)
            else:
                while chunk := source.read(1 << 22):
                    sink.write(chunk)
            result = sink.finish(durable=value.durable)
        except BaseException:
            sink.discard()
            raise
        value.path = sink.path
        return result


class _Cache(diskcache.Cache):  # type: ignore[misc]
    """A `diskcache.Cache` whose `close` closes the connections of every thread.

    diskcache opens one SQLite connection per thread, and its `close` closes only the
    calling thread's: those of fb's worker threads were left to the garbage collector,
    which holds the database files open until it runs (and Python 3.13 warns about each,
    ``ResourceWarning: unclosed database``). A connection is bound to its thread unless
    made with ``check_same_thread=False``, so this class makes them (one per thread still:
    diskcache keeps it in its thread-local ``_local``) and records them, as diskcache's
    ``_con`` would otherwise do.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._opened: list[sqlite3.Connection] = []
        self._opened_pid = os.getpid()
        self._opened_lock = threading.Lock()
        self._closes = 0
        """How many times `close` ran: a thread's connection from before is closed."""
        super().__init__(*args, **kwargs)

    @property
    def _con(self) -> sqlite3.Connection:
        local = self._local
        pid = os.getpid()
        con: sqlite3.Connection | None = getattr(local, "con", None)
        if con is not None and getattr(local, "pid", None) == pid:
            if getattr(local, "closes", 0) == self._closes:
                return con
            con = None  # closed by `close` in another thread: connect again, as diskcache does
        if con is not None:
            # Inherited over fork(): diskcache closes it (the child never uses the parent's).
            with contextlib.suppress(sqlite3.Error):
                con.close()
        con = sqlite3.connect(
            os.path.join(self.directory, DBNAME),
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        with self._opened_lock:
            if self._opened_pid != pid:
                self._opened, self._opened_pid = [], pid  # the parent's are not the child's
            self._opened.append(con)
        local.con, local.pid, local.closes = con, pid, self._closes
        # Per-connection pragmas, from diskcache's Settings table (absent in a new cache:
        # diskcache's __init__ creates it and sets them).
        try:
            settings = con.execute("SELECT key, value FROM Settings").fetchall()
        except sqlite3.OperationalError:
            settings = []
        for key, value in settings:
            if key.startswith("sqlite_"):
                self.reset(key, value, update=False)
        return con

    def close(self) -> None:
        """Close the connection of every thread of this process (idempotent)."""
        with self._opened_lock:
            opened = self._opened if self._opened_pid == os.getpid() else []
            self._opened = []
            self._closes += 1
        for con in opened:
            with contextlib.suppress(sqlite3.Error):
                con.close()
        with contextlib.suppress(AttributeError):
            del self._local.con


def open_cache(directory: str) -> diskcache.Cache:
    """Open (or create) the diskcache at ``directory`` with the settings fb's blobs need."""
    return _Cache(directory, disk=_BlobDisk, **SETTINGS)
