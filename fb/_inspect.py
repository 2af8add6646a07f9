"""Reading fb's locations without a store: listings, locks, and blob checks (re-exported).

The ``fb`` command line (``ls``, ``inspect``, ``du``, ``verify``, ``gc``) is built on these
functions. They read blobs as bytes and never hand a payload to a codec, so inspecting a
location that others can write never unpickles anything. Every record is frozen. The blob
checks live in ``_inspect_blobs.py``, the clean-up plans in ``_gc.py``.

A location holds three kinds of names fb owns, in the layout `fb.backends.FBStore` writes:
blobs ``xx/<32 hex>`` (``xx`` the key's first two digits), temporary files
``xx/.<32 hex>.<hex>.tmp`` of writes in progress (or of writers that crashed), and at the top
either a cache directory's lock file and its segment files ``seg-<pid>-<slot size>.fbseg``
(small blobs, each in a slot after a slot head; see `fb.backends._segments`), the leases of
a store on a non-local filesystem (``.fb-lease.<16 hex>``, see `fb.backends._lease`), or a
persist location's marker. Every other name is foreign: it is reported, and nothing here
ever deletes it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from typing import Any, Literal
from uuid import UUID

import attrs

from ._inspect_blobs import BlobInfo, Usage, check_blob, read_blob_header, usage
from ._persist import parse_key
from .backends._fbstore import _BLOB_NAME, _TEMP_NAME, LOCK_NAME
from .backends._lease import LEASE_NAME
from .backends._locations import MARKER_NAME, MARKER_TEXT, remote_errors
from .backends._prepared_path import SHARDS, PreparedPath
from .backends._safety import open_regular
from .backends._segments import SEGMENT_NAME, SLOT_HEAD, parse_slot_head
from .exceptions import UnsafeLocationError

__all__ = [
    "BlobInfo",
    "Listing",
    "StoredFile",
    "Usage",
    "check_blob",
    "find_blob",
    "hold_lock",
    "list_location",
    "lock_owner",
    "read_blob_header",
    "usage",
]

Kind = Literal["cache", "persist", "unknown"]

_SESSION = re.compile(r"^fb-(?:dask-)?[0-9a-f]{32}$")
"""A session prefix of `fb.open_pool` or, on an object store, of the Dask buffer."""
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@attrs.frozen(kw_only=True)
class StoredFile:
    """One file at a location.

    Attributes:
        name: its name relative to the location's root, ``/``-separated.
        path: its path inside the location's filesystem.
        size: its size in bytes.
        mtime: when it was last modified (seconds since the epoch), if the filesystem says.
        offset: for a blob in a segment file, where its bytes start in that file (``path``);
            its name is then ``<segment file>/<32 hex>``. None for a file of its own.
    """

    name: str
    path: str
    size: int
    mtime: float | None
    offset: int | None = None

    @property
    def shard(self) -> str:
        """The first component of the name (a shard, for blobs and temporary files)."""
        return self.name.partition("/")[0]

    @property
    def key(self) -> str:
        """The 32-hex key a blob or temporary file belongs to."""
        base = self.name.rpartition("/")[2]
        return base if _BLOB_NAME.match(base) else base[1:33]


@attrs.frozen(kw_only=True)
class Listing:
    """What a location holds, sorted by name.

    Attributes:
        url: the location.
        local: whether it is on the local filesystem (only there can a lock be checked).
        blobs: files named like blobs, in their shards.
        temp_files: temporary files of writes, in their shards.
        foreign: every name fb does not own (never touched).
        lock_file: whether the cache directory's lock file is there.
        marker: whether the persist marker fb writes is there.
        leases: the leases of stores using the location (not on local disk, where the
            lock file serves).
        segments: a cache directory's segment files (their blobs are in ``blobs``).
    """

    url: str
    local: bool
    blobs: tuple[StoredFile, ...]
    temp_files: tuple[StoredFile, ...]
    foreign: tuple[StoredFile, ...]
    lock_file: bool
    marker: bool
    leases: tuple[StoredFile, ...] = ()
    segments: tuple[StoredFile, ...] = ()

    @property
    def kind(self) -> Kind:
        """``cache`` (a lock file or leases), ``persist`` (fb's marker) or ``unknown``."""
        if self.lock_file or (self.leases and not (self.local or self.marker)):
            return "cache"
        return "persist" if self.marker else "unknown"

    @property
    def blob_bytes(self) -> int:
        """The total size of the blobs."""
        return sum(blob.size for blob in self.blobs)

    @property
    def sessions(self) -> tuple[str, ...]:
        """Prefixes ``fb-<32 hex>`` below the root, each a location of its own.

        `fb.open_pool` makes one per pool on an object store (the Dask buffer's are
        ``fb-dask-<32 hex>``); their names count as foreign.
        """
        tops = {file.name.partition("/")[0] for file in self.foreign if "/" in file.name}
        return tuple(sorted(top for top in tops if _SESSION.match(top)))


# -- listing ---------------------------------------------------------------------------------


def _mtime(info: dict[str, Any]) -> float | None:
    for field in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(field)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _walk_error(exc: OSError) -> None:
    # os.walk skips a directory it cannot read unless told otherwise: a listing that silently
    # misses a shard would let verify call a location sound that it never read.
    if not isinstance(exc, FileNotFoundError):  # a directory removed meanwhile is just gone
        raise exc


def _walk_local(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        # os.walk does not descend into symbolic links to directories; report them as names.
        names = sorted(filenames + [d for d in dirnames if os.path.islink(f"{dirpath}/{d}")])
        for name in names:
            path = f"{dirpath}/{name}"
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # deleted since the directory was read (a live store's blob)
            yield prefix + name, path, st


def _classify(rel: str, *, regular: bool) -> str:
    """Return ``blob``, ``temp``, ``lock``, ``lease``, ``marker`` or ``foreign`` for a name."""
    if not regular:
        return "foreign"  # fb never writes links or special files
    shard, sep, base = rel.partition("/")
    if not sep:
        if LEASE_NAME.match(rel):
            return "lease"
        if SEGMENT_NAME.match(rel):
            return "segment"
        return {LOCK_NAME: "lock", MARKER_NAME: "marker"}.get(rel, "foreign")
    if shard not in SHARDS or "/" in base:
        return "foreign"
    if _BLOB_NAME.match(base) and base.startswith(shard):
        return "blob"
    if _TEMP_NAME.match(base) and base[1:3] == shard:
        return "temp"
    return "foreign"


def _read_marker(location: PreparedPath, path: str) -> bytes:
    if location.is_local:
        with open(open_regular(path), "rb") as file:  # no link followed, no FIFO waited on
            return file.read(len(MARKER_TEXT) + 1)
    with remote_errors(location.url):
        data: bytes = location.fs.cat_file(path)
    return data


def _check_local_root(root: str) -> None:
    if not os.path.isdir(root):
        if os.path.lexists(root):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory, so not an fb location", root)
        raise FileNotFoundError(errno.ENOENT, "location does not exist", root)


def list_location(location: PreparedPath) -> Listing:
    """List every file at ``location`` and sort the names fb owns from the others.

    Raises:
        FileNotFoundError: the location (or its bucket) does not exist.
        NotADirectoryError: the location is a file.
        OSError: the location cannot be read; the message names it.
    """
    root = location.root
    groups: dict[str, list[StoredFile]] = {"blob": [], "temp": [], "foreign": []}
    if location.is_local:
        _check_local_root(root)
        for rel, path, st in _walk_local(root):
            file = StoredFile(name=rel, path=path, size=st.st_size, mtime=st.st_mtime)
            groups.setdefault(_classify(rel, regular=stat.S_ISREG(st.st_mode)), []).append(file)
    else:
        fs = location.fs
        with remote_errors(location.url):
            fs.invalidate_cache(root)
            if location.is_object_store:
                location.check_bucket()
            elif not fs.exists(root):
                raise FileNotFoundError(errno.ENOENT, "location does not exist", location.url)
            elif not fs.isdir(root):
                raise NotADirectoryError(
                    errno.ENOTDIR, "not a directory, so not an fb location", location.url
                )
            entries: dict[str, dict[str, Any]] = fs.find(root, detail=True)
        prefix = root.rstrip("/") + "/"
        for path, info in sorted(entries.items()):
            if not path.startswith(prefix) or info.get("type") == "directory":
                continue
            rel = path[len(prefix) :]
            file = StoredFile(
                name=rel, path=path, size=int(info.get("size") or 0), mtime=_mtime(info)
            )
            groups.setdefault(_classify(rel, regular=True), []).append(file)
    for segment in groups.get("segment", ()):
        groups["blob"] += _segment_blobs(segment)
    marker = False
    if "marker" in groups:
        marker_file = groups["marker"][0]
        marker = _read_marker(location, marker_file.path) == MARKER_TEXT
        if not marker:
            groups["foreign"].append(marker_file)  # someone else's marker: not fb's name
    return Listing(
        url=location.url,
        local=location.is_local,
        blobs=tuple(groups["blob"]),
        temp_files=tuple(groups["temp"]),
        foreign=tuple(sorted(groups["foreign"], key=lambda file: file.name)),
        lock_file="lock" in groups,
        marker=marker,
        leases=tuple(groups.get("lease", ())),
        segments=tuple(groups.get("segment", ())),
    )


def _segment_blobs(segment: StoredFile) -> list[StoredFile]:
    """The live blobs of a segment file: every slot whose head is fb's (free slots are zero)."""
    match = SEGMENT_NAME.match(segment.name)
    slot = int(match.group(2)) if match else 0
    if slot <= SLOT_HEAD.size:
        return []
    found: list[StoredFile] = []
    try:
        fd = open_regular(segment.path)
    except (FileNotFoundError, IsADirectoryError):
        return []  # deleted since it was listed (its store closed), or not a file of fb's
    try:
        size = os.fstat(fd).st_size
        for start in range(0, size - SLOT_HEAD.size + 1, slot):
            head = parse_slot_head(os.pread(fd, SLOT_HEAD.size, start))
            if head is None:
                continue
            key, length = head
            found.append(
                StoredFile(
                    name=f"{segment.name}/{key.hex}",
                    path=segment.path,
                    size=length,
                    mtime=segment.mtime,
                    offset=start + SLOT_HEAD.size,
                )
            )
    finally:
        os.close(fd)
    return found


def find_blob(location: PreparedPath, key: UUID | str) -> StoredFile | None:
    """Return blob ``key`` of ``location`` without listing the location, or None.

    Raises:
        InvalidKeyError: ``key`` is not a key.
        FileNotFoundError: a local location that does not exist.
        NotADirectoryError: a local location that is a file.
    """
    hexkey = parse_key(key).hex
    name = f"{hexkey[:2]}/{hexkey}"
    path = f"{location.root}/{name}"
    if location.is_local:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            _check_local_root(location.root)  # no blob, or no location at all?
            return _find_in_segments(location.root, hexkey)
        if not stat.S_ISREG(st.st_mode):
            return None
        return StoredFile(name=name, path=path, size=st.st_size, mtime=st.st_mtime)
    with remote_errors(location.url):
        try:
            info: dict[str, Any] = location.fs.info(path)
        except FileNotFoundError:
            return None
    if info.get("type") == "directory":
        return None
    return StoredFile(name=name, path=path, size=int(info.get("size") or 0), mtime=_mtime(info))


def _find_in_segments(root: str, hexkey: str) -> StoredFile | None:
    """Blob ``hexkey`` in a segment file of the cache directory ``root``, or None."""
    with os.scandir(root) as entries:
        segments = [entry for entry in entries if SEGMENT_NAME.match(entry.name)]
    for entry in sorted(segments, key=lambda entry: entry.name):
        if not entry.is_file(follow_symlinks=False):
            continue  # a link or FIFO with a segment's name is not fb's: never opened
        st = entry.stat(follow_symlinks=False)
        whole = StoredFile(name=entry.name, path=entry.path, size=st.st_size, mtime=st.st_mtime)
        for blob in _segment_blobs(whole):
            if blob.key == hexkey:
                return blob
    return None


# -- locks ------------------------------------------------------------------------------------


@contextlib.contextmanager
def hold_lock(location: PreparedPath) -> Iterator[bool | None]:
    """Hold a cache directory's lock while the block runs, if no live store holds it.

    Yields True when a live store holds the lock (the directory is in use), False when the
    lock was free and is now held by this process (no store can open the directory until
    the block ends), and None when there is nothing to check: no lock file, or a location
    that is not on the local filesystem (``flock`` needs a local file).
    """
    if not location.is_local:
        yield None
        return
    try:
        # flock works on a read-only descriptor; nothing is ever written to the file here.
        fd = open_regular(f"{location.root}/{LOCK_NAME}")
    except IsADirectoryError as exc:
        raise UnsafeLocationError(
            f"lock file {location.root}/{LOCK_NAME} is {exc.strerror}: not fb's lock file"
        ) from None
    except (FileNotFoundError, NotADirectoryError):
        _check_local_root(location.root)  # a location that is a file is named as one
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield True
            return
        yield False
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_owner(location: PreparedPath) -> int | None:
    """Return the process id the lock file names (its last owner's), if it names one."""
    if not location.is_local:
        return None
    try:
        with open(open_regular(f"{location.root}/{LOCK_NAME}"), "rb") as file:
            text = file.read(32).decode("ascii", "replace").strip()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return int(text) if text.isdigit() else None
