"""The item state machine of a pool: every transition happens under the pool's lock.

`FBPool` (in ``_pool.py``) is the public surface; this base class holds the decisions:
offering items for eviction, dropping values, installing loaded values, acquiring and
releasing pins. Write-back (the queue, completion, retries) is in ``_writeback.py``, and
what a caller asks of one item outside a guard (write now, evict, prefetch) in
``_requests.py``; the loops that wait for a guard (or refuse one) are in ``_acquire.py``.

I/O never happens under the lock: a step decides under the lock, then the caller (or a
worker) does the I/O, then another step records the outcome and re-checks what changed
meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from ._acquire import Acquire, Step
from ._entry import (
    MISSING,
    NO_VALUE,
    Batch,
    Entry,
    HitCount,
    add_reader,
    forget_reader,
    getter,
    owner,
    quiet,
    regate,
    set_value,
)
from ._keys import new_key
from ._lru import COLD, HOT, SegmentTaggingLRU
from ._requests import Requests
from ._writeback import RETRY_FIRST_DELAY, WriteBack, _events, _log
from .exceptions import CorruptBlobError, HandleClosedError

if TYPE_CHECKING:
    from .backends import PreparedPath


def _event_evict(key: UUID, nbytes: int, dirty: bool) -> None:
    _events.debug(
        "fb: evicted %s (%d bytes, %s)",
        key.hex,
        nbytes,
        "written" if dirty else "clean",
        extra={"fb_event": "evict", "fb_key": key.hex, "fb_nbytes": nbytes, "fb_dirty": dirty},
    )


__all__ = ["RETRY_FIRST_DELAY", "PoolCore"]


def _written_late(entry: Entry) -> bool:
    """Whether a write of ``entry`` in flight keeps a write guard waiting.

    An early write does not: the guard gives the item a new key, and the write of the old
    one deletes its blob when it ends. An eviction write or a ``write_now`` does.
    """
    return entry.writing and not entry.early


T = TypeVar("T")


def _source_path(location: PreparedPath, key: UUID) -> str:
    """The persisted blob ``key`` at ``location``: a path on local disk, else a URL."""
    path = location.blob_path(key)
    return path if location.is_local else location.url + path[len(location.root) :]


_POOLS: weakref.WeakSet[PoolCore[Any]] = weakref.WeakSet()


_FORKING: list[PoolCore[Any]] = []
"""The pools whose locks `_before_fork` took, held strongly until the after-fork step.

