"""A shelf's name index: one small object per name, mapping it to the key of its blob.

The records live in ``<location>/names/`` (the layout is in ``_shelf_layout.py``). A name
never becomes a path: its record is stored under the SHA-256 of its UTF-8 bytes, so
``../../etc/passwd`` is as harmless a name as any other. A record is replaced whole: on local
disk it is written under a temporary name and renamed over the old one, on an object store it
is one PUT. Concurrent writers of one name: the last rename (or PUT) wins, and a reader sees
the old record or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import attrs

from .backends import PreparedPath
from .backends._locations import remote_errors, sync_paths
from .exceptions import InvalidKeyError

__all__ = ["NameIndex", "Record", "check_name", "name_digest"]

_log = logging.getLogger("fb")

NAMES_DIR = "names"
MAX_NAME_BYTES = 4096
TOUCH_AFTER = 1.0
"""A read records itself as an access (a utime, ~15 us) only on a record older than this."""
TOUCH_AFTER_NS = int(TOUCH_AFTER * 1e9)
_MAX_KNOWN = 1 << 17
"""Records kept known by file identity (a few hundred bytes each) before starting over."""
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_COARSE = 1_000_000
"""A record whose mtime is a whole number of milliseconds is read again on every get, never
known by its stat: the filesystem may store coarse times (whole seconds on some), and two
records of one name written within one tick in a reused inode would look alike."""
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def check_name(name: object) -> str:
    """Return ``name`` if it can name a shelf entry.

    Raises:
        TypeError: ``name`` is not a string.
        InvalidKeyError: an empty name, one longer than 4096 bytes in UTF-8, or one that
            cannot be encoded (a lone surrogate).
    """
    if not isinstance(name, str):
        raise TypeError(f"shelf names are strings, not {type(name).__name__}")
    if not name:
        raise InvalidKeyError("a shelf name cannot be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"shelf name {name!r} is not valid Unicode") from exc
    if size > MAX_NAME_BYTES:
        raise InvalidKeyError(f"shelf name {name[:40]!r}... is {size} bytes (at most 4096)")
    return name


def name_digest(name: str) -> str:
    """Return the file name of ``name``'s record: the SHA-256 of its UTF-8 bytes, in hex."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


@attrs.frozen(kw_only=True)
class Record:
    """What the index holds for one name.

    Attributes:
        name: the name.
        key: the blob's key.
        size: the blob's size in bytes.
        created: when it was set (seconds since the epoch).
        expire: when it expires (seconds since the epoch), or None.
        accessed: when it was last read or set, as far as storage tells.
    """

    name: str
    key: UUID
    size: int
    created: float
    expire: float | None = None
    accessed: float = 0.0

    def accessed_at(self, when: float) -> Record:
        """Return this record as accessed at ``when`` (cheaper than `attrs.evolve`)."""
        return Record(
            name=self.name,
            key=self.key,
            size=self.size,
            created=self.created,
            expire=self.expire,
            accessed=max(when, self.created),
        )

    def expired(self, now: float) -> bool:
        """Return whether the record has expired at ``now``."""
        return self.expire is not None and now >= self.expire

    def encode(self) -> bytes:
        """Return the record as stored."""
        data = {
            "format": 1,
            "name": self.name,
            "key": self.key.hex,
            "size": self.size,
            "created": self.created,
            "expire": self.expire,
        }
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, accessed: float) -> Record | None:
        """Return the record in ``data``, or None if it is not one (logged)."""
        try:
            # json's scanner on the text: json.loads would guess the bytes' encoding first,
            # half the cost of a record on a cold get (records are ASCII, see `encode`).
            text = data.decode("ascii")
            raw, end = _SCAN(text, 0)
            if end != len(text) or not isinstance(raw, dict):
                raise ValueError("not a JSON object alone")
            return cls(
                name=str(raw["name"]),
                key=UUID(hex=raw["key"]),
                size=int(raw["size"]),
                created=float(raw["created"]),
                expire=None if raw["expire"] is None else float(raw["expire"]),
                accessed=max(accessed, float(raw["created"])),
            )
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            # A record torn by a power loss before `Shelf.sync`: the name is lost, not garbage.
            _log.warning("fb: unreadable shelf record skipped (%s)", exc)
            return None


