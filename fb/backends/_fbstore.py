"""FBStore: blobs as files under a PreparedPath, encoded by a Codec."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import re
import secrets
import threading
import weakref
from collections.abc import Mapping
from stat import S_ISREG
from typing import IO, Any, TypeVar, cast
from uuid import UUID

from fsspec.spec import AbstractFileSystem

from .._blob import (
    ChecksumWriter,
    SinkError,
    check_secret,
    encode_header,
    encode_trailer,
    finish_mac,
    new_checksum,
    new_mac,
)
from .._keywords import check_keywords
from ..codecs import get_codec
from ..exceptions import (
    BlobNotFoundError,
    CodecError,
    CorruptBlobError,
    FbError,
    ForeignLocationError,
    StoreLockedError,
    UnsafeLocationError,
)
from ..typing import Codec
from . import _locations
from ._decode import BlobReader
from ._lease import LeaseKeeper
from ._locations import MARKER_NAME, remote_errors
from ._prepared_path import SHARDS, PreparedPath, as_prepared_path
from ._safety import (
    O_SAFE_READ,
    check_private_dir,
    kind_of,
    make_private_dirs,
    open_regular,
    real_dirs,
)
from ._safety import (
    with_path as _with_path,
)
from ._segments import (
    SEGMENT_MAX,
    SEGMENT_NAME,
    SLOT_HEAD,
    Segments,
    SpillSink,
    sweep_segments,
)

__all__ = ["FBStore"]

T = TypeVar("T")

_log = logging.getLogger("fb")

LOCK_NAME = ".fb-lock"
UPLOAD_PART = 8 << 20
"""What an object-store upload buffers before it sends it: a blob up to this size is one PUT, a
larger one a multipart upload in parts of this size (visible only once complete either way).
Writing a blob then needs about two parts of memory beside the value, whatever its size."""
SMALL_BLOB = 1 << 20
"""Blobs up to this size are read whole and checked before decoding; larger ones stream."""
_SHARD_SET = frozenset(SHARDS)
_BLOB_NAME = re.compile(r"^[0-9a-f]{32}$")
_TEMP_NAME = re.compile(r"^\.[0-9a-f]{32}\.[0-9a-f]+\.tmp$")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_READ = O_SAFE_READ
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_TEMP_SERIAL = itertools.count()
"""Suffixes of local temporary names (``next`` on a count is atomic under the GIL)."""


def _move(fs: AbstractFileSystem, source: str, target: str) -> None:
    """Rename file ``source`` to ``target``: with the filesystem's own ``mv`` if it has one.

    Otherwise copy and delete, file to file, as fsspec's generic ``mv`` would, but without
    expanding both paths first, which lists the whole tree (22 ms a blob on memory:// with
    20,000 blobs, against 15 us this way).
    """
    if type(fs).mv is AbstractFileSystem.mv:
        fs.cp_file(source, target)
        fs.rm_file(source)
    else:
        fs.mv(source, target)


class _Parts:
    """Hands a file of fsspec at most ``part`` bytes per ``write``.

    An fsspec file buffers what it is given and sends a part once the buffer holds a block;
    one ``write`` of a whole 64 MiB payload (pickle writes a large buffer in one call) would
    sit in its buffer whole, and be copied once more to be sent. Slices of a memoryview
    cost no copy.
    """

    __slots__ = ("_file", "_part")

    def __init__(self, file: IO[bytes], part: int) -> None:
        self._file = file
        self._part = part

    def write(self, data: Any) -> int:
        view = memoryview(data)
        size = view.nbytes
        if size <= self._part:
            return self._file.write(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        for start in range(0, size, self._part):
            self._file.write(view[start : start + self._part])
        return size


class FBStore(BlobReader[T]):
    """A `Strategy` that keeps each blob as one file, ``root/xx/<32 hex>``, on a filesystem.

    On the local filesystem a blob is written under a temporary name in its shard and
    renamed into place, so it is visible only complete; a small blob (see ``segment_max``)
    goes into a slot of a segment file instead, ``root/seg-<pid>-<slot size>.fbseg``, with
    no file created for it (`blob_slot` says where). Segments live as long as their store.
    The cache directory is owned by one store at a time: an advisory ``flock`` on
    ``root/.fb-lock`` (works across processes), and leftovers of an earlier owner (blobs,
    temporary files and segment files, never other names) are swept when the store opens.

    Every blob carries fb's header (magic, format version, codec name) and trailer (payload
    length, XXH3-64 checksum); a blob that fails them raises `CorruptBlobError` naming the
    key and path, and a blob written by another codec raises `CodecError` naming both codecs.

    Args:
        codec: a `Codec` or a codec name such as ``"pickle"``.
        path: a `PreparedPath`, a local path, or a URL.
        storage_options: fsspec storage options to reach a URL ``path`` (see
            `PreparedPath`); a `PreparedPath` carries its own.
        secret_key: sign every blob with HMAC-SHA256 under this key (at least 16 bytes),
            and refuse any blob whose signature does not check out before its bytes reach
            the codec. Use it whenever the location is shared or writable by others and
            the codec can run code (pickle).
        sweep: delete leftovers of an earlier owner on open (default: on local disk only;
            object-store prefixes may be shared, so they are never swept unless asked).
        segment_max: on local disk, blobs whose slot (a 32-byte slot head and the blob)
            takes at most this many bytes live in segment files, one per size class,
            rather than in a file each (no file create per small blob; see
            docs/concepts.md). 0 turns segments off. Ignored elsewhere.

    Notes:
        Thread-safe: every method may be called from several threads at once. Every method
        but ``__init__`` and `close` does blocking I/O.
    """

    @check_keywords
    def __init__(
        self,
        codec: Codec[T] | str,
        path: PreparedPath | str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        sweep: bool | None = None,
        secret_key: bytes | str | None = None,
        segment_max: int = SEGMENT_MAX,
    ) -> None:
        if not isinstance(segment_max, int) or isinstance(segment_max, bool):
            raise TypeError(f"segment_max must be an int, not {segment_max!r}")
        if segment_max < 0:
            raise ValueError(f"segment_max must be >= 0, not {segment_max}")
        self._secret = check_secret(secret_key)
        self.codec: Codec[T] = get_codec(codec)
        # The exact header this store writes: a blob that starts with it takes the fast path.
        self._header = encode_header(self.codec.name, signed=self._secret is not None)
        self.path = as_prepared_path(path, storage_options, "FBStore()")
        self._lock_fd: int | None = None
        self._close_lock = threading.Lock()
        self._claimed: set[str] = set()
        fresh_lock = False
        if self.path.is_local:
            make_private_dirs(self.path.root)
            check_private_dir(self.path.root)
            self._check_layout()
            self._lock_fd, fresh_lock = self._acquire_lock()
        else:
            self.path.prepare()
        if sweep or (sweep is None and self.path.is_local):
            if fresh_lock and self._has_blobs():
                # Blobs but no lock file: its owner may be alive, its lock file deleted
                # under it (a tmp cleaner, a user). Sweeping could delete its live blobs.
                _log.warning(
                    "fb: %s holds blobs but had no lock file %s; not swept, in case a live "
                    "store lost its lock file (run `fb gc %s` once no store uses it)",
                    self.path.root,
                    LOCK_NAME,
                    self.path.root,
                )
            else:
                self.sweep()
        self._segments: Segments | None = None
        if self.path.is_local and segment_max > SLOT_HEAD.size:
            self._segments = Segments(self.path.root, segment_max)
        # No lock outside local disk: a lease tells `fb gc` this store is alive (_lease.py).
        self._lease = None if self.path.is_local else LeaseKeeper(self.path)
        if self._lease is not None:
            self._lease.start()
            weakref.finalize(self, self._lease.stop, wait=False)  # dropped unclosed: stop

    def __repr__(self) -> str:
        signed = ", signed" if self._secret is not None else ""
        return f"FBStore({self.codec!r}, {self.path!r}{signed})"

    @property
    def signed(self) -> bool:
        """True when blobs are signed and checked with a secret key."""
        return self._secret is not None

    # -- ownership -------------------------------------------------------------------------

    def _check_layout(self) -> None:
        """Refuse a cache directory whose shard names are not directories fb made.

        A shard that is a link (into a persist location, say) would have the sweep delete
        and the writes land where the link points; a persist location is not a cache.
        """
        root = self.path.root
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name == MARKER_NAME:
                    raise ForeignLocationError(
                        f"{root} is a persist location (it holds {MARKER_NAME}), not a cache "
                        "directory: opening it as a cache would sweep its blobs"
                    )
                if entry.name in _SHARD_SET and not entry.is_dir(follow_symlinks=False):
                    kind = kind_of(entry.stat(follow_symlinks=False).st_mode)
                    raise UnsafeLocationError(
                        f"{entry.path} is {kind}, not a shard directory fb made: fb neither "
                        "follows nor deletes it; remove it or use another cache directory"
                    )

    def _has_blobs(self) -> bool:
        if any(SEGMENT_NAME.match(name) for name in os.listdir(self.path.root)):
            return True
        for shard in real_dirs(self.path.root, _SHARD_SET & set(os.listdir(self.path.root))):
            with os.scandir(f"{self.path.root}/{shard}") as entries:
                if any(_BLOB_NAME.match(e.name) or _TEMP_NAME.match(e.name) for e in entries):
                    return True
        return False

    def _acquire_lock(self) -> tuple[int, bool]:
        """Lock the cache directory; return the lock file's descriptor and if it was new.

        The lock file is opened without following a link and must be a regular file with
        one name: truncating a planted link or hard link would destroy another file.
        """
        lock_path = f"{self.path.root}/{LOCK_NAME}"
        try:
            try:
                fd = open_regular(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
                created = True
            except FileExistsError:
                fd = open_regular(lock_path, os.O_RDWR)
                created = False
        except IsADirectoryError as exc:
            raise UnsafeLocationError(f"lock file {lock_path} is {exc.strerror}") from None
        try:
            held = os.fstat(fd)
            if held.st_nlink != 1:
                raise UnsafeLocationError(
                    f"lock file {lock_path} has {held.st_nlink} names (a hard link to "
                    "another file?); fb will not write to it"
                )
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not self._holds(fd, lock_path):
                raise StoreLockedError(
                    f"lock file {lock_path} was replaced while this store opened; "
                    "another store is opening the same directory"
                )
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"cache directory {self.path.root} is owned by another live store "
                f"(lock file {lock_path}); close that store or use another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd, created

    @staticmethod
    def _holds(fd: int, lock_path: str) -> bool:
        """Whether ``lock_path`` is still the file open as ``fd`` (not deleted, not replaced)."""
        try:
            on_disk = os.lstat(lock_path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def sweep(self) -> int:
        """Delete blobs and temporary files left by an earlier owner; return how many.

        Only names fb writes are touched, never through a link; anything else in the
        directory is left alone.

        Raises:
            StoreLockedError: the lock file on disk is no longer the one this store holds
                (deleted or replaced): another store may own the directory now.
        """
        removed = 0
        lock_fd = self._lock_fd
        if lock_fd is not None and not self._holds(lock_fd, f"{self.path.root}/{LOCK_NAME}"):
            raise StoreLockedError(
                f"the lock file of {self.path.root} is no longer this store's (deleted or "
                "replaced); not sweeping, since another store may own the directory now"
            )
        if not self.path.is_local:
            fs = self.path.fs
            prefix = self.path.root + "/"
            with remote_errors(self.path.url):
                for path in fs.find(self.path.root):
                    shard, _, name = path[len(prefix) :].partition("/")
                    if shard in SHARDS and (_BLOB_NAME.match(name) or _TEMP_NAME.match(name)):
                        with contextlib.suppress(FileNotFoundError):
                            fs.rm_file(path)
                            removed += 1
        shards = (
            real_dirs(self.path.root, set(os.listdir(self.path.root)) & _SHARD_SET)
            if self.path.is_local
            else ()
        )
        for shard in sorted(shards):
            with os.scandir(f"{self.path.root}/{shard}") as entries:
                for item in entries:
                    name = item.name
                    if _BLOB_NAME.match(name):
                        if not name.startswith(shard):
                            continue  # a blob name outside its own shard is not ours
                    elif not (_TEMP_NAME.match(name) and name[1:3] == shard):
                        continue
                    if not item.is_file(follow_symlinks=False):
                        continue  # a directory or link with a blob-like name is not ours
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item.path)
                        removed += 1
        if self.path.is_local:
            segments = getattr(self, "_segments", None)  # None while __init__ sweeps
            removed += sweep_segments(self.path.root, () if segments is None else segments.paths)
        if removed:
            _log.info("fb: swept %d leftover file(s) from %s", removed, self.path.root)
        return removed

    def close(self) -> None:
        """Delete this store's segment files, release the cache directory's lock. Idempotent.

        Blob files are deleted by their `BackingStore` (each key it still references);
        blobs in segment files go with the files.
        """
        with self._close_lock:
            if self._segments is not None:
                self._segments.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None
            if self._lease is not None:
                self._lease.close()  # last: the blobs were deleted before

    # -- blobs -----------------------------------------------------------------------------

    def blob_path(self, key: UUID) -> str:
        """Return where blob ``key`` lives as a file of its own (see `blob_slot`)."""
        return self.path.blob_path(key)

    def blob_slot(self, key: UUID) -> tuple[str, int, int] | None:
        """Return the segment file, offset and length of blob ``key``'s framed bytes.

        None when the blob is not in a segment (a large or registered blob is a file at
        `blob_path`, or there is no such blob).
        """
        if self._segments is None:
            return None
        where = self._segments.where(key)
        return None if where is None else (where[0], where[2], where[3])

    def store(self, key: UUID, value: T) -> int:
        """Encode ``value`` as blob ``key``; return the blob's size in bytes.

        Raises:
            CodecError: the codec cannot encode the value (nothing is left on storage).
            OSError: storage failed; the message names the path.
        """
        final = self.path.blob_path(key)
        if not self.path.is_local:
            return self._store_fs(key, value, final)
        shard, name = final.rsplit("/", 1)
        # The directory is this store's alone (its lock) and keys are fresh random UUIDs:
        # the name needs only to differ from another write of the same key by this process
        # or a child forked from it. The process ID and a counter do that without a system
        # call for random bytes (which would also hand the GIL over once more per blob).
        tmp = f"{shard}/.{name}.{os.getpid():08x}{next(_TEMP_SERIAL):x}.tmp"

        def open_temp() -> int:
            try:
                try:
                    return os.open(tmp, _O_CREATE, 0o600)
                except FileNotFoundError:
                    # Shard directories are made on first use: opening a store stays cheap.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(shard, 0o700)
                    return os.open(tmp, _O_CREATE, 0o600)
            except OSError as exc:
                raise _with_path(exc, tmp) from exc

        segments = self._segments
        # A blob that fits a segment slot is gathered in memory and written there (no file
        # created); a larger one goes to its temporary file as soon as it outgrows a slot.
        limit = 0 if segments is None else segments.limit - SLOT_HEAD.size
        sink = SpillSink(limit, open_temp)
        try:
            try:
                size = self._encode(key, value, cast("IO[bytes]", sink), final)
                if sink.sink is None:
                    if segments is not None and segments.write(key, sink.parts, size):
                        return size
                    sink.spill()  # refused by the segments: a file after all
                assert sink.sink is not None
                sink.sink.close()
            finally:
                if sink.fd >= 0:
                    os.close(sink.fd)
            os.replace(tmp, final)
        except BaseException as exc:
            if sink.fd >= 0:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, FbError):
                raise _with_path(exc, final) from exc
            raise
        return size

    def _store_fs(self, key: UUID, value: T, final: str) -> int:
        fs = self.path.fs
        url = fs.unstrip_protocol(final)
        if self.path.is_object_store:
            # One PUT at close (or a multipart upload completed at close): the object is
            # visible only complete. On failure the upload is discarded, never committed.
            part = int(self.path._options.get("default_block_size") or UPLOAD_PART)
            with remote_errors(url):
                file = fs.open(final, "wb", block_size=part)
            try:
                size = self._encode(key, value, cast("IO[bytes]", _Parts(file, part)), final)
                with remote_errors(url):
                    file.close()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    file.discard()
                file.closed = True  # closing would commit what was written so far
                if isinstance(exc, OSError) and not isinstance(exc, FbError):
                    raise _with_path(exc, url) from exc
                raise
            return size
        tmp = f"{self.path.shard_dir(key)}/.{key.hex}.{secrets.token_hex(4)}.tmp"
        try:
            with remote_errors(url):
                with fs.open(tmp, "wb") as file:
                    size = self._encode(key, value, file, final)
                _move(fs, tmp, final)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, FbError):
                raise _with_path(exc, url) from exc
            raise
        return size

    def _encode(self, key: UUID, value: T, file: IO[bytes], final: str) -> int:
        secret = self._secret
        header = self._header
        flags = header[5]
        file.write(header)
        mac = None if secret is None else new_mac(secret, header)
        writer = ChecksumWriter(file, new_checksum(flags, header), mac)
        try:
            self.codec.dump(value, cast("IO[bytes]", writer))
        except SinkError as failure:
            raise _with_path(failure.exc, final) from failure.exc
        except Exception as exc:
            raise CodecError(
                f"cannot encode a {type(value).__name__}: {exc}",
                codec=self.codec.name,
                key=key,
            ) from exc
        tail = b"" if mac is None else finish_mac(mac, writer.length)
        trailer = encode_trailer(flags, writer.length, writer.digest.intdigest())
        file.write(tail + trailer)
        return len(header) + writer.length + len(tail) + len(trailer)

    def load(self, key: UUID) -> T:
        """Decode blob ``key``.

        Raises:
            BlobNotFoundError: there is no blob ``key``.
            CorruptBlobError: the blob is truncated, altered or not an fb blob.
            CodecError: the blob was written by another codec, or the codec failed on
                intact bytes.
            OSError: storage failed; the message names the path.
        """
        segments = self._segments
        if segments is not None:
            found = segments.read(key)  # its errors name the segment file and offset
            if found is not None:
                return self._decode_slot(segments, key, *found)
        path = self.path.blob_path(key)
        if self.path.is_local:
            return self._load_local(key, path)
        try:
            # One GET for the whole blob: remote reads are bound by requests, not copies.
            url = self.path.fs.unstrip_protocol(path)
            with remote_errors(url):
                data = self.path.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(
                errno.ENOENT, f"no blob for key {key.hex} (was it deleted?)", path
            ) from exc
        except OSError as exc:
            raise _with_path(exc, path) from exc
        return self._decode_buffer(key, data, path)

    def _load_local(self, key: UUID, path: str) -> T:
        """Check and decode blob ``key`` from the local file at ``path`` (`load`'s file path).

        Raises:
            BlobNotFoundError: there is no file at ``path``.
            CorruptBlobError: a link, not a regular file, truncated, altered or not fb's.
            CodecError: as for `load`.
            OSError: reading failed; the message names ``path``.
        """
        try:
            fd = os.open(path, _O_READ)  # no link followed, no FIFO waited on
            try:
                st = os.fstat(fd)
                if not S_ISREG(st.st_mode):
                    raise CorruptBlobError(
                        f"not a regular file but {kind_of(st.st_mode)}", key=key, path=path
                    )
                size = st.st_size
                if size <= SMALL_BLOB:
                    # One read into one buffer, then everything happens on it: fewer system
                    # calls than streaming, and the codec sees only verified bytes. A file
                    # that shrinks meanwhile gives a short read, which fails the length
                    # checks.
                    data = os.read(fd, size)
                    os.close(fd)
                    fd = -1
                    return self._decode_buffer(key, data, path)
                file: IO[bytes] = open(fd, "rb")  # noqa: SIM115 - closed below
                fd = -1  # the file object owns it now
            finally:
                if fd >= 0:
                    os.close(fd)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(
                errno.ENOENT, f"no blob for key {key.hex} (was it deleted?)", path
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptBlobError(
                    "not a regular file but a symbolic link", key=key, path=path
                ) from None
            raise _with_path(exc, path) from exc
        with file:
            try:
                return self._decode(key, file, size, path)
            except (CorruptBlobError, CodecError):
                raise
            except OSError as exc:
                raise _with_path(exc, path) from exc

    def _decode_slot(self, segments: Segments, key: UUID, data: memoryview, where: str) -> T:
        """Check and decode blob ``key`` read from a segment slot (named ``where``)."""
        try:
            return self._decode_buffer(key, data, where)
        except CorruptBlobError:
            # Freed (and perhaps reused) while it was read: the key is gone, and the bytes
            # read were never this key's blob.
            if not segments.still_holds(key, where):
                raise BlobNotFoundError(
                    errno.ENOENT, f"no blob for key {key.hex} (was it deleted?)", where
                ) from None
            raise

    def delete(self, key: UUID) -> None:
        """Delete blob ``key``; a blob that is already gone is not an error."""
        if self._segments is not None and self._segments.free(key):
            return
        path = self.path.blob_path(key)
        if self.path.is_local:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise _with_path(exc, path) from exc
        else:
            url = self.path.fs.unstrip_protocol(path)
            with remote_errors(url), contextlib.suppress(FileNotFoundError):
                self.path.fs.rm_file(path)

    def exists(self, key: UUID) -> bool:
        """Return whether blob ``key`` is on storage."""
        if self._segments is not None and key in self._segments:
            return True
        path = self.path.blob_path(key)
        if self.path.is_local:
            try:
                return S_ISREG(os.lstat(path).st_mode)
            except FileNotFoundError:
                return False
        with remote_errors(self.path.fs.unstrip_protocol(path)):
            return bool(self.path.fs.exists(path))

    # -- durable locations -----------------------------------------------------------------

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        """Return the keys persisted at ``location`` and the names there fb does not own.

        Raises:
            FileNotFoundError: the location does not exist.
            ForeignLocationError: the location is this store's cache directory.
        """
        if location == self.path:
            raise ForeignLocationError(
                f"{location.url} is this store's cache directory; persist elsewhere"
            )
        return _locations.scan(location)

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        """Place blob ``key`` at ``location`` (hard link, else a fsynced copy).

        Returns:
            Paths whose fsync makes the placement durable (see `fsync`).

        Raises:
            ForeignLocationError: the location is not fb's (another marker, a cache).
            OSError: the location cannot be written; nothing is left half-done.
        """
        paths: list[str] = []
        if location.url not in self._claimed:
            paths += _locations.claim(location)
            with self._close_lock:
                self._claimed.add(location.url)
        slot = None if self._segments is None else self._segments.where(key)
        try:
            if slot is not None:
                # A small blob: one in-kernel copy of its bytes out of the segment.
                paths += _locations.place_range(slot, location, key)
            else:
                paths += _locations.place(self.path, location, key, durable=True)
        except OSError as exc:
            if isinstance(exc, FbError):
                raise
            raise _with_path(exc, location.blob_path(key)) from exc
        return paths

    def register(self, key: UUID, location: PreparedPath) -> bool:
        """Bring blob ``key`` from ``location`` into the cache without decoding it.

        Returns:
            False if ``location`` holds no blob ``key``.
        """
        source = location.blob_path(key)
        with remote_errors(location.fs.unstrip_protocol(source)):
            if not location.fs.exists(source):
                return False
        if self._segments is not None and key in self._segments:
            return True  # the cache holds it already, in a segment
        try:
            _locations.place(location, self.path, key, durable=False)
        except FileNotFoundError:
            if not location.fs.exists(location.blob_path(key)):
                return False
            raise
        return True

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        """Delete blob ``key`` from ``location``; return the directories to fsync."""
        return _locations.remove(location, key)

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        """Make ``paths`` (files and directories at ``location``) durable."""
        if location.is_local:
            _locations.sync_paths(paths)