A pool that is garbage can be collected between the two steps (the child's other fork
handlers allocate): taken from the weak set again, it would keep its lock held, and the
janitor closing its handles would wait on it forever.
"""


def _before_fork() -> None:
    # Hold every pool's lock across fork() so no child inherits a pool mid-transition.
    _FORKING[:] = list(_POOLS)
    for pool in _FORKING:
        pool._lock.acquire()


def _after_fork_in_parent() -> None:
    pools, _FORKING[:] = list(_FORKING), []
    for pool in pools:
        with contextlib.suppress(RuntimeError):
            pool._lock.release()


def _after_fork_in_child() -> None:
    pools, _FORKING[:] = list(_FORKING), []
    for pool in pools:
        pool._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class PoolCore(Acquire[T], Requests[T], WriteBack[T]):
    """State transitions of a pool's items (see the module docstring)."""

    sizeof: Callable[[Any], int]
    _lru: SegmentTaggingLRU[Entry]
    _shared: Any  # the store's shared state (its ``closed`` flag), read by the hit path
    _hit_count: HitCount  # not in _n: a slot is cheaper on the hit path
    _resident_items: int
    _resident_bytes: int
    on_evict: Callable[[UUID, int, bool], object] | None
    on_load: Callable[[UUID, int, float], object] | None

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, and no work in flight.

        Writes and loads in flight died with the parent's threads, so their entries go back
        to what they were before (values stay resident and dirty; a load can be retried).

        A value without a blob gets a fresh key: the parent may still write it under the old
        one (a write in flight, or its own eviction later), and a blob the child wrote under
        that name would be the child's to delete. Blobs that exist are the parent's too and
        keep their keys; the store never deletes those (``_workers._after_fork_in_child``).
        """
        self._lock = threading.Lock()
        self._pending_writes = self._pending_bytes = 0
        self._write_queue = deque()
        self._writers = 0
        self._drain_waiters = []
        self._failed = {}
        self._retry_timer = None
        for entry in self._lru.order():
            entry.writing = entry.evicting = entry.loading = entry.early = False
            entry.early_bytes = 0
            entry.waiter = None
            if not entry.blob:
                entry.key = new_key()

    # -- internals: bookkeeping under the lock ---------------------------------------------

    def _measure(self, value: Any) -> int:
        size = self.sizeof(value)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TypeError(
                f"sizeof {self.sizeof!r} must return an int >= 0, returned {size!r} "
                f"for a {type(value).__name__}"
            )
        return size

    def _after(self, batch: Batch) -> None:
        """Run what an operation decided under the lock, now that it is released."""
        for waiter in batch.wake:
            if not waiter.done():
                waiter.set_result(None)
        if batch.work:
            self._queue_writes(batch.work)
        batch.garbage.clear()  # values dropped from memory die here, outside the lock
        for hook, args in batch.events:
            try:
                hook(*args)
            except Exception:
                _log.exception("fb: hook %r failed; the pool carries on", hook)

    def _wake(self, entry: Entry, batch: Batch) -> None:
        if entry.waiter is not None:
            batch.wake.append(entry.waiter)
            entry.waiter = None

    def _waiter(self, entry: Entry) -> Future[None]:
        if entry.waiter is None:
            entry.waiter = Future()
        return entry.waiter

    def _offer_all(self, entries: Iterable[Entry], batch: Batch) -> None:
        for entry in entries:
            self._offer(entry, batch)

    def _offer(self, entry: Entry, batch: Batch) -> None:
        """Evict ``entry`` if it can leave memory now; otherwise it is re-offered later."""
        if entry.value is MISSING or entry.closed or entry.writing:
            return  # not resident, gone, or a write in flight re-checks when it ends
        if entry.writer or entry.loading or self.store.closed:
            return  # pinned: re-offered when the guard goes
        if not quiet(entry):
            return  # pinned: the gate stays shut, so the last release re-offers it
        if entry.blob:
            self._drop(entry, batch, dirty=False)
            return
        if entry.unencodable:
            return  # its codec refused it once: it stays resident until a write guard
        entry.writing = True
        entry.evicting = True
        self._pending_writes += 1
        self._pending_bytes += entry.size
        batch.work.append((entry, entry.key, entry.value))

    def _drop(self, entry: Entry, batch: Batch, *, dirty: bool) -> None:
        batch.garbage.append(entry.value)
        entry.value = MISSING  # set_value, inline: this runs on every eviction
        entry.get = NO_VALUE
        self._resident_items -= 1
        self._resident_bytes -= entry.size
        self._n["evictions_dirty" if dirty else "evictions_clean"] += 1
        if self.on_evict is not None:
            batch.events.append((self.on_evict, (entry.key, entry.size, dirty)))
        if _events.isEnabledFor(logging.DEBUG):
            batch.events.append((_event_evict, (entry.key, entry.size, dirty)))
        if entry.segment >= 0:
            self._offer_all(self._lru.set_weight(entry, 0), batch)

    def _install(self, entry: Entry, value: Any, size: int, batch: Batch) -> None:
        entry.value = value  # set_value, inline: this runs on every miss
        entry.get = getter(value)
        entry.size = size
        self._resident_items += 1
        self._resident_bytes += size
        self._offer_all(self._lru.set_weight(entry, size), batch)

    def _finalize(self, entry: Entry, batch: Batch) -> None:
        """Remove a closed entry whose last guard is gone."""
        self._unfail(entry, batch)
        if entry.segment >= 0:
            self._lru.remove(entry)
        if entry.value is not MISSING:
            batch.garbage.append(entry.value)
            set_value(entry, MISSING)
            self._resident_items -= 1
            self._resident_bytes -= entry.size
        if entry.blob and not entry.writing and not entry.loading:
            entry.blob = False
            self.store._release(entry.key)
        # A write in flight deletes its blob when it ends (see _write_done); a load in
        # flight releases it when the read is done (see _load_blob).
        self._wake(entry, batch)

    def _close(self, entry: Entry) -> None:
        batch = Batch()
        with self._lock:
            if entry.closed:
                return
            entry.closed = True
            if quiet(entry) and not entry.writer:
                self._finalize(entry, batch)
        self._after(batch)

    def _check_usable(self, entry: Entry) -> None:
        if entry.closed:
            raise HandleClosedError(f"the handle for key {entry.key.hex} was closed")
        self.store._check_open()

    def _begin_write(self, entry: Entry, batch: Batch, who: object = None) -> None:
        """Give ``entry`` to a write guard: new key, the old blob reference dropped."""
        entry.writer = True
        entry.writer_owner = owner() if who is None else who
        entry.source = None  # the new key's blob will be this store's own
        if entry.blob:
            entry.blob = False
            self.store._release(entry.key)
        entry.key = new_key()
        entry.unencodable = False  # the guard may make it encodable: try again

    # -- internals: acquiring guards -------------------------------------------------------

    def _try_acquire(self, entry: Entry, write: bool, batch: Batch, who: object) -> Any:
        """Under the lock: pin and return the value, or return `MISSING` (no I/O, no wait)."""
        value = entry.value
        if value is MISSING:
            return MISSING
        if write:
            if entry.writer or entry.loading or _written_late(entry) or not quiet(entry):
                return MISSING
            self._begin_write(entry, batch, who)
        else:
            if entry.writer or entry.evicting:
                return MISSING
            add_reader(entry, who)
            regate(entry)
        if entry.segment != HOT:
            self._offer_all(self._lru.touch(entry), batch)
        return value

    def _acquire_step(
        self, entry: Entry, write: bool, touched: bool, batch: Batch, who: object
    ) -> tuple[Any, Step]:
        """Under the lock: one step of a blocking acquire.

        Returns (value, None) when pinned, (MISSING, waiter) to wait, (MISSING, key) when
        the caller must load blob ``key`` (``entry.loading`` is then set), or (MISSING,
        error) when ``who`` would wait for a guard it holds itself.
        """
        self._check_usable(entry)
        if not touched and entry.segment != HOT:
            # Move first, as the crate does: if the caller gives up, the work is not wasted
            # by an immediate re-eviction.
            self._offer_all(self._lru.touch(entry), batch)
        if entry.value is not MISSING:
            if write:
                if not (entry.writer or entry.loading or _written_late(entry)) and quiet(entry):
                    self._begin_write(entry, batch, who)
                    return entry.value, None
            elif not entry.writer:
                add_reader(entry, who)
                regate(entry)
                return entry.value, None
            # A pinned value is resident, so a guard this caller holds is seen here.
            conflict = self._conflict(entry, who, write)
            if conflict is not None:
                return MISSING, conflict
            return MISSING, self._waiter(entry)
        if entry.loading or entry.writer:
            return MISSING, self._waiter(entry)
        entry.loading = True
        return MISSING, entry.key

    def _load_blob(self, entry: Entry, key: UUID, write: bool, who: object = None) -> Any:
        """Read blob ``key`` (blocking, this thread), install the value, pin it, return it.

        The pin is ``who``'s (None: a pin no guard holds, as a prefetch's).
        """
        start = time.perf_counter()
        try:
            value = self.store.strategy.load(key)
            size = self._measure(value)
        except BaseException as exc:
            batch = Batch()
            with self._lock:
                source = entry.source
                entry.loading = False
                self._n["load_errors"] += 1
                self._seconds["load"] += time.perf_counter() - start
                self._wake(entry, batch)
                closed = entry.closed
                if closed:
                    self._finalize(entry, batch)
            self._after(batch)
            if closed:
                raise HandleClosedError(
                    f"the handle for key {key.hex} was closed during its load"
                ) from exc
            if source is not None and isinstance(exc, CorruptBlobError) and exc.source is None:
                # The cache copy came from a persisted blob: name it, it is likely bad too.
                raise CorruptBlobError(
                    exc.reason, key=exc.key, path=exc.path, source=_source_path(source, key)
                ) from exc
            raise
        batch = Batch()
        with self._lock:
            entry.loading = False
            self._seconds["load"] += time.perf_counter() - start
            self._wake(entry, batch)
            if entry.closed:
                batch.garbage.append(value)
                closed = True
                self._finalize(entry, batch)
            else:
                closed = False
                self._n["loads"] += 1
                self._n["bytes_loaded"] += size
                if self.on_load is not None:
                    batch.events.append((self.on_load, (key, size, time.perf_counter() - start)))
                # Pin before installing so the install's cascade cannot evict it.
                if write:
                    self._begin_write(entry, batch, who)
                else:
                    add_reader(entry, who)
                self._install(entry, value, size, batch)
                regate(entry)
        self._after(batch)
        if closed:
            raise HandleClosedError(f"the handle for key {key.hex} was closed during its load")
        return value

    def _slow_load(self, entry: Entry, who: object, timeout: float | None) -> Any:
        """The hit path found the gate shut: the locked path, whose first turn takes its pin."""
        return self._acquire(entry, False, who, timeout, unpin=True)

    def _unpin_locked(self, entry: Entry, who: object, batch: Batch) -> None:
        """Under the lock: give back a read pin of ``who`` that the step after this re-takes.

        What `_release` does, but for the re-offer of a cold item: the acquire step that
        follows in the same lock section moves the item to the front, so offering it first
        would only throw away the value about to be read. If that step waits or loads
        instead, whoever holds the item then re-offers it when they let go.
        """
        forget_reader(entry, who)
        if entry.closed and not entry.writer and quiet(entry):
            self._finalize(entry, batch)
        self._wake(entry, batch)

    def _unpinned(self, entry: Entry) -> None:
        """A lock-free release found the gate shut: do under the lock what it skipped."""
        batch = Batch()
        with self._lock:
            if not entry.writer and quiet(entry):
                if entry.closed:
                    self._finalize(entry, batch)
                elif entry.segment == COLD:
                    self._offer(entry, batch)
            self._wake(entry, batch)
            regate(entry)
        self._after(batch)

    def _release(self, entry: Entry, write: bool, who: object = None) -> None:
        """Give back a pin (a read pin of ``who``); re-offer the item if it was pushed out."""
        size = entry.size
        error: BaseException | None = None
        if write and not entry.closed:
            try:
                size = self._measure(entry.value)
            except BaseException as exc:  # the pin is given back all the same
                error = exc
        batch = Batch()
        with self._lock:
            if write:
                entry.writer = False
                entry.writer_owner = None
            else:
                forget_reader(entry, who)
            if not entry.writer and quiet(entry):
                if entry.closed:
                    self._finalize(entry, batch)
                else:
                    if write and size != entry.size:
                        self._resident_bytes += size - entry.size
                        entry.size = size
                        self._offer_all(self._lru.set_weight(entry, size), batch)
                    if entry.segment == COLD:
                        self._offer(entry, batch)
                    elif write:
                        self._write_early(entry, batch)
            self._wake(entry, batch)
            regate(entry)
        self._after(batch)
        if error is not None:
            raise error
