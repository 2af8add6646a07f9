"""A shelf's location: its layout, its marker, the cache directories of its shelves.

The layout of a shelf location (local directory or object-store prefix)::

    <location>/.fb-shelf          marker: this location is a shelf, and where its names are
    <location>/names.db           local disk: the names in one SQLite database
                                  (``_shelf_sqlite.py``; with ``names.db-wal`` and ``-shm``)
    <location>/names/<sha256>     elsewhere: one record per name (``_shelf_index.py``)
    <location>/blobs/xx/<key>     the blobs: an fb persist location
    <location>/cache/<32 hex>/    local only: the cache directory of each open shelf

The command line (``fb ls``, ``du``, ``verify``, ``inspect``, ``gc``) finds a shelf's blobs and
names through `shelf_blobs` and `shelf_names`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
import time
import uuid
from typing import TypeVar
from uuid import UUID

from ._shelf_index import NAMES_DIR, NameIndex
from ._shelf_sqlite import INDEX_FILES, SqliteIndex
from ._shelf_store import ShelfStore
from .backends import FBStore, PreparedPath
from .backends._locations import remote_errors
from .exceptions import ForeignLocationError, StoreLockedError
from .typing import Codec

__all__ = [
    "INDEX_KINDS",
    "claim_shelf",
    "open_cache",
    "open_index",
    "shelf_blobs",
    "shelf_kind",
    "shelf_names",
    "sweep_dead_caches",
]

T = TypeVar("T")

SHELF_MARKER = ".fb-shelf"
SHELF_MARKER_TEXT = b"fb shelf, format 1\n"
"""The marker of a shelf whose names are record files (object stores, network filesystems,
and local shelves made before the SQLite index)."""
SHELF_MARKER_SQLITE = b"fb shelf, format 2\n"
"""The marker of a shelf whose names are in ``names.db``."""
_MARKERS = {SHELF_MARKER_TEXT: "files", SHELF_MARKER_SQLITE: "sqlite"}
INDEX_KINDS = ("auto", "sqlite", "files")
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "davfs",
        "virtiofs",
    }
)
"""Filesystem types (Linux) on which a new shelf keeps record files: SQLite's locks and
shared memory are not safe across hosts. FUSE filesystems (``fuse.*``) count too."""
BLOBS_DIR = "blobs"
CACHE_DIR = "cache"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRS = (NAMES_DIR, BLOBS_DIR, CACHE_DIR)
_OWN_NAMES = frozenset({SHELF_MARKER, *_DIRS, *INDEX_FILES})


def claim_shelf(root: PreparedPath, index: str = "auto") -> str:
    """Make ``root`` a shelf location: create it (0700 locally) and its marker.

    A new shelf on local disk keeps its names in SQLite (``index="auto"`` or ``"sqlite"``),
    unless it is on a network filesystem or ``index="files"``; the marker records the
    choice, which every later open follows. Off local disk names are record files.

    Returns:
        Where the shelf keeps its names: ``"sqlite"`` or ``"files"``.

    Raises:
        ForeignLocationError: ``root`` holds names and no shelf marker, or another marker.
        ValueError: ``index`` is not one of `INDEX_KINDS`, or names a kind the shelf at
            ``root`` does not use.
    """
    if index not in INDEX_KINDS:
        raise ValueError(f"index must be one of {', '.join(map(repr, INDEX_KINDS))}, not {index!r}")
    fs, path = root.fs, root.root
    marker = f"{path}/{SHELF_MARKER}"
    if root.is_local:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not os.path.exists(marker):
            _refuse_foreign(root, os.listdir(path))
            files = index == "files" or (index == "auto" and network_filesystem(path))
            tmp = f"{marker}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
            try:
                with open(fd, "wb") as file:
                    file.write(SHELF_MARKER_TEXT if files else SHELF_MARKER_SQLITE)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, marker)  # a concurrent first open agrees on one marker
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        with open(marker, "rb") as file:
            content = file.read(len(SHELF_MARKER_TEXT) + 1)
        dirs = (BLOBS_DIR, CACHE_DIR) if _MARKERS.get(content) == "sqlite" else _DIRS
        for name in dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{path}/{name}", 0o700)
    else:
        if index == "sqlite":
            raise ValueError(f"{root.url}: index='sqlite' needs a shelf on local disk")
        with remote_errors(root.url):
            if root.is_object_store:
                root.check_bucket()
            else:
                fs.makedirs(f"{path}/{NAMES_DIR}", exist_ok=True)
                fs.makedirs(f"{path}/{BLOBS_DIR}", exist_ok=True)
            try:
                content = fs.cat_file(marker)
            except FileNotFoundError:
                try:
                    listed = fs.ls(path, detail=False)
                except FileNotFoundError:
                    listed = []
                _refuse_foreign(root, [p.rstrip("/").rsplit("/", 1)[-1] for p in listed])
                fs.pipe_file(marker, SHELF_MARKER_TEXT)
                content = SHELF_MARKER_TEXT
    kind = _MARKERS.get(content)
    if kind is None:
        raise ForeignLocationError(f"{root.url}: {SHELF_MARKER} holds something fb did not write")
    if index not in ("auto", kind):
        raise ValueError(
            f"{root.url} is a shelf whose names are in {kind!r}: open it with index='auto'"
        )
    return kind


def network_filesystem(path: str, mountinfo: str | None = None) -> bool:
    """Return whether ``path`` is on a network (or FUSE) filesystem, as far as Linux tells.

    Takes the longest mount point above ``path`` in ``mountinfo`` (default: the text of
    ``/proc/self/mountinfo``); where there is no such file a filesystem counts as local.
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
                mountinfo = file.read()
        except OSError:
            return False
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        mount = parts[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, rest.split()[0]
    return kind in NETWORK_FILESYSTEMS or kind.startswith("fuse")


def open_index(root: PreparedPath, kind: str) -> NameIndex | SqliteIndex:
    """Open the name index of the shelf at ``root``, which keeps its names in ``kind``."""
    return SqliteIndex(root) if kind == "sqlite" else NameIndex(root)


def _refuse_foreign(root: PreparedPath, names: list[str]) -> None:
    foreign = sorted(n for n in names if n not in _OWN_NAMES and not n.startswith(SHELF_MARKER))
    if foreign:
        raise ForeignLocationError(
            f"{root.url} is not empty ({len(foreign)} name(s) fb did not write, first: "
            f"{foreign[0]}) and is not a shelf; open a shelf on a new or empty directory"
        )


def sweep_dead_caches(cache_root: str) -> str | None:
    """Clear the cache directories of shelves whose process is gone (local disk).

    A live shelf holds an ``flock`` on its cache's ``.fb-lock``: a lock that can be taken
    belongs to a dead process. The first dead directory is returned for reuse (its shard
    directories exist already, and its new store sweeps its blobs); the others are removed.

    Returns:
        A dead cache directory to reuse, or None.
    """
    import fcntl
    import shutil

    try:
        names = os.listdir(cache_root)
    except FileNotFoundError:
        return None
    reuse = None
    for name in names:
        path = f"{cache_root}/{name}"
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            fd = os.open(f"{path}/.fb-lock", os.O_RDWR | _O_CLOEXEC)
        except FileNotFoundError:
            # A cache being created right now has no lock yet: leave young ones alone.
            with contextlib.suppress(OSError):
                if time.time() - os.stat(path).st_mtime > 60:
                    shutil.rmtree(path, ignore_errors=True)
            continue
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.ELOOP):
                continue
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            if reuse is None:
                reuse = path
            else:
                shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
    return reuse


