"""Segment files: the small blobs of a local `FBStore`, without a file create per blob.

Creating a file costs a directory operation (72-760 us on an ext4 with online discard,
against about 4 us to overwrite bytes of a file that exists): for a blob of some KiB that is
most of the cost of writing it. So blobs whose framed size is below a threshold
(`SEGMENT_MAX`) live in *segment files* in the store's cache directory instead, one file per
size class (`slot_size`), each grown by ``fallocate`` in chunks of many slots. A slot is a
slot head (`SLOT_HEAD`: magic, version, the key, the framed blob's length) followed by the
blob exactly as `FBStore` frames it in a file of its own (header, payload, trailer), so the
checks of a load are the same. A slot is written with one ``pwritev`` and read with one
``pread``; a freed slot has its head zeroed and goes on its class's free list, reused before
the file grows, so the segments stay at the peak of live data under churn.

The index (key -> segment, offset, length) lives in memory only: segments never outlive
their store (a crashed owner's are swept when the next store opens, as blob files are).

Fork: segment files are named ``seg-<pid>-<slot size>.fbseg``. A child starts with no
segment of its own and allocates only in files named with its own pid; it reads what it
inherited through the parent's descriptors and never frees, overwrites or deletes a slot or
file of the parent's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import struct
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from ..exceptions import BlobNotFoundError, CorruptBlobError
from ._fdsink import FdSink
from ._safety import with_path

__all__ = [
    "SEGMENT_MAX",
    "SEGMENT_NAME",
    "SLOT_HEAD",
    "SLOT_MAGIC",
    "Segments",
    "SpillSink",
    "parse_slot_head",
    "slot_size",
    "sweep_segments",
]

_log = logging.getLogger("fb")

SEGMENT_MAX = 256 << 10
"""Blobs whose slot (head + framed blob) is at most this many bytes go to segment files."""
SEGMENT_NAME = re.compile(r"^seg-([0-9]+)-([0-9]+)\.fbseg$")
"""The name of a segment file: the writer's pid and the slot size of its class."""
SLOT_MAGIC = b"fbsl"
SLOT_VERSION = 1
SLOT_HEAD = struct.Struct("<4sB3x16sQ")
"""A slot's head: magic, version, 3 bytes zero, the key (16 bytes), the framed length."""
_ZERO_HEAD = bytes(SLOT_HEAD.size)
_UNIT = 1024
_SLACK = 512
_GROW_BYTES = 4 << 20
"""A segment grows by about this much at once (one ``fallocate`` for many slots)."""
_GROW_SLOTS = 64
_FIRST_BYTES = 64 << 10
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def slot_size(size: int) -> int:
    """Return the slot size for ``size`` bytes: whole KiB, four classes per doubling, + 512.

    At most a quarter of a slot is waste (less above 16 KiB), and the classes are few, so a
    freed slot is soon reused by a blob of about the same size. The 512 bytes above each
    class hold the slot head and fb's framing: a value of a round size (64 KiB of bytes,
    say) fits the class of its size rather than the next one up.
    """
    units = -(-max(size - _SLACK, 1) // _UNIT)
    if units <= 4:
        return units * _UNIT + _SLACK
    step = 1 << (units.bit_length() - 3)
    return -(-units // step) * step * _UNIT + _SLACK


def parse_slot_head(head: bytes | memoryview) -> tuple[UUID, int] | None:
    """Return the key and framed length a slot head names, or None for a free slot.

    A head that is neither zero nor fb's (another magic or version) is None as well: the
    slot holds nothing a reader may take for a blob.
    """
    magic, version, key, length = SLOT_HEAD.unpack_from(head)
    if magic != SLOT_MAGIC or version != SLOT_VERSION:
        return None
    return UUID(bytes=key), length


class _Segment:
    """One segment file: its descriptor, slot size, length, and free slots."""

    __slots__ = ("end", "fd", "free", "path", "pid", "slot")

    def __init__(self, path: str, fd: int, slot: int) -> None:
        self.path = path
        self.fd = fd
        self.slot = slot
        self.pid = os.getpid()
        self.end = 0
        self.free: list[int] = []


_ALL: weakref.WeakSet[Segments] = weakref.WeakSet()


def _before_fork() -> None:
    for segments in list(_ALL):
        segments._lock.acquire()


def _after_fork_in_parent() -> None:
    for segments in list(_ALL):
        with contextlib.suppress(RuntimeError):
            segments._lock.release()


def _after_fork_in_child() -> None:
    for segments in list(_ALL):
        segments._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class Segments:
    """The segment files of one store's cache directory, and the index of their slots.

    Args:
        root: the cache directory (private to its store; see `FBStore`).
        limit: the largest slot, head included (see `SEGMENT_MAX`).

    Notes:
        Thread-safe. One lock guards the index and the free lists; it is never held across
        I/O: a slot is claimed under it, then written or read outside it.
    """

    def __init__(self, root: str, limit: int = SEGMENT_MAX) -> None:
        self.root = root
        self.limit = limit
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._classes: dict[int, _Segment] = {}
        self._refused: set[int] = set()
        self._index: dict[UUID, tuple[_Segment, int, int]] = {}
        self._inherited: dict[UUID, tuple[_Segment, int, int]] = {}
        self._closed = False
        _ALL.add(self)

    def __repr__(self) -> str:
        return f"<Segments {self.root} classes={len(self._classes)} blobs={len(self._index)}>"

    def _after_fork(self) -> None:
        # The parent's slots stay readable through the inherited descriptors; the child
        # never allocates, frees or deletes in the parent's files.
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._inherited = {**self._inherited, **self._index}
        self._index = {}
        self._classes = {}
        self._refused = set()

    def fits(self, length: int) -> bool:
        """Whether a framed blob of ``length`` bytes goes into a segment."""
        return SLOT_HEAD.size + length <= self.limit

    @property
    def paths(self) -> list[str]:
        """The segment files this process writes."""
        with self._lock:
            return [segment.path for segment in self._classes.values()]

    def _find(self, key: UUID) -> tuple[_Segment, int, int] | None:
        with self._lock:
            return self._index.get(key) or self._inherited.get(key)

    def __contains__(self, key: UUID) -> bool:
        return self._find(key) is not None

    def where(self, key: UUID) -> tuple[str, int, int, int] | None:
        """Return the segment file, descriptor, offset of the framed blob and its length."""
        found = self._find(key)
        if found is None:
            return None
        segment, offset, length = found
        return segment.path, segment.fd, offset + SLOT_HEAD.size, length

    # -- writing ---------------------------------------------------------------------------

    def _segment(self, slot: int) -> _Segment | None:
        """This process's segment of ``slot`` size: opened on first use; None if refused."""
        segment = self._classes.get(slot)
        if segment is not None or slot in self._refused or self._closed:
            return segment
        with self._open_lock:
            segment = self._classes.get(slot)
            if segment is not None or slot in self._refused or self._closed:
                return segment  # closed: no new file that close() would not delete
            path = f"{self.root}/seg-{os.getpid()}-{slot}.fbseg"
            try:
                # Never through a planted link, never onto a file that is there already.
                fd = os.open(path, _O_NEW, 0o600)
            except FileExistsError:
                _log.warning(
                    "fb: %s exists and is not this store's: blobs of its size are written "
                    "as files of their own",
                    path,
                )
                self._refused.add(slot)
                return None
            segment = _Segment(path, fd, slot)
            with self._lock:
                self._classes[slot] = segment
            return segment

    def _claim(self, slot: int) -> tuple[_Segment, int, int] | None:
        """Take a free slot of size ``slot``; return it and, if the file grew, by how much."""
        segment = self._segment(slot)
        if segment is None:
            return None
        with self._lock:
            if self._closed:
                return None
            if segment.free:
                return segment, segment.free.pop(), 0
            # Doubling, from about 64 KiB up to about `_GROW_BYTES` at once: a class used
            # for a few blobs does not reserve megabytes, a busy one is grown seldom.
            start = segment.end
            count = max(1, _FIRST_BYTES // slot, start // slot)
            count = max(1, min(count, _GROW_SLOTS, _GROW_BYTES // slot))
            segment.end = start + count * slot
            # Handed out lowest first: the file fills from its start.
            segment.free.extend(range(segment.end - slot, start, -slot))
            return segment, start, count * slot

    def write(self, key: UUID, parts: Sequence[Any], length: int) -> bool:
        """Write the framed blob ``parts`` (``length`` bytes) as blob ``key``.

        Returns:
            False if the blob must go to a file of its own instead (too large, or a
            segment name is taken by something that is not this store's).

        Raises:
            OSError: the write failed (the slot is freed again; nothing is indexed).
        """
        size = SLOT_HEAD.size + length
        if size > self.limit:
            return False
        claimed = self._claim(slot_size(size))
        if claimed is None:
            return False
        segment, offset, grown = claimed
        try:
            if grown:
                with contextlib.suppress(OSError):
                    # Space for many slots at once; a filesystem without fallocate
                    # simply grows the file with the writes.
                    os.posix_fallocate(segment.fd, offset, grown)
            head = SLOT_HEAD.pack(SLOT_MAGIC, SLOT_VERSION, key.bytes, length)
            _pwritev(segment.fd, [head, *parts], offset, size)
        except BaseException as exc:
            self._release(segment, offset)
            if isinstance(exc, OSError):
                raise with_path(exc, f"{segment.path}@{offset}") from exc
            raise
        with self._lock:
            old = self._index.get(key)
            self._index[key] = (segment, offset, length)
        if old is not None:  # the same key written twice: the first slot is free again
            self._release(old[0], old[1])
        return True

    def _release(self, segment: _Segment, offset: int) -> None:
        # The head is zeroed before the slot can be claimed again: a reader of the old key
        # sees a free slot, and the zeroing never lands on a new blob's head.
        with contextlib.suppress(OSError):
            os.pwrite(segment.fd, _ZERO_HEAD, offset)
        with self._lock:
            if segment.pid == os.getpid() and not self._closed:
                segment.free.append(offset)

    def free(self, key: UUID) -> bool:
        """Forget blob ``key`` and free its slot; False if no segment holds it.

        An inherited blob (of the parent process) is only forgotten: its slot is the
        parent's.
        """
        with self._lock:
            found = self._index.pop(key, None)
            if found is None:
                return self._inherited.pop(key, None) is not None
        self._release(found[0], found[1])
        return True

    # -- reading ---------------------------------------------------------------------------

    def read(self, key: UUID) -> tuple[memoryview, str] | None:
        """Read blob ``key``'s framed bytes; None if no segment holds it.

        Returns:
            The framed blob (for `BlobReader._decode_buffer`) and a name for messages,
            ``<segment file>@<offset>``.

        Raises:
            BlobNotFoundError: the slot no longer holds ``key`` (freed meanwhile).
            CorruptBlobError: the slot's head is damaged.
            OSError: the read failed; the message names the segment file.
        """
        found = self._find(key)
        if found is None:
            return None
        segment, offset, length = found
        where = f"{segment.path}@{offset}"
        size = SLOT_HEAD.size + length
        try:
            data = os.pread(segment.fd, size, offset)
        except OSError as exc:
            raise with_path(exc, where) from exc
        view = memoryview(data)
        if len(data) < SLOT_HEAD.size or data[:4] != SLOT_MAGIC or view[8:24] != key.bytes:
            self._check_gone(key, found, where)
            raise CorruptBlobError("slot head is damaged", key=key, path=where)
        if SLOT_HEAD.unpack_from(data)[3] != length or len(data) != size:
            raise CorruptBlobError(
                f"slot is truncated or its head is damaged: {len(data)} of {size} bytes",
                key=key,
                path=where,
            )
        return view[SLOT_HEAD.size :], where

    def still_holds(self, key: UUID, where: str) -> bool:
        """Whether blob ``key`` is still in the slot named ``where`` (see `read`)."""
        found = self._find(key)
        return found is not None and f"{found[0].path}@{found[1]}" == where

    def _check_gone(self, key: UUID, found: tuple[_Segment, int, int], where: str) -> None:
        if self._find(key) is not found:
            raise BlobNotFoundError(
                errno.ENOENT, f"no blob for key {key.hex} (was it deleted?)", where
            )

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Forget every blob and delete this process's segment files. Idempotent."""
        with self._lock:
            self._closed = True
            segments = list(self._classes.values())
            inherited = {entry[0] for entry in self._inherited.values()}
            self._classes = {}
            self._index = {}
            self._inherited = {}
        for segment in segments:
            with contextlib.suppress(OSError):
                os.unlink(segment.path)
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        for segment in inherited:
            if segment.pid != os.getpid():
                with contextlib.suppress(OSError):
                    os.close(segment.fd)  # the child's copy of the descriptor only

    def disk_bytes(self) -> int:
        """The bytes this process's segment files take (their lengths)."""
        with self._lock:
            return sum(segment.end for segment in self._classes.values())


class SpillSink:
    """Gathers a blob in memory while it fits a segment slot; past that, writes a file.

    ``open_file`` is called once, when the blob outgrows ``limit``; everything gathered so
    far and everything after goes to that descriptor through an `FdSink`. A piece that is
    not immutable ``bytes`` is copied when gathered (its owner may reuse it once ``write``
    returns); a small blob is at most a segment slot, so the copy is small.
    """

    __slots__ = ("_open", "fd", "limit", "parts", "sink", "size")

    def __init__(self, limit: int, open_file: Any) -> None:
        self.limit = limit
        self._open = open_file
        self.parts: list[Any] = []
        self.size = 0
        self.fd = -1
        self.sink: FdSink | None = None

    def write(self, data: Any) -> int:
        if self.sink is not None:
            return self.sink.write(data)
        view = data if isinstance(data, memoryview) else memoryview(data)
        size = view.nbytes
        if self.size + size > self.limit:
            return self.spill().write(data)
        self.parts.append(data if isinstance(view.obj, bytes) else view.tobytes())
        self.size += size
        return size

    def spill(self) -> FdSink:
        """Open the file and write what was gathered to it; return its sink."""
        self.fd = self._open()
        self.sink = FdSink(self.fd)
        for part in self.parts:
            self.sink.write(part)
        self.parts = []
        return self.sink


def sweep_segments(root: str, own: Iterable[str]) -> int:
    """Delete the segment files in ``root`` but ``own``: regular files only, never a link.

    Returns:
        How many files were deleted.
    """
    keep = set(own)
    removed = 0
    with os.scandir(root) as entries:
        for item in entries:
            if (
                SEGMENT_NAME.match(item.name)
                and item.path not in keep
                and item.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.path)
                    removed += 1
    return removed


def _pwritev(fd: int, parts: list[Any], offset: int, size: int) -> None:
    """Write ``parts`` (``size`` bytes in all) at ``offset``, carrying on after a short write."""
    written = os.pwritev(fd, parts, offset)
    if written < size:  # rare (a signal, a full disk): finish with plain writes
        whole = b"".join(bytes(part) for part in parts)
        while written < size:
            written += os.pwrite(fd, whole[written:], offset + written)