class NameIndex:
    """The records of a shelf's names, on local disk or any fsspec filesystem.

    Notes:
        Thread-safe. Every method but the constructor does blocking I/O.
    """

    def __init__(self, root: PreparedPath) -> None:
        self.root = root
        self.dir = f"{root.root}/{NAMES_DIR}"
        self.local = root.is_local
        # Records read by `scan`, by file identity: a scan re-reads only what changed.
        self._seen: dict[str, tuple[Any, Record | None]] = {}
        self._unsynced: set[str] = set()
        self._sync_lock = threading.Lock()  # a path added while sync swaps is never lost

    def sweep_temps(self, min_age: float = 3600.0) -> int:
        """Delete record temporaries older than ``min_age`` seconds (local disk); return how many.

        A writer killed between writing a record and renaming it leaves one; a younger one
        may be a write in progress.
        """
        if not self.local:
            return 0
        removed = 0
        now = time.time()
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat(follow_symlinks=False).st_mtime >= min_age:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def _unsynced_add(self, path: str) -> None:
        with self._sync_lock:
            self._unsynced.add(path)

    def path(self, name: str) -> str:
        """Return where ``name``'s record lives."""
        return f"{self.dir}/{name_digest(name)}"

    def read(self, name: str, *, touch: bool = False) -> Record | None:
        """Return ``name``'s record, or None if it has none.

        Args:
            name: the name.
            touch: record the read as an access (local disk: the record's mtime, when it is
                older than a second).
        """
        path = self.path(name)
        if self.local:
            return self._read_local(name, path, touch)
        with remote_errors(self.root.fs.unstrip_protocol(path)):
            try:
                data = self.root.fs.cat_file(path)
            except FileNotFoundError:
                return None
        record = Record.decode(data, 0.0)
        if record is not None and record.name != name:
            return None  # not this name's record (a file put there by hand)
        return record

    def _read_local(self, name: str, path: str, touch: bool) -> Record | None:
        # One stat tells whether the record is the one read last time (same inode, size and
        # mtime to the nanosecond, which every write sets exactly): then it is not read again.
        known = self._seen.get(path)
        if known is not None:
            try:
                stat = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                self._seen.pop(path, None)
                return None
            ident = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if known is not None and known[0] == ident and ident[1] % _COARSE:
            record = known[1]
        else:  # a name not read before costs no stat: the fstat below gives its identity
            try:
                fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return None  # a link is no record fb wrote, and is never followed
                raise
            try:
                stat = os.fstat(fd)
                data = os.read(fd, stat.st_size + 1)
                while len(data) > stat.st_size and (chunk := os.read(fd, 65536)):
                    data += chunk  # grew since the fstat: not a record fb wrote
            finally:
                os.close(fd)
            ident = (stat.st_ino, stat.st_mtime_ns, len(data))
            record = Record.decode(data, stat.st_mtime)
            if record is not None and record.name != name:
                record = None  # not this name's record (a file put there by hand)
            self._remember(path, ident, record)
        if record is not None and touch:
            now = time.time_ns()
            if now - ident[1] > TOUCH_AFTER_NS:
                # By path: a record renamed over meanwhile gets the access (harmless). The
                # mtime set is exact, so the record stays known.
                with contextlib.suppress(OSError):
                    os.utime(path, ns=(now, now), follow_symlinks=False)
                    record = record.accessed_at(now / 1e9)
                    self._remember(path, (ident[0], now, ident[2]), record)
        return record

    def _remember(self, path: str, ident: Any, record: Record | None) -> None:
        if len(self._seen) >= _MAX_KNOWN:
            self._seen = {}  # names read once and never again: start over
        self._seen[path] = (ident, record)

    def forget(self, name: str) -> None:
        """Forget ``name``'s record as last read: the next `read` reads it from storage."""
        self._seen.pop(self.path(name), None)

    def write(self, record: Record) -> None:
        """Replace ``record.name``'s record whole (temporary name + rename, or one PUT)."""
        path = self.path(record.name)
        data = record.encode()
        if self.local:
            tmp = f"{self.dir}/.{name_digest(record.name)}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    # An exact mtime, after the last write: two records of one name never
                    # look alike to a stat (`read`), even where the kernel's own timestamps
                    # are coarse (a jiffy) and the filesystem reuses the inode.
                    now = time.time_ns()
                    with contextlib.suppress(OSError):
                        os.utime(fd, ns=(now, now))
                    written = os.fstat(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._unsynced_add(path)
            ident = (written.st_ino, written.st_mtime_ns, len(data))
            self._remember(path, ident, record.accessed_at(written.st_mtime))
        else:
            with remote_errors(self.root.fs.unstrip_protocol(path)):
                self.root.fs.pipe_file(path, data)

    def remove(self, name: str) -> None:
        """Delete ``name``'s record (absent: nothing happens)."""
        path = self.path(name)
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._unsynced_add(self.dir)
        else:
            with remote_errors(path), contextlib.suppress(FileNotFoundError):
                self.root.fs.rm_file(path)

    def remove_if(self, name: str, key: UUID) -> bool:
        """Delete ``name``'s record only if it still names blob ``key``; return whether it did.

        On local disk this is exact: the record is renamed aside (atomic), checked, and put
        back with a link (which never overwrites a newer record) if it changed meanwhile. On an
        object store a set racing with this may be lost (there is no conditional delete).
        """
        path = self.path(name)
        if not self.local:
            record = self.read(name)
            if record is None or record.key != key:
                return False
            self.remove(name)
            return True
        aside = f"{self.dir}/.{name_digest(name)}.{secrets.token_hex(4)}.tmp"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside, "rb") as file:
                record = Record.decode(file.read(), 0.0)
            if record is not None and record.key != key:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)  # a newer record won meanwhile: keep that one
                return False
            self._unsynced_add(self.dir)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(aside)

    def scan(self) -> list[Record]:
        """Return every record (one listing; only new or changed records are read)."""
        records: list[Record] = []
        seen: dict[str, tuple[Any, Record | None]] = {}
        if self.local:
            with os.scandir(self.dir) as entries:
                listing = [(e.path, e.stat()) for e in entries if not e.name.startswith(".")]
            for path, stat in listing:
                ident: Any = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                old = self._seen.get(path)
                if old is not None and old[0] == ident:
                    record = old[1]
                else:
                    try:
                        with open(path, "rb") as file:
                            record = Record.decode(file.read(), stat.st_mtime)
                    except FileNotFoundError:
                        continue
                seen[path] = (ident, record)
                if record is not None:
                    records.append(record)
        else:
            fs = self.root.fs
            with remote_errors(self.root.url):
                fs.invalidate_cache(self.dir)
                try:
                    found = fs.find(self.dir, detail=True)
                except FileNotFoundError:
                    found = {}
                fresh = {}
                for path, info in found.items():
                    ident = (info.get("ETag") or info.get("etag"), info.get("size"))
                    old = self._seen.get(path)
                    if old is not None and old[0] == ident:
                        seen[path] = old
                    else:
                        fresh[path] = (ident, _mtime(info))
                data = fs.cat(list(fresh), on_error="omit") if fresh else {}
            for path, (ident, mtime) in fresh.items():
                if path in data:
                    seen[path] = (ident, Record.decode(data[path], mtime))
            records = [record for _, record in seen.values() if record is not None]
        self._seen = seen
        return records

    def sync(self) -> None:
        """Make durable the records written and directory entries changed since the last call."""
        if not self.local:
            return
        with self._sync_lock:
            paths, self._unsynced = self._unsynced, set()
        paths.add(self.dir)
        try:
            sync_paths(paths)
        except BaseException:
            with self._sync_lock:
                self._unsynced |= paths
            raise

    def close(self) -> None:
        """Nothing to release: every method opens what it uses and closes it."""

    def __iter__(self) -> Iterator[Record]:
        return iter(self.scan())


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("LastModified") or info.get("mtime") or info.get("created")
    if value is None:
        return 0.0
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
