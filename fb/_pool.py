"""FBPool: live values, recency order, budgets, and the state of every item."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID, uuid4

import attrs

from ._lru import COLD, HOT, SegmentedLRU
from ._sizeof import default_sizeof
from ._stats import PoolStatistics
from ._store import BackingStore
from .exceptions import HandleClosedError, StoreClosedError

if TYPE_CHECKING:
    from ._handle import Fb

__all__ = ["FBPool"]

T = TypeVar("T")
R = TypeVar("R")

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


class _Entry:
    """The state of one item; guarded by its pool's lock.

    ``value`` is `_MISSING` when the item is not resident. ``blob`` is true when storage
    holds a complete blob under ``key`` that this entry references. ``writing`` is true while
    a write of ``value`` is in flight (eviction or ``write_now``); ``evicting`` marks the
    eviction kind, during which ``try_load`` answers None as the crate does.
    """

    __slots__ = (
        "blob",
        "closed",
        "evicting",
        "key",
        "loading",
        "readers",
        "size",
        "value",
        "waiter",
        "writer",
        "writer_owner",
        "writing",
    )

    def __init__(self, key: UUID, value: Any, size: int, *, blob: bool = False) -> None:
        self.key = key
        self.value = value
        self.size = size
        self.blob = blob
        self.readers = 0
        self.writer = False
        self.writer_owner: tuple[int, object] | None = None
        self.writing = False
        self.evicting = False
        self.loading = False
        self.closed = False
        self.waiter: Future[None] | None = None


class _Batch:
    """What an operation decided under the lock and runs after releasing it."""

    __slots__ = ("garbage", "wake", "work")

    def __init__(self) -> None:
        self.work: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.wake: list[Future[None]] = []
        self.garbage: list[Any] = []


def _owner() -> tuple[int, object]:
    try:
        task: object = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), task


def _check_budget(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


@attrs.define(eq=False, repr=False, init=False)
class FBPool(Generic[T]):
    """Keeps the hot values of many items in memory and the cold ones on storage.

    ``insert`` does no I/O: it puts the value at the most recent end of the order and
    returns an `Fb` handle. Items pushed past the budget are written to the store in the
    background (only if they have no blob yet) and dropped from memory once the write
    succeeded. Loading a handle whose value is not resident reads it back.

    The order is the crate's two-segment LRU, measured in items and bytes: a hit in the front
    half of the budget costs no reordering; other hits move the item to the front; every item
    pushed past the budget is offered for eviction once.

    Args:
        store: the `BackingStore` that owns storage and worker threads.
        max_items: at most this many values in memory (0: write through and drop).
        max_bytes: at most this many bytes of values in memory, as measured by ``sizeof``.
        sizeof: how to measure a value (default `fb.default_sizeof`: bytes-like, numpy
            arrays and anything with ``nbytes``, str, containers).

    Notes:
        Thread-safe; one lock per pool, never held across I/O, codec or user code. ``insert``,
        ``statistics`` and hits never block on I/O; a miss blocks the caller (``load``) or
        awaits a worker (``aload``). Values pinned by a guard, being written, or whose
        write-back failed stay in memory beyond the budget until they can leave.
    """

    store: BackingStore[T]
    max_items: int | None
    max_bytes: int | None
    sizeof: Callable[[Any], int]
    _lock: threading.Lock
    _lru: SegmentedLRU[_Entry]
    _n: dict[str, int]
    _seconds: dict[str, float]
    _resident_items: int
    _resident_bytes: int
    _pending_writes: int

    def __init__(
        self,
        store: BackingStore[T],
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] | None = None,
    ) -> None:
        if not isinstance(store, BackingStore):
            raise TypeError(f"store must be a BackingStore, not {store!r}")
        self.max_items = _check_budget("max_items", max_items)
        self.max_bytes = _check_budget("max_bytes", max_bytes)
        if max_items is None and max_bytes is None:
            raise ValueError("give a budget: max_items, max_bytes, or both")
        if sizeof is not None and not callable(sizeof):
            raise TypeError(f"sizeof must be callable, not {sizeof!r}")
        self.store = store
        self.sizeof = default_sizeof if sizeof is None else sizeof
        self._lock = threading.Lock()
        self._lru = SegmentedLRU(self.max_items, self.max_bytes)
        self._n = dict.fromkeys(
            (
                "hits",
                "misses",
                "loads",
                "stores",
                "evictions_clean",
                "evictions_dirty",
                "bytes_written",
                "bytes_loaded",
                "write_errors",
                "load_errors",
            ),
            0,
        )
        self._seconds = {"load": 0.0, "store": 0.0}
        self._resident_items = 0
        self._resident_bytes = 0
        self._pending_writes = 0

    def __repr__(self) -> str:
        return (
            f"<FBPool items={len(self._lru)} resident={self._resident_items} "
            f"({self._resident_bytes} B) max_items={self.max_items} "
            f"max_bytes={self.max_bytes} pending_writes={self._pending_writes}>"
        )

    def __len__(self) -> int:
        return len(self._lru)

    # -- public API ------------------------------------------------------------------------

    def insert(self, value: T) -> Fb[T]:
        """Put ``value`` in the pool under a fresh random key and return its handle.

        No I/O happens here; items pushed past the budget are written in the background.

        Raises:
            StoreClosedError: the store was closed.
        """
        from ._handle import Fb

        self.store.check_open()
        size = self._measure(value)
        entry = _Entry(uuid4(), value, size)
        batch = _Batch()
        with self._lock:
            self._resident_items += 1
            self._resident_bytes += size
            self._offer_all(self._lru.push_front(entry, size), batch)
        self._after(batch)
        return Fb(self, entry)

    def statistics(self) -> PoolStatistics:
        """Return a frozen snapshot of the pool's counters."""
        with self._lock:
            return PoolStatistics(
                items=len(self._lru),
                resident_items=self._resident_items,
                resident_bytes=self._resident_bytes,
                pending_writes=self._pending_writes,
                background_errors=self.store.pending_errors,
                load_seconds=self._seconds["load"],
                store_seconds=self._seconds["store"],
                **self._n,
            )

    def order(self) -> list[UUID]:
        """Return the keys of every item, most recent first (for inspection and tests)."""
        with self._lock:
            return [entry.key for entry in self._lru.order()]

    def close(self) -> None:
        """Close every item still in the pool: values leave memory, blobs are released.

        The store stays open (it may serve other pools). Idempotent.
        """
        with self._lock:
            entries = self._lru.order()
        for entry in entries:
            self._close(entry)

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

    # -- internals: bookkeeping under the lock ---------------------------------------------

    def _measure(self, value: Any) -> int:
        size = self.sizeof(value)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TypeError(
                f"sizeof {self.sizeof!r} must return an int >= 0, returned {size!r} "
                f"for a {type(value).__name__}"
            )
        return size

    def _after(self, batch: _Batch) -> None:
        """Run what an operation decided under the lock, now that it is released."""
        for waiter in batch.wake:
            if not waiter.done():
                waiter.set_result(None)
        for fn, args in batch.work:
            try:
                self.store.submit(fn, *args)
            except StoreClosedError:
                # Only write-backs are queued here; one that cannot start has failed.
                self._write_done(args[0], args[1], None, 0.0)
        batch.garbage.clear()  # values dropped from memory die here, outside the lock

    def _wake(self, entry: _Entry, batch: _Batch) -> None:
        if entry.waiter is not None:
            batch.wake.append(entry.waiter)
            entry.waiter = None

    def _waiter(self, entry: _Entry) -> Future[None]:
        if entry.waiter is None:
            entry.waiter = Future()
        return entry.waiter

    def _offer_all(self, entries: Iterable[_Entry], batch: _Batch) -> None:
        for entry in entries:
            self._offer(entry, batch)

    def _offer(self, entry: _Entry, batch: _Batch) -> None:
        """Evict ``entry`` if it can leave memory now; otherwise it is re-offered later."""
        if entry.value is _MISSING or entry.closed or entry.writing:
            return  # not resident, gone, or a write in flight re-checks when it ends
        if entry.readers or entry.writer or entry.loading or self.store.closed:
            return  # pinned: re-offered when the last guard goes
        if entry.blob:
            self._drop(entry, batch, dirty=False)
            return
        entry.writing = True
        entry.evicting = True
        self._pending_writes += 1
        batch.work.append((self._write_back, (entry, entry.key, entry.value)))

    def _drop(self, entry: _Entry, batch: _Batch, *, dirty: bool) -> None:
        batch.garbage.append(entry.value)
        entry.value = _MISSING
        self._resident_items -= 1
        self._resident_bytes -= entry.size
        self._n["evictions_dirty" if dirty else "evictions_clean"] += 1
        if entry in self._lru:
            self._offer_all(self._lru.set_weight(entry, 0), batch)

    def _install(self, entry: _Entry, value: Any, size: int, batch: _Batch) -> None:
        entry.value = value
        entry.size = size
        self._resident_items += 1
        self._resident_bytes += size
        self._offer_all(self._lru.set_weight(entry, size), batch)

    def _finalize(self, entry: _Entry, batch: _Batch) -> None:
        """Remove a closed entry whose last guard is gone."""
        if entry in self._lru:
            self._lru.remove(entry)
        if entry.value is not _MISSING:
            batch.garbage.append(entry.value)
            entry.value = _MISSING
            self._resident_items -= 1
            self._resident_bytes -= entry.size
        if entry.blob and not entry.writing:
            entry.blob = False
            self.store.release(entry.key)
        # A write in flight deletes its blob when it ends (see _write_done).
        self._wake(entry, batch)

    def _close(self, entry: _Entry) -> None:
        batch = _Batch()
        with self._lock:
            if entry.closed:
                return
            entry.closed = True
            if not (entry.readers or entry.writer):
                self._finalize(entry, batch)
        self._after(batch)

    def _check_usable(self, entry: _Entry) -> None:
        if entry.closed:
            raise HandleClosedError(f"the handle for key {entry.key.hex} was closed")
        self.store.check_open()

    # -- internals: writes -----------------------------------------------------------------

    def _write_back(self, entry: _Entry, key: UUID, value: Any) -> None:
        """Worker: write an evicted value; memory is released only if the write succeeded."""
        start = time.perf_counter()
        try:
            nbytes = self.store.strategy.store(key, value)
        except BaseException as exc:
            self._write_done(entry, key, None, time.perf_counter() - start)
            self.store.report(exc)
            return
        self._write_done(entry, key, nbytes, time.perf_counter() - start)

    def _write_done(self, entry: _Entry, key: UUID, nbytes: int | None, seconds: float) -> None:
        batch = _Batch()
        with self._lock:
            evicting = entry.evicting
            entry.writing = entry.evicting = False
            self._pending_writes -= 1
            self._seconds["store"] += seconds
            if nbytes is None:
                self._n["write_errors"] += 1
            else:
                self._n["stores"] += 1
                self._n["bytes_written"] += nbytes
                if entry.closed and not (entry.readers or entry.writer):
                    # The handle went while its blob was being written: write, then delete.
                    self.store.delete_blob(key)
                    self._finalize(entry, batch)
                else:
                    entry.blob = True
                    self.store.add_ref(key)
                    if (
                        entry in self._lru
                        and self._lru.segment(entry) == COLD
                        and entry.value is not _MISSING
                        and not (entry.readers or entry.writer or entry.loading)
                        and entry.waiter is None
                    ):
                        self._drop(entry, batch, dirty=evicting)
            self._wake(entry, batch)
        self._after(batch)

    def _begin_write(self, entry: _Entry, batch: _Batch) -> None:
        """Give ``entry`` to a write guard: new key, the old blob reference dropped."""
        entry.writer = True
        entry.writer_owner = _owner()
        if entry.blob:
            entry.blob = False
            self.store.release(entry.key)
        entry.key = uuid4()

    def _start_write_now(self, entry: _Entry) -> tuple[UUID, Any] | Future[None] | None:
        """Under the lock: None if a blob exists, a waiter if busy, else what to write."""
        self._check_usable(entry)
        if entry.blob:
            return None
        if entry.writer or entry.writing or entry.loading:
            self._check_self_wait(entry)
            return self._waiter(entry)
        entry.writing = True
        self._pending_writes += 1
        return entry.key, entry.value

    def _check_self_wait(self, entry: _Entry) -> None:
        if entry.writer and entry.writer_owner == _owner():
            raise RuntimeError(
                f"waiting for the write guard of key {entry.key.hex}, which this same "
                "thread/task holds: release the guard first"
            )

    # -- internals: acquiring guards -------------------------------------------------------

    def _try_acquire(self, entry: _Entry, write: bool, batch: _Batch) -> Any:
        """Under the lock: pin and return the value, or return `_MISSING` (no I/O, no wait)."""
        value = entry.value
        if value is _MISSING:
            return _MISSING
        if write:
            if entry.readers or entry.writer or entry.writing or entry.loading:
                return _MISSING
            self._begin_write(entry, batch)
        else:
            if entry.writer or entry.evicting:
                return _MISSING
            entry.readers += 1
        if self._lru.segment(entry) != HOT:
            self._offer_all(self._lru.touch(entry), batch)
        return value

    def _acquire_step(
        self, entry: _Entry, write: bool, touched: bool, batch: _Batch
    ) -> tuple[Any, Future[None] | UUID | None]:
        """Under the lock: one step of a blocking acquire.

        Returns (value, None) when pinned, (_MISSING, waiter) to wait, or (_MISSING, key)
        when the caller must load blob ``key`` (``entry.loading`` is then set).
        """
        self._check_usable(entry)
        if not touched and self._lru.segment(entry) != HOT:
            # Move first, as the crate does: if the caller gives up, the work is not wasted
            # by an immediate re-eviction.
            self._offer_all(self._lru.touch(entry), batch)
        if entry.value is not _MISSING:
            if write:
                if not (entry.readers or entry.writer or entry.writing or entry.loading):
                    self._begin_write(entry, batch)
                    return entry.value, None
            elif not entry.writer:
                entry.readers += 1
                return entry.value, None
            self._check_self_wait(entry)
            return _MISSING, self._waiter(entry)
        if entry.loading or entry.writer:
            return _MISSING, self._waiter(entry)
        entry.loading = True
        return _MISSING, entry.key

    def _load_blob(self, entry: _Entry, key: UUID, write: bool) -> Any:
        """Read blob ``key`` (blocking, this thread), install the value, pin it, return it."""
        start = time.perf_counter()
        try:
            value = self.store.strategy.load(key)
            size = self._measure(value)
        except BaseException:
            batch = _Batch()
            with self._lock:
                entry.loading = False
                self._n["load_errors"] += 1
                self._seconds["load"] += time.perf_counter() - start
                self._wake(entry, batch)
            self._after(batch)
            raise
        batch = _Batch()
        with self._lock:
            entry.loading = False
            self._seconds["load"] += time.perf_counter() - start
            self._wake(entry, batch)
            if entry.closed:
                batch.garbage.append(value)
                closed = True
            else:
                closed = False
                self._n["loads"] += 1
                self._n["bytes_loaded"] += size
                # Pin before installing so the install's cascade cannot evict it.
                if write:
                    self._begin_write(entry, batch)
                else:
                    entry.readers += 1
                self._install(entry, value, size, batch)
        self._after(batch)
        if closed:
            raise HandleClosedError(f"the handle for key {key.hex} was closed during its load")
        return value

    def _acquire(self, entry: _Entry, write: bool) -> Any:
        """Blocking acquire of a read (or write) pin; loads in this thread on a miss."""
        touched = missed = False
        while True:
            batch = _Batch()
            with self._lock:
                value, next_step = self._acquire_step(entry, write, touched, batch)
                touched = True
                if next_step is None:
                    self._n["misses" if missed else "hits"] += 1
                elif not isinstance(next_step, Future):
                    missed = True
                    self._n["misses"] += 1
            self._after(batch)
            if next_step is None:
                return value
            if isinstance(next_step, Future):
                missed = missed or entry.value is _MISSING
                next_step.result()
                continue
            return self._load_blob(entry, next_step, write)

    async def _aacquire(self, entry: _Entry, write: bool) -> Any:
        """Async twin of `_acquire`: the load runs on a worker, waits never block the loop."""
        touched = missed = False
        while True:
            batch = _Batch()
            with self._lock:
                value, next_step = self._acquire_step(entry, write, touched, batch)
                touched = True
                if next_step is None:
                    self._n["misses" if missed else "hits"] += 1
                elif not isinstance(next_step, Future):
                    missed = True
                    self._n["misses"] += 1
            self._after(batch)
            if next_step is None:
                return value
            if isinstance(next_step, Future):
                missed = missed or entry.value is _MISSING
                await _wait(next_step)
                continue
            job = self.store.submit(self._load_blob, entry, next_step, write)
            try:
                return await _wait(job)
            except asyncio.CancelledError:
                # The load goes on without us; give back the pin it takes for us.
                job.add_done_callback(lambda f: f.exception() or self._release(entry, write))
                raise

    def _release(self, entry: _Entry, write: bool) -> None:
        """Give back a pin; re-offer the item if it was pushed out while pinned."""
        size = entry.size
        error: BaseException | None = None
        if write and not entry.closed:
            try:
                size = self._measure(entry.value)
            except BaseException as exc:  # the pin is given back all the same
                error = exc
        batch = _Batch()
        with self._lock:
            if write:
                entry.writer = False
                entry.writer_owner = None
            else:
                entry.readers -= 1
            if not (entry.readers or entry.writer):
                if entry.closed:
                    self._finalize(entry, batch)
                else:
                    if write and size != entry.size:
                        self._resident_bytes += size - entry.size
                        entry.size = size
                        self._offer_all(self._lru.set_weight(entry, size), batch)
                    if self._lru.segment(entry) == COLD:
                        self._offer(entry, batch)
            self._wake(entry, batch)
        self._after(batch)
        if error is not None:
            raise error


async def _wait(future: Future[R]) -> R:
    """Await a concurrent future without cancelling it when the awaiting task is cancelled.

    `asyncio.wrap_future` would cancel the shared future along with the task; several tasks
    may wait on one, so only this task's view of it is cancelled.
    """
    loop = asyncio.get_running_loop()
    view: asyncio.Future[R] = loop.create_future()

    def _copy(done: Future[R]) -> None:
        if view.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            view.set_exception(exc)
        else:
            view.set_result(done.result())

    def _on_done(done: Future[R]) -> None:
        try:
            loop.call_soon_threadsafe(_copy, done)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    future.add_done_callback(_on_done)
    return await view
