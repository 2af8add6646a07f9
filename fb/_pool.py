"""FBPool: the public surface of a pool (the item state machine is in ``_core.py``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal, TypeVar
from uuid import UUID

import attrs

from ._core import _POOLS, RETRY_FIRST_DELAY, PoolCore, _source_path
from ._entry import MISSING, Batch, Entry, HitCount, regate, wait
from ._handle import Fb
from ._keys import new_key
from ._lru import SegmentTaggingLRU
from ._persist import TrackedPath, check_tracked, parse_key
from ._sizeof import default_sizeof
from ._stats import PoolStatistics
from ._store import BackingStore
from .exceptions import CorruptBlobError, NotPicklableError

__all__ = ["FBPool"]

T = TypeVar("T")

DEFAULT_MAX_PENDING_BYTES = 256 * 2**20

WriteMode = Literal["early", "on_evict"]
WRITE_MODES = ("early", "on_evict")


def default_write(store: BackingStore[Any]) -> WriteMode:
    """The write mode measured to pay on ``store``: early on local disk, else on eviction.

    On local disk an early write costs a page-cache write that eviction would have paid
    anyway, later and in the reader's way; on an object store it costs a PUT (and money) for
    every item, also those that never leave memory (see docs/performance.md).
    """
    path = getattr(store.strategy, "path", None)
    return "early" if getattr(path, "is_local", False) is True else "on_evict"


def _check_budget(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


@attrs.define(eq=False, repr=False, init=False, slots=False)
class FBPool(PoolCore[T]):
    """Keeps the hot values of many items in memory and the cold ones on storage.

    ``insert`` does no I/O in the caller's thread: it puts the value at the most recent end
    of the order and returns an `Fb` handle. With ``write="early"`` (the default on local
    disk) a worker writes the value soon after; otherwise items pushed past the budget are
    written in the background (only if they have no blob yet). A value is dropped from
    memory only once its write succeeded. Loading a handle whose value is not resident
    reads it back.

    The order is the crate's two-segment LRU, measured in items and bytes: a hit in the front
    half of the budget costs no reordering; other hits move the item to the front; every item
    pushed past the budget is offered for eviction once.

    Args:
        store: the `BackingStore` that owns storage and worker threads.
        max_items: at most this many values in memory (0: write through and drop).
        max_bytes: at most this many bytes of values in memory, as measured by ``sizeof``.
        sizeof: how to measure a value (default `fb.default_sizeof`: bytes-like, numpy
            arrays and anything with ``nbytes``, str, containers).
        max_pending_bytes: how many bytes may wait for write-back before ``insert`` blocks
            (default 256 MiB).
        on_evict: called as ``on_evict(key, nbytes, dirty)`` after a value left memory.
        on_load: called as ``on_load(key, nbytes, seconds)`` after a value was read back.
        on_error: called with each write-back error of this pool (the store collects
            them for `BackingStore.finished` as well).
        write: when a dirty value is written. ``"early"``: in the background soon after
            its insert (and after a write guard's release), so that eviction usually finds
            a clean copy and drops it without I/O; the cost is a write for items that would
            never have been evicted. ``"on_evict"``: only when it is pushed out of the
            budget (or asked for: `Fb.write_now`, `Fb.persist`). Default (None): early on
            local disk, on eviction elsewhere (object stores, memory://, plugins).

    Hooks run on whichever thread made the event happen, never under the pool's lock; an
    exception in a hook is logged and never breaks the pool.

    Notes:
        Thread-safe; one lock per pool, never held across I/O, codec or user code. Hits and
        ``statistics`` never block on I/O; ``insert`` blocks only for backpressure; a miss
        blocks the caller (``load``) or awaits a worker (``aload``). Values pinned by a
        guard, being written, or whose write-back failed stay in memory beyond the budget
        until they can leave.
    """

    # The item state's attributes are declared on PoolCore; these are the pool's own.
    max_items: int | None
    write: WriteMode
    max_bytes: int | None
    _owns_store: bool

    def __init__(
        self,
        store: BackingStore[T],
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] | None = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        on_evict: Callable[[UUID, int, bool], object] | None = None,
        on_load: Callable[[UUID, int, float], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
        write: WriteMode | None = None,
    ) -> None:
        if not isinstance(store, BackingStore):
            raise TypeError(f"store must be a BackingStore, not {store!r}")
        self.max_items = _check_budget("max_items", max_items)
        self.max_bytes = _check_budget("max_bytes", max_bytes)
        if max_items is None and max_bytes is None:
            raise ValueError("give a budget: max_items, max_bytes, or both")
        if sizeof is not None and not callable(sizeof):
            raise TypeError(f"sizeof must be callable, not {sizeof!r}")
        if write is None:
            write = default_write(store)
        elif write not in WRITE_MODES:
            raise ValueError(f"write must be one of {WRITE_MODES} or None, not {write!r}")
        self.write = write
        self._early = write == "early"
        self.store = store
        self._shared = store._shared  # the hit path reads ``closed`` here
        self.sizeof = default_sizeof if sizeof is None else sizeof
        self._lock = threading.Lock()
        self._lru = SegmentTaggingLRU(self.max_items, self.max_bytes)
        self._n = dict.fromkeys(
            (
                "misses",
                "loads",
                "stores",
                "evictions_clean",
                "evictions_dirty",
                "bytes_written",
                "bytes_loaded",
                "write_errors",
                "load_errors",
                "insert_waits",
            ),
            0,
        )
        self._hit_count = HitCount()
        self._seconds = {"load": 0.0, "store": 0.0}
        self._resident_items = 0
        self._resident_bytes = 0
        self._pending_writes = 0
        self._write_queue = deque()
        self._writers = 0
        self._pending_bytes = 0
        if max_pending_bytes is None:
            # Not "no bound": a pool without one could exhaust memory when storage is slow.
            raise TypeError(
                f"max_pending_bytes must be an int (bytes), not None; leave it out for the "
                f"default ({DEFAULT_MAX_PENDING_BYTES} bytes)"
            )
        pending = _check_budget("max_pending_bytes", max_pending_bytes)
        assert pending is not None
        self.max_pending_bytes = pending
        self._drain_waiters = []
        self._failed = {}
        self._retry_delay = RETRY_FIRST_DELAY
        self._retry_timer = None
        for name, hook in (("on_evict", on_evict), ("on_load", on_load), ("on_error", on_error)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, not {hook!r}")
        self.on_evict = on_evict
        self.on_load = on_load
        self.on_error = on_error
        self._owns_store = False
        _POOLS.add(self)

    def __repr__(self) -> str:
        return (
            f"<FBPool items={len(self._lru)} resident={self._resident_items} "
            f"({self._resident_bytes} B) max_items={self.max_items} "
            f"max_bytes={self.max_bytes} write={self.write} "
            f"pending_writes={self._pending_writes}>"
        )

    def __len__(self) -> int:
        return len(self._lru)

    def __reduce__(self) -> Any:
        raise NotPicklableError(
            f"an FBPool cannot be pickled ({self!r}): its values and handles live in this "
            "process. Pickle the values, or persist the items (Fb.persist, then "
            "store.fsync) and register their keys in a pool of the other process"
        )

    # -- public API ------------------------------------------------------------------------

    def insert(self, value: T) -> Fb[T]:
        """Put ``value`` in the pool under a fresh random key and return its handle.

        No I/O happens here; items pushed past the budget are written in the background.
        When more than ``max_pending_bytes`` wait for write-back, this blocks until the
        writes drain (backpressure: a producer faster than storage cannot exhaust memory).

        Raises:
            StoreClosedError: the store was closed.
        """
        while True:
            with self._lock:
                waiter = self._backpressure()
            if waiter is None:
                return self._insert(value)
            waiter.result()

    async def ainsert(self, value: T) -> Fb[T]:
        """Async twin of `insert`: waits for backpressure without blocking the event loop."""
        while True:
            with self._lock:
                waiter = self._backpressure()
            if waiter is None:
                return self._insert(value)
            await wait(waiter)

    def _insert(self, value: T) -> Fb[T]:
        self.store._check_open()
        size = self._measure(value)
        entry = Entry(new_key(), value, size)
        batch = Batch()
        with self._lock:
            self._resident_items += 1
            self._resident_bytes += size
            self._offer_all(self._lru.push_front(entry, size), batch)
            regate(entry)
            if self._early:
                self._write_early(entry, batch)
        self._after(batch)
        return Fb(self, entry)

    def register(self, tracked: TrackedPath, key: UUID | str) -> Fb[T] | None:
        """Make the item persisted at ``tracked`` under ``key`` available again, unloaded.

        The blob is linked (or copied) into the cache; nothing is decoded until the handle
        is loaded. The new handle is clean and starts at the cold end of the order.
        Registering one key twice gives two handles that share one cache blob.

        Returns:
            The handle, or None if ``tracked`` holds no blob ``key``.

        Raises:
            TypeError: ``key`` is neither a UUID nor a string.
            InvalidKeyError: ``key`` is a string that is not 32 hex digits (checked before
                any I/O).
            StoreClosedError: the store was closed.
        """
        key = parse_key(key)
        check_tracked(tracked, self.store)
        if not self.store._retain_registered(key, tracked.path):
            return None
        tracked._added(key, (), placed=False)
        entry = Entry(key, MISSING, 0, blob=True)
        entry.source = tracked.path  # named by a CorruptBlobError of the cache copy
        with self._lock:
            self._lru.push_back(entry, 0)
        return Fb(self, entry)

    def _register_loaded(self, tracked: TrackedPath, key: UUID) -> tuple[Fb[T], T] | None:
        """`register` blob ``key`` and load its value at once; return the handle and value.

        What a `register` followed by a load does, with the item already resident when its
        handle appears: one locked turn instead of the four of a register, an acquire, its
        install and a release (a fifth of a cold 64 KiB get of a shelf). The load counts
        as a miss, as the handle's first load would. Returns None if ``tracked`` holds no
        blob ``key``; raises what `Fb.load` raises, with no handle left behind.
        """
        if not self.store._retain_registered(key, tracked.path):
            return None
        start = time.perf_counter()
        try:
            value: T = self.store.strategy.load(key)
            size = self._measure(value)
        except BaseException as exc:
            self.store._release(key)
            with self._lock:
                self._n["load_errors"] += 1
                self._seconds["load"] += time.perf_counter() - start
            if isinstance(exc, CorruptBlobError) and exc.source is None:
                raise CorruptBlobError(
                    exc.reason, key=exc.key, path=exc.path, source=_source_path(tracked.path, key)
                ) from exc
            raise
        tracked._added(key, (), placed=False)
        entry = Entry(key, value, size, blob=True)
        entry.source = tracked.path
        batch = Batch()
        with self._lock:
            elapsed = time.perf_counter() - start
            self._seconds["load"] += elapsed
            self._n["misses"] += 1
            self._n["loads"] += 1
            self._n["bytes_loaded"] += size
            if self.on_load is not None:
                batch.events.append((self.on_load, (key, size, elapsed)))
            self._resident_items += 1
            self._resident_bytes += size
            self._offer_all(self._lru.push_front(entry, size), batch)
            regate(entry)
        self._after(batch)
        return Fb(self, entry), value

    async def aregister(self, tracked: TrackedPath, key: UUID | str) -> Fb[T] | None:
        """Async twin of `register`."""
        key = parse_key(key)
        return await asyncio.to_thread(self.register, tracked, key)

    def register_all(self, tracked: TrackedPath) -> dict[UUID, Fb[T]]:
        """Register every key at ``tracked`` (one fresh scan of the location).

        Returns:
            The handles by key; a key deleted between the scan and its registration is
            left out.
        """
        handles: dict[UUID, Fb[T]] = {}
        for key in sorted(tracked.rescan()):
            handle = self.register(tracked, key)
            if handle is not None:
                handles[key] = handle
        return handles

    async def aregister_all(self, tracked: TrackedPath) -> dict[UUID, Fb[T]]:
        """Async twin of `register_all`."""
        return await asyncio.to_thread(self.register_all, tracked)

    def statistics(self) -> PoolStatistics:
        """Return a frozen snapshot of the pool's counters."""
        with self._lock:
            return PoolStatistics(
                items=len(self._lru),
                resident_items=self._resident_items,
                resident_bytes=self._resident_bytes,
                pending_writes=self._pending_writes,
                pending_bytes=self._pending_bytes,
                background_errors=self.store.pending_errors,
                load_seconds=self._seconds["load"],
                store_seconds=self._seconds["store"],
                hits=self._hit_count.n,
                **self._n,
            )

    def order(self) -> list[UUID]:
        """Return the keys of every item, most recent first (for inspection and tests)."""
        with self._lock:
            return [entry.key for entry in self._lru.order()]

    def close(self) -> None:
        """Close every item still in the pool: values leave memory, blobs are released.

        The store stays open (it may serve other pools), unless the pool came from
        `fb.open_pool`, which gives the pool its own store: then the store is closed too
        (after its background work drained). Idempotent.
        """
        with self._lock:
            entries = self._lru.order()
        for entry in entries:
            self._close(entry)
        with self._lock:
            timer, self._retry_timer = self._retry_timer, None
        if timer is not None:
            timer.cancel()
        if self._owns_store:
            self.store.close()

    def evict_lru(self) -> int:
        """Make the least recently used value that can leave memory leave it now.

        Writes its blob first if it has none (blocking). Pinned values and values being
        loaded or written are passed over. This is what a memory manager calls under
        pressure (Dask's manual eviction, for one).

        Returns:
            The bytes freed (the value's ``sizeof``), or -1 if no value could leave.
        """
        return self._evict_lru()

    def retry_writes(self) -> int:
        """Retry now every eviction write that failed; return how many were started.

        Failed write-backs are retried on their own, with exponential backoff (0.5 s
        doubling to 30 s, with jitter); call this after fixing the cause (disk space,
        credentials) to skip the wait. Until a write succeeds the value stays in memory.
        """
        return self._retry(float("inf"))

    def prefetch(self, handles: Iterable[Fb[T]]) -> Future[None]:
        """Start loading every non-resident handle of ``handles`` in the background.

        The loads run concurrently on the store's workers (several GETs in flight on an
        object store); each value lands at the front of the order, unpinned. The returned
        future completes when all loads ended and holds the first error, if any.
        """
        jobs: list[Future[None]] = []
        for handle in handles:
            if not isinstance(handle, Fb):
                raise TypeError(f"prefetch takes Fb handles, not {handle!r}")
            if handle._pool is not self:
                raise ValueError(f"{handle!r} belongs to another pool")
            job = self._prefetch(handle._entry)
            if job is not None:
                jobs.append(job)
        return _all_done(jobs)

    async def aprefetch(self, handles: Iterable[Fb[T]]) -> None:
        """Async twin of `prefetch`: waits for the loads without blocking the event loop."""
        await wait(self.prefetch(handles))

    def __enter__(self) -> FBPool[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> FBPool[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _all_done(jobs: list[Future[None]]) -> Future[None]:
    """Return a future that completes when every job has, with the first error if any."""
    done: Future[None] = Future()
    if not jobs:
        done.set_result(None)
        return done
    left = [len(jobs)]
    lock = threading.Lock()

    def _one(job: Future[None]) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            errors = [e for e in (j.exception() for j in jobs) if e is not None]
            if len(errors) == 1:
                done.set_exception(errors[0])
            elif errors:
                done.set_exception(BaseExceptionGroup(f"{len(errors)} prefetches failed", errors))
            else:
                done.set_result(None)

    for job in jobs:
        job.add_done_callback(_one)
    return done
