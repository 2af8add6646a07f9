"""Durable locations: scanning, placing blobs by link or copy, and fsync, on any filesystem.

The persist ladder, chosen per pair of locations:

1. same local device: ``os.link`` (no data is copied; blobs are immutable, so sharing an
   inode is safe);
2. local, different devices (``EXDEV``) or a filesystem without hard links: copy into a
   temporary name in the destination shard, ``fsync`` it, rename it into place;
3. anything else: a streamed copy through fsspec (``fs.cp_file`` within one filesystem).

A blob never becomes visible under its key incomplete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from uuid import UUID

from ..exceptions import CorruptBlobError, FbError, ForeignLocationError, UnsafeLocationError
from ._prepared_path import SHARDS, PreparedPath
from ._safety import kind_of, open_regular

__all__ = ["MARKER_NAME", "place", "place_range", "remote_errors", "scan", "sync_paths"]

_log = logging.getLogger("fb")

MARKER_NAME = ".fb-persist"
MARKER_TEXT = b"fb persist location, format 1\n"
_LOCK_NAME = ".fb-lock"
_BLOB_NAME = re.compile(r"^[0-9a-f]{32}$")
_TEMP_NAME = re.compile(r"^\.[0-9a-f]{32}\.[0-9a-f]+\.tmp$")
_MARKER_TEMP = re.compile(r"^\.fb-persist\.[0-9a-f]+\.tmp$")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
_NO_COPY_RANGE = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
"""Errors of ``copy_file_range`` that mean "not here": copy through user space instead."""


def _remote_error(exc: Exception, url: str) -> OSError:
    """Map an error of a remote client (botocore and friends are not OSError) to OSError."""
    name = type(exc).__name__
    text = f"{name}: {exc}"
    if "Credential" in name or "AccessDenied" in text or "Forbidden" in text:
        return PermissionError(errno.EACCES, text, url)
    if "Timeout" in name:
        return TimeoutError(errno.ETIMEDOUT, text, url)
    if "Connect" in name or "Endpoint" in name:
        return ConnectionError(errno.ECONNREFUSED, text, url)
    if "NoSuchBucket" in text or "NoSuchKey" in text:
        return FileNotFoundError(errno.ENOENT, text, url)
    return OSError(errno.EIO, text, url)


@contextlib.contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Re-raise errors of remote clients as OSError subclasses that name ``url``.

    OSError and fb's own errors pass through; an OSError without a path gets ``url``.
    """
    try:
        yield
    except FbError:
        raise
    except OSError as exc:
        if exc.filename is None:
            mapped = type(exc)(exc.errno or errno.EIO, exc.strerror or str(exc), url)
            raise mapped from exc
        raise
    except Exception as exc:
        raise _remote_error(exc, url) from exc


def scan(location: PreparedPath) -> tuple[set[UUID], list[str]]:
    """Return the keys stored at ``location`` and the names fb does not own there.

    Unknown names are reported, never touched.

    Raises:
        FileNotFoundError: the location does not exist.
    """
    fs, root = location.fs, location.root
    keys: set[UUID] = set()
    unknown: list[str] = []
    if location.is_local:
        if not os.path.isdir(root):
            raise FileNotFoundError(errno.ENOENT, "persist location does not exist", root)
        with os.scandir(root) as entries:
            listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for name, is_dir in listed:
            if name in SHARDS and is_dir:  # a link with a shard's name is not one: unknown
                with os.scandir(f"{root}/{name}") as blobs:
                    for blob in blobs:
                        if (
                            _BLOB_NAME.match(blob.name)
                            and blob.name.startswith(name)
                            and blob.is_file(follow_symlinks=False)
                        ):
                            keys.add(UUID(hex=blob.name))
                        elif not _TEMP_NAME.match(blob.name):
                            unknown.append(f"{name}/{blob.name}")
            elif name not in (MARKER_NAME, _LOCK_NAME) and not _MARKER_TEMP.match(name):
                unknown.append(name)
    else:
        with remote_errors(location.url):
            fs.invalidate_cache(root)
            if not location.is_object_store and not fs.exists(root):
                raise FileNotFoundError(
                    errno.ENOENT, "persist location does not exist", location.url
                )
            if location.is_object_store:
                location.check_bucket()
            found = fs.find(root)
        prefix = root.rstrip("/") + "/"
        for path in found:
            rel = path[len(prefix) :] if path.startswith(prefix) else path
            shard, _, blob = rel.partition("/")
            if shard in SHARDS and _BLOB_NAME.match(blob) and blob.startswith(shard):
                keys.add(UUID(hex=blob))
            elif rel != MARKER_NAME and not _TEMP_NAME.match(blob):
                unknown.append(rel)
    if unknown:
        _log.warning(
            "fb: %d name(s) at %s are not fb blobs and are left alone (first: %s)",
            len(unknown),
            location.url,
            unknown[0],
        )
    return keys, sorted(unknown)


