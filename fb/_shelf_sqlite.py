"""A shelf's name index on local disk: one SQLite database, ``<location>/names.db``.

The same records as `NameIndex` keeps in one file per name, in one table. A set costs one
row written to the database's write-ahead log instead of a new file (a new inode: 280-350 us
on the disks measured, against 13 us for the row), and a get of a name not read before one
indexed lookup instead of an open, a stat, a read and a JSON decode (4.9 against 11.3 us).

SQLite gives what the record files gave: a set replaces a name's row atomically, readers in
other processes see the old row or the new one, and a writer killed mid-commit leaves the
old one. It needs a local filesystem (its locks and the log's shared memory do not work
across hosts): a shelf on a network filesystem keeps record files (`fb._shelf_layout`).

Every thread has its own connection (readers never wait for a writer in WAL mode); a forked
child opens its own and never touches its parent's. Commits are not flushed one by one
(``synchronous=NORMAL``): `SqliteIndex.sync` is the durability barrier, as `Shelf.sync` is.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from ._shelf_index import TOUCH_AFTER, Record
from .backends import PreparedPath
from .backends._locations import sync_paths
from .backends._safety import kind_of
from .exceptions import UnsafeLocationError

__all__ = ["INDEX_FILE", "SqliteIndex"]

_log = logging.getLogger("fb")

INDEX_FILE = "names.db"
INDEX_FILES = (INDEX_FILE, f"{INDEX_FILE}-wal", f"{INDEX_FILE}-shm")
"""The database and the two files SQLite keeps beside it in WAL mode."""
BUSY_SECONDS = 60.0
"""How long a statement waits for another process's write to the database."""
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MAX_KNOWN = 1 << 17
"""Rows kept decoded (a few hundred bytes each) before starting over."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY NOT NULL,
    key BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    expire REAL,
    accessed REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
"""
_SELECT = "SELECT key, size, created, expire, accessed FROM names WHERE name = ?"
_SELECT_ALL = "SELECT name, key, size, created, expire, accessed FROM names"
_UPSERT = "INSERT OR REPLACE INTO names VALUES (?, ?, ?, ?, ?, ?)"
_TOUCH = "UPDATE names SET accessed = ? WHERE name = ? AND accessed < ?"