# -- for the command line -------------------------------------------------------------------


def shelf_kind(location: PreparedPath) -> str | None:
    """Return where the shelf at ``location`` keeps its names, or None if it is no shelf.

    ``"sqlite"`` or ``"files"``, as its marker says; an error reading the marker is left for
    the caller to report.
    """
    marker = f"{location.root}/{SHELF_MARKER}"
    try:
        if location.is_local:
            if os.path.islink(marker) or not os.path.isfile(marker):
                return None
            with open(marker, "rb") as file:
                content = file.read(len(SHELF_MARKER_TEXT) + 1)
        else:
            with remote_errors(location.url):
                content = location.fs.cat_file(marker)
    except OSError:
        return None
    return _MARKERS.get(content)


def shelf_blobs(location: PreparedPath) -> PreparedPath | None:
    """Return the blob location of the shelf at ``location``, or None if it is no shelf.

    `fb ls`, `du`, `verify`, `inspect` and `gc` given a shelf work on its blobs.
    """
    if shelf_kind(location) is None:
        return None
    return PreparedPath(f"{location.root}/{BLOBS_DIR}", fs=location.fs)


def shelf_names(blobs: PreparedPath) -> dict[UUID, list[str]] | None:
    """Return the names of each key of a shelf whose blob location is ``blobs``.

    Returns:
        ``{key: [names]}`` (expired names included), or None if ``blobs`` is not a shelf's.
    """
    parent, _, last = blobs.root.rpartition("/")
    if last != BLOBS_DIR or not parent:
        return None
    root = PreparedPath(parent, fs=blobs.fs)
    kind = shelf_kind(root)
    if kind is None:
        return None
    index = open_index(root, kind)
    try:
        records = index.scan()
    finally:
        index.close()
    names: dict[UUID, list[str]] = {}
    for record in records:
        names.setdefault(record.key, []).append(record.name)
    return {key: sorted(found) for key, found in names.items()}


def open_cache(
    location: PreparedPath, codec: Codec[T], secret_key: bytes | str | None
) -> tuple[FBStore[T], str]:
    """Open the cache directory of a new shelf on ``location``; return its store and path.

    On local disk the cache sits next to the blobs (one device), so persisting is a hard
    link, and the store is a `ShelfStore`, which reads a blob registered from the location
    where it is (no copy into the cache); the cache of a shelf whose process died is taken
    over (its shard directories exist). Off local disk it is a new temporary directory: a
    registered blob is downloaded once, and survives its replacement (or deletion) on the
    object store.
    """
    if not location.is_local:
        directory = tempfile.mkdtemp(prefix="fb-shelf-")
        return FBStore(codec, directory, secret_key=secret_key), directory
    blobs = PreparedPath(f"{location.root}/{BLOBS_DIR}", fs=location.fs)
    cache_root = f"{location.root}/{CACHE_DIR}"
    dead = sweep_dead_caches(cache_root)
    if dead is not None:
        with contextlib.suppress(StoreLockedError):  # another shelf took it over first
            return ShelfStore(codec, dead, blobs=blobs, secret_key=secret_key), dead
    directory = f"{cache_root}/{uuid.uuid4().hex}"
    return ShelfStore(codec, directory, blobs=blobs, secret_key=secret_key), directory