def claim(location: PreparedPath) -> list[str]:
    """Make sure ``location`` is fb's: create its marker on first use; return paths to sync.

    Raises:
        ForeignLocationError: the location holds another marker or is a cache directory.
        OSError: the location cannot be written (e.g. read-only); nothing was changed.
    """
    fs, root = location.fs, location.root
    marker = f"{root}/{MARKER_NAME}"
    if location.is_local:
        if os.path.exists(f"{root}/{_LOCK_NAME}"):
            raise ForeignLocationError(
                f"{root} is the cache directory of a store, not a persist location"
            )
        if not os.path.exists(marker):
            _refuse_foreign(location, os.listdir(root))
            # Written whole under a temporary name, then linked into place: concurrent first
            # persists agree on one marker, and a crash never leaves an empty one behind.
            tmp = f"{root}/{MARKER_NAME}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, _O_NEW, 0o600)
            try:
                with open(fd, "wb") as file:
                    file.write(MARKER_TEXT)
                    file.flush()
                    os.fsync(file.fileno())
                try:
                    os.link(tmp, marker)
                except FileExistsError:
                    pass  # another persist claimed it first: check its content below
                else:
                    return [root]
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        try:
            fd = open_regular(marker)
        except IsADirectoryError as exc:
            raise ForeignLocationError(f"{marker} is {exc.strerror}; not fb's marker") from None
        with open(fd, "rb") as file:
            content = file.read(len(MARKER_TEXT) + 1)
    else:
        with remote_errors(location.url):
            try:
                content = fs.cat_file(marker)
            except FileNotFoundError:
                try:
                    listed = fs.ls(root, detail=False)
                except FileNotFoundError:
                    listed = []
                names = [path.rstrip("/").rsplit("/", 1)[-1] for path in listed]
                _refuse_foreign(location, names)
                fs.pipe_file(marker, MARKER_TEXT)
                return []
    if content != MARKER_TEXT:
        raise ForeignLocationError(
            f"{location.url} carries a marker fb did not write ({marker}); "
            "refusing to persist there"
        )
    return []


def _refuse_foreign(location: PreparedPath, names: list[str]) -> None:
    """Refuse to claim a location that holds anything but what fb puts there.

    A first persist marks its location as fb's, and ``fb gc`` later deletes blobs there that
    no save names: pointing it by mistake at a directory in use must fail, not adopt it.
    """
    foreign = sorted(
        name
        for name in names
        if name not in SHARDS and name != MARKER_NAME and not _MARKER_TEMP.match(name)
    )
    if foreign:
        raise ForeignLocationError(
            f"{location.url} is not empty ({len(foreign)} name(s) fb did not write, first: "
            f"{foreign[0]}) and is not an fb persist location; persist into a new or empty "
            "directory"
        )