class SqliteIndex:
    """The records of a shelf's names in ``<location>/names.db`` (local disk).

    The interface of `NameIndex`: `read`, `write`, `remove`, `remove_if`, `scan`, `sync`.

    Raises:
        UnsafeLocationError: ``names.db`` (or a file SQLite keeps beside it) is a symbolic
            link or not a regular file.
        OSError: the database cannot be opened or is not one; the message names its path.

    Notes:
        Thread-safe; every method but `forget` does blocking I/O.
    """

    def __init__(self, root: PreparedPath) -> None:
        self.root = root
        self.path = f"{root.root}/{INDEX_FILE}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        """Each thread's connection; those of threads that ended are closed with the next."""
        self._pid = os.getpid()
        self._pending: dict[str, float] = {}
        """Access times of reads not written yet (written at most once a second)."""
        self._flushed = time.monotonic()
        self._rows: dict[str, tuple[tuple[Any, ...], Record | None]] = {}
        """The row last read of each name, and its record: an unchanged row is not decoded."""
        self._closed = False
        try:
            self._create()
        except BaseException:
            self.close()  # a connection opened before the failure is not left to the GC
            raise

    # -- connections -----------------------------------------------------------------------

    def _create(self) -> None:
        try:
            fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, 0o600
            )
        except FileExistsError:
            created = False
        except OSError as exc:
            raise self._unsafe_or(exc) from exc
        else:
            os.close(fd)
            created = True
        db = self._db()
        with self._errors():
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise OSError(errno.EIO, "SQLite refused its write-ahead log", self.path)
            db.executescript(_SCHEMA)
        if created:
            sync_paths({self.path, self.root.root})  # the new database survives a crash

    def _unsafe_or(self, exc: OSError) -> OSError:
        if exc.errno == errno.ELOOP:
            return UnsafeLocationError(
                errno.ELOOP, "a symbolic link where a shelf keeps its index", self.path
            )
        exc.filename = exc.filename or self.path
        return exc

    def _check_files(self) -> None:
        """Refuse links and odd files where the database and its log are (never followed)."""
        for name in INDEX_FILES:
            path = f"{self.root.root}/{name}"
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                raise UnsafeLocationError(
                    errno.EPERM, f"{kind_of(mode)} where a shelf keeps its index", path
                )

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (a new one in a forked child: never the parent's)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None and self._pid == os.getpid() and not self._closed:
            return db
        if self._closed:
            raise OSError(errno.EBADF, "the shelf's index is closed", self.path)
        if self._pid != os.getpid():
            # A forked child: the parent's connections are not to be used (nor closed) here.
            self._pid = os.getpid()
            self._connections = []
            self._lock = threading.Lock()
            self._local = threading.local()
        self._check_files()
        with self._errors():
            db = sqlite3.connect(
                self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                db.close()
                raise
        with self._lock:
            ended = [pair for pair in self._connections if not pair[0].is_alive()]
            self._connections = [p for p in self._connections if p[0].is_alive()]
            self._connections.append((threading.current_thread(), db))
        for _, old in ended:
            with contextlib.suppress(sqlite3.Error):
                old.close()
        self._local.db = db
        return db

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn an SQLite error into an OSError that names the database."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> OSError:
        code = errno.EBUSY if "locked" in str(exc) or "busy" in str(exc) else errno.EIO
        return OSError(code, f"shelf index: {exc}", self.path)

    def close(self) -> None:
        """Write pending access times and close this process's connections (idempotent)."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._flush()  # access times are a hint: a failure loses only them
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _, db in connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    # -- the index -------------------------------------------------------------------------

    def read(self, name: str, *, touch: bool = False) -> Record | None:
        """Return ``name``'s record, or None if it has none.

        Args:
            name: the name.
            touch: record the read as an access (when the last one is older than a second;
                written with others at most once a second, and before a `scan`).
        """
        db = self._db()
        try:
            row = db.execute(_SELECT, (name,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if row is None:
            return None
        known = self._rows.get(name)
        if known is not None and known[0] == row:
            record: Record | None = known[1]  # the row read last time: no decoding
        else:
            record = _record(name, row)
            if len(self._rows) >= _MAX_KNOWN:
                self._rows = {}
            self._rows[name] = (row, record)
        if record is not None and touch:
            now = time.time()
            if now - record.accessed > TOUCH_AFTER:
                with self._lock:
                    self._pending[name] = now
                    due = time.monotonic() - self._flushed > TOUCH_AFTER
                record = record.accessed_at(now)
                if due:
                    self._flush()
        return record

    def _flush(self) -> None:
        """Write the access times of reads since the last flush (one transaction)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed = time.monotonic()
        if not pending:
            return
        db = self._db()
        with self._errors():
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_TOUCH, [(when, name, when) for name, when in pending.items()])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def forget(self, name: str) -> None:
        """Nothing to forget: every `read` asks the database."""

    def write(self, record: Record) -> None:
        """Replace ``record.name``'s record whole (one statement, atomic)."""
        row = (
            record.key.bytes,
            record.size,
            record.created,
            record.expire,
            record.accessed or record.created,
        )
        db = self._db()
        with self._errors():
            db.execute(_UPSERT, (record.name, *row))
        with self._lock:
            self._pending.pop(record.name, None)
        self._rows[record.name] = (row, _record(record.name, row))

    def remove(self, name: str) -> None:
        """Delete ``name``'s record (absent: nothing happens)."""
        db = self._db()
        with self._errors():
            db.execute("DELETE FROM names WHERE name = ?", (name,))

    def remove_if(self, name: str, key: UUID) -> bool:
        """Delete ``name``'s record only if it still names blob ``key``; return whether it did."""
        db = self._db()
        with self._errors():
            cursor = db.execute("DELETE FROM names WHERE name = ? AND key = ?", (name, key.bytes))
        return cursor.rowcount > 0

    def scan(self) -> list[Record]:
        """Return every record (the access times of this process's reads written first)."""
        self._flush()
        db = self._db()
        with self._errors():
            rows = db.execute(_SELECT_ALL).fetchall()
        return [r for r in (_record(row[0], row[1:]) for row in rows) if r is not None]

    def sweep_temps(self, min_age: float = 3600.0) -> int:
        """Nothing to sweep: a killed writer leaves no temporary file (SQLite rolls back)."""
        return 0

    def sync(self) -> None:
        """Make durable every record written so far (one commit that syncs the log)."""
        self._flush()
        db = self._db()
        with self._errors():
            # In WAL mode a commit at synchronous=FULL syncs the log, and with it every
            # commit before it, of this connection or any other.
            db.execute("PRAGMA synchronous = FULL")
            try:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('synced', ?)", (time.time(),))
            finally:
                db.execute("PRAGMA synchronous = NORMAL")

    def __iter__(self) -> Iterator[Record]:
        return iter(self.scan())


def _record(name: str, row: tuple[Any, ...]) -> Record | None:
    key, size, created, expire, accessed = row
    try:
        return Record(
            name=name,
            key=UUID(bytes=bytes(key)),
            size=int(size),
            created=float(created),
            expire=None if expire is None else float(expire),
            accessed=max(float(accessed), float(created)),
        )
    except (TypeError, ValueError) as exc:
        _log.warning("fb: unreadable shelf index row of %r skipped (%s)", name, exc)
        return None
