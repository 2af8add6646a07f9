"""What keeps fb's local I/O inside what it owns: private directories, no links, regular files.

The threat is another local user (or a stale run) who plants names where fb will look: a
symbolic link in place of a lock file or a shard directory, a FIFO in place of a blob, a
directory of theirs in place of the cache. The rules, applied by `FBStore` and by the
persist ladder (``_locations.py``):

- a cache directory must belong to this user and be writable by nobody else, and so must
  every directory above it, unless it is root's or has the sticky bit (``/tmp``): the rule
  of ssh's ``StrictModes`` and of XDG runtime directories. Directories fb creates are 0700;
- inside a cache or persist location, names are checked with ``lstat`` (never followed)
  and files are opened with ``O_NOFOLLOW | O_NONBLOCK``: a link fails to open, a FIFO opens
  without blocking and is then refused by ``fstat``, because only regular files are blobs.

The location's root itself is the path the user named, so a link there is followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

from ..exceptions import UnsafeLocationError

__all__ = [
    "O_SAFE_READ",
    "check_private_dir",
    "kind_of",
    "make_private_dirs",
    "open_regular",
    "real_dirs",
]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
O_SAFE_READ = os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW | _O_NONBLOCK
"""Flags to open a file inside a location for reading: no link followed, no FIFO waited on."""


def kind_of(mode: int) -> str:
    """Name the kind of file ``mode`` describes, for messages."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file"


def open_regular(path: str, flags: int = O_SAFE_READ, mode: int = 0o600) -> int:
    """Open ``path`` without following a link; return the descriptor of a regular file.

    Raises:
        IsADirectoryError: ``path`` is not a regular file (a link, FIFO, directory,
            device or socket); the message names the path and what it is. Nothing was
            read from it, and opening never blocks.
        OSError: as ``os.open`` (``FileNotFoundError`` when there is nothing there).
    """
    try:
        fd = os.open(path, flags | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise _not_regular(path, "a symbolic link") from None
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, kind_of(st.st_mode))
    return fd


def _not_regular(path: str, kind: str) -> IsADirectoryError:
    # IsADirectoryError is the OSError whose meaning is closest ("not a file you can use as
    # one"); callers turn it into the typed error of their context.
    return IsADirectoryError(errno.EISDIR, f"not a regular file but {kind}", path)


def real_dirs(root: str, names: Iterator[str] | set[str] | frozenset[str]) -> Iterator[str]:
    """Yield the ``names`` under ``root`` that are real directories (links are not)."""
    for name in names:
        try:
            mode = os.lstat(f"{root}/{name}").st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            yield name


def make_private_dirs(path: str) -> None:
    """Create ``path`` and each missing directory above it with mode 0700."""
    missing: list[str] = []
    head = os.path.abspath(path)
    while not os.path.lexists(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: the checks that follow judge it


def check_private_dir(path: str) -> None:
    """Refuse a directory that another user could redirect or fill.

    ``path`` must belong to this user and be writable by no one else. Each directory above
    it must belong to this user or root, and be writable by no one else unless it has the
    sticky bit (as ``/tmp`` has). A link on the way is judged by its owner as well.

    Raises:
        UnsafeLocationError: the message names the offending path and why.
    """
    euid = os.geteuid()
    given = os.path.abspath(path)
    link = os.lstat(given)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (euid, 0):
        raise UnsafeLocationError(
            f"{given} is a symbolic link owned by uid {link.st_uid}, not by this user "
            f"(uid {euid}): that user decides where it points; use a directory of your own"
        )
    real = os.path.realpath(given)
    st = os.stat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", real)
    if st.st_uid != euid:
        raise UnsafeLocationError(
            f"cache directory {real} is owned by uid {st.st_uid}, not by this user "
            f"(uid {euid}); fb keeps its cache only in a directory of your own"
        )
    if st.st_mode & 0o022:
        raise UnsafeLocationError(
            f"cache directory {real} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); make it private (chmod 700) or use another one"
        )
    parent = os.path.dirname(real)
    while True:
        st = os.stat(parent)
        if st.st_uid not in (euid, 0):
            raise UnsafeLocationError(
                f"{parent}, above the cache directory {real}, is owned by uid {st.st_uid}: "
                "that user could replace the cache directory; use a directory of your own"
            )
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafeLocationError(
                f"{parent}, above the cache directory {real}, is writable by group or "
                f"others without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o}): they "
                "could replace the cache directory; use a directory of your own"
            )
        up = os.path.dirname(parent)
        if up == parent:
            return
        parent = up


def with_path(exc: OSError, path: str) -> OSError:
    """Return ``exc`` with ``path`` in its message (the same OSError subclass)."""
    if exc.filename is not None:
        return exc
    new = type(exc)(exc.errno or errno.EIO, exc.strerror or str(exc), path)
    new.__cause__ = exc
    return new