def _copy_local(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` through a fsynced temporary file renamed into place."""
    directory, name = os.path.split(dst)
    tmp = f"{directory}/.{name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(open_regular(src), "rb") as fsrc:
            fd = os.open(tmp, _O_NEW, 0o600)
            with open(fd, "wb") as fdst:
                shutil.copyfileobj(fsrc, fdst, 1 << 20)
                fdst.flush()
                os.fsync(fdst.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_shard(location: PreparedPath, shard: str, *, create: bool, refuse: bool = True) -> bool:
    """Whether ``shard`` of a local location is a real directory; with ``create``, make it.

    Raises:
        UnsafeLocationError: with ``refuse``, ``shard`` is a link or not a directory: fb
            never writes or deletes through it.
    """
    try:
        mode = os.lstat(shard).st_mode
    except FileNotFoundError:
        if not create:
            return False
        # mkdir, not makedirs: a location that was removed must not come back unmarked.
        try:
            os.mkdir(shard, 0o700)
            return True
        except FileExistsError:
            mode = os.lstat(shard).st_mode
    if stat.S_ISDIR(mode):
        return True
    if refuse:
        raise UnsafeLocationError(
            f"{shard} in {location.url} is {kind_of(mode)}, not a shard directory fb made: fb "
            "neither writes nor deletes through it; remove it"
        )
    return False


def _check_source(location: PreparedPath, source: str, key: UUID) -> None:
    """Make sure the blob at ``source`` is a regular file in a real shard directory.

    Raises:
        FileNotFoundError: there is no blob ``key`` at ``location``.
        CorruptBlobError: the name is a link, FIFO or anything but a regular file, or its
            shard is not a real directory; nothing of it was read.
    """
    shard = os.path.dirname(source)
    for path in (shard, source):
        mode = os.lstat(path).st_mode
        want = stat.S_ISDIR if path == shard else stat.S_ISREG
        if not want(mode):
            what = "shard directory" if path == shard else "regular file"
            raise CorruptBlobError(f"not a {what} but {kind_of(mode)}", key=key, path=path)


def place(src: PreparedPath, dst: PreparedPath, key: UUID, *, durable: bool) -> list[str]:
    """Put blob ``key`` of ``src`` into ``dst`` (link, else copy); return paths to sync.

    An existing blob at the destination is left as it is (blobs are immutable).

    Args:
        src: where the blob is.
        dst: where it must go.
        key: the blob.
        durable: fsync a copy before it is renamed into place (persist yes, cache no).

    Returns:
        The new file and its directory, for a later `sync_paths`; empty when nothing was
        done or the destination is not local.

    Raises:
        FileNotFoundError: ``src`` holds no blob ``key``.
        OSError: the destination cannot be written; the message names the path.
    """
    source = src.blob_path(key)
    target = dst.blob_path(key)
    shard = dst.shard_dir(key)
    if src.is_local and dst.is_local:
        synced = [target, shard, dst.root]
        _check_source(src, source, key)
        if _check_shard(dst, shard, create=True) and os.path.lexists(target):
            # Already there, perhaps placed by a process that died before its fsync: the
            # caller syncs it again rather than trust it.
            return synced
        try:
            # link() does not follow a link at ``source`` (checked above, in a shard that
            # is a real directory): a name swapped meanwhile is linked as itself, and a
            # load of it then fails (no link is followed there either).
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            return synced
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            if durable:
                _copy_local(source, target)
            else:
                _copy_nosync(source, target)
        return synced
    with remote_errors(dst.fs.unstrip_protocol(target)):
        return _place_remote(src, dst, source, target, durable=durable)


def place_range(slot: tuple[str, int, int, int], dst: PreparedPath, key: UUID) -> list[str]:
    """Put the blob held in a byte range of a segment file into ``dst``; return paths to sync.

    ``slot`` is the segment file's path, an open descriptor of it, the offset of the framed
    blob and its length (`Segments.where`). On local disk the bytes go by
    ``os.copy_file_range`` (in the kernel, a reflink where the filesystem shares extents)
    into a temporary file, which is fsynced and renamed into place: the persisted blob is a
    file of its own, as if it had been linked. An existing blob at ``dst`` is left as it is.

    Raises:
        OSError: the destination cannot be written; the message names the path.
    """
    _, fd, offset, length = slot
    target = dst.blob_path(key)
    if not dst.is_local:
        with remote_errors(dst.fs.unstrip_protocol(target)):
            if not dst.fs.exists(target):
                # A small blob: one PUT of bytes read with one pread.
                dst.fs.pipe_file(target, os.pread(fd, length, offset))
        return []
    shard = dst.shard_dir(key)
    synced = [target, shard, dst.root]
    if _check_shard(dst, shard, create=True) and os.path.lexists(target):
        return synced
    tmp = f"{shard}/.{key.hex}.{secrets.token_hex(4)}.tmp"
    out = os.open(tmp, _O_NEW, 0o600)
    try:
        try:
            _copy_range(fd, out, offset, length)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return synced


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes of ``src`` from ``offset`` to the start of ``dst``."""
    done = 0
    copy = getattr(os, "copy_file_range", None)
    while copy is not None and done < length:
        try:
            got = copy(src, dst, length - done, offset + done, done)
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE:
                raise
            break
        if not got:
            break
        done += got
    while done < length:  # no copy_file_range here (or it stopped): through user space
        data = os.pread(src, min(length - done, 1 << 20), offset + done)
        if not data:
            raise OSError(errno.EIO, "segment file is shorter than its slot")
        done += os.pwrite(dst, data, done)


def _place_remote(
    src: PreparedPath, dst: PreparedPath, source: str, target: str, *, durable: bool
) -> list[str]:
    if dst.is_local:
        # Object store or other filesystem -> local: download to a temporary name, rename.
        if _check_shard(dst, os.path.dirname(target), create=True) and os.path.lexists(target):
            return []
        directory, name = os.path.split(target)
        tmp = f"{directory}/.{name}.{secrets.token_hex(4)}.tmp"
        try:
            src.fs.get_file(source, tmp)
            if durable:
                fd = os.open(tmp, os.O_RDONLY | _O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return [target, directory, dst.root] if durable else []
    if dst.fs.exists(target):
        return []
    if src.fs == dst.fs:
        # Within one filesystem: a server-side copy on object stores (S3 CopyObject).
        src.fs.cp_file(source, target)
    elif src.is_local:
        # Local -> remote: a streamed upload, visible only once complete.
        dst.fs.put_file(source, target)
    else:
        # Across filesystems: stream through this process. The destination is committed
        # only if the whole copy succeeded; a failure discards the upload, never leaving a
        # partial blob that a later persist would take for a finished one.
        with src.fs.open(source, "rb") as fsrc:
            fdst = dst.fs.open(target, "wb")
            try:
                shutil.copyfileobj(fsrc, fdst, 1 << 22)
            except BaseException:
                with contextlib.suppress(Exception):
                    fdst.discard()
                fdst.closed = True
                raise
            fdst.close()
    return []


def _copy_nosync(src: str, dst: str) -> None:
    directory, name = os.path.split(dst)
    tmp = f"{directory}/.{name}.{secrets.token_hex(4)}.tmp"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(location: PreparedPath, key: UUID) -> list[str]:
    """Delete blob ``key`` from ``location``; return the directory to sync."""
    path = location.blob_path(key)
    if location.is_local:
        shard = location.shard_dir(key)
        if not _check_shard(location, shard, create=False, refuse=False):
            return []  # no shard, or a link that only looks like one: nothing of fb's
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return [shard]
    with remote_errors(location.url), contextlib.suppress(FileNotFoundError):
        location.fs.rm_file(path)
    return []


def sync_paths(paths: set[str]) -> None:
    """``fsync`` every file and directory in ``paths`` (files first, then directories).

    Real on every POSIX system: each file's data and each directory's entries reach stable
    storage, rather than one ``syncfs`` that some systems silently ignore.
    """
    files = sorted(p for p in paths if not os.path.isdir(p))
    dirs = sorted((p for p in paths if os.path.isdir(p)), key=len, reverse=True)
    for path in files:
        try:
            fd = open_regular(path)
        except (FileNotFoundError, IsADirectoryError):
            continue  # deleted since, or not a blob fb placed: nothing of fb's to sync
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for path in dirs:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
