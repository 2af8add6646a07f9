"""What a caller asks of one item outside a guard: write it now, evict it, prefetch it.

`PoolCore` (in ``_core.py``) inherits these steps; like every step of the state machine
they decide under the pool's lock and do their I/O outside it. Write-back of evicted
values is in ``_writeback.py``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from ._entry import MISSING, Batch, Entry, quiet
from ._lru import COLD, HOT, SegmentTaggingLRU
from ._store import BackingStore
from .exceptions import HandleClosedError

__all__ = ["EVICT_CANDIDATES", "Requests"]

EVICT_CANDIDATES = 8
"""How many least recently used values `evict_lru` tries before it gives up."""

T = TypeVar("T")


class Requests(Generic[T]):
    """The explicit requests of `PoolCore`: write now, evict now, evict the LRU, prefetch."""

    store: BackingStore[T]
    _lock: threading.Lock
    _lru: SegmentTaggingLRU[Entry]
    _n: dict[str, int]
    _pending_writes: int
    _pending_bytes: int
    max_pending_bytes: int
    _drain_waiters: list[Future[None]]

    if TYPE_CHECKING:  # steps of PoolCore and WriteBack these use

        def _after(self, batch: Batch) -> None: ...
        def _check_usable(self, entry: Entry) -> None: ...
        def _check_self_wait(self, entry: Entry) -> None: ...
        def _waiter(self, entry: Entry) -> Future[None]: ...
        def _offer(self, entry: Entry, batch: Batch) -> None: ...
        def _offer_all(self, entries: Any, batch: Batch) -> None: ...
        def _drop(self, entry: Entry, batch: Batch, *, dirty: bool) -> None: ...
        def _load_blob(self, entry: Entry, key: UUID, write: bool) -> Any: ...
        def _release(self, entry: Entry, write: bool) -> None: ...
        def _write_done(
            self,
            entry: Entry,
            key: UUID,
            nbytes: int | None,
            seconds: float,
            error: BaseException | None = None,
            *,
            skipped: bool = False,
        ) -> None: ...

    def _start_write_now(
        self, entry: Entry, batch: Batch
    ) -> tuple[UUID, Any] | Future[None] | None:
        """Under the lock: None if a blob exists, a waiter if busy, else what to write."""
        self._check_usable(entry)
        if entry.blob:
            # An eviction write this call waited for kept the value for its waiters: now
            # that it is clean, it can leave memory if it is still past the budget.
            if entry.segment == COLD:
                self._offer(entry, batch)
            return None
        if entry.writer or entry.writing or entry.loading:
            self._check_self_wait(entry)
            return self._waiter(entry)
        entry.writing = True
        self._pending_writes += 1
        return entry.key, entry.value

    def _write(self, entry: Entry, key: UUID, value: Any) -> None:
        """Write ``value`` as blob ``key`` for ``entry`` (blocking); raise what fails."""
        start = time.perf_counter()
        try:
            nbytes = self.store.strategy.store(key, value)
        except BaseException:
            self._write_done(entry, key, None, time.perf_counter() - start)
            raise
        self._write_done(entry, key, nbytes, time.perf_counter() - start)

    def _write_now_turn(self, entry: Entry) -> tuple[UUID, Any] | Future[None] | None:
        """One turn of the write-now loop shared by `_write_now` and `Fb.awrite_now`.

        Returns None when ``entry`` has a blob, a future to wait for before turning again,
        or the (key, value) the caller must write (with `_write`).
        """
        batch = Batch()
        with self._lock:
            step = self._start_write_now(entry, batch)
        self._after(batch)
        return step

    def _write_now(self, entry: Entry) -> None:
        """Make sure ``entry`` has a blob, writing it in this thread if needed."""
        while True:
            step = self._write_now_turn(entry)
            if step is None:
                return
            if isinstance(step, Future):
                step.result()
                continue
            self._write(entry, *step)
            return

    def _evict_lru(self) -> int:
        """Evict the least recently used value that can leave memory; -1 if none can."""
        with self._lock:
            candidates: list[Entry] = []
            for entry in self._lru.oldest_first():
                # A value being written is a fine candidate: evicting it waits for the write.
                if entry.value is not MISSING and not (
                    entry.readers or entry.writer or entry.loading or entry.closed
                ):
                    candidates.append(entry)
                    if len(candidates) == EVICT_CANDIDATES:
                        break
        for entry in candidates:
            try:
                freed = self._evict(entry)
            except HandleClosedError:
                continue  # closed meanwhile: its value left memory anyway
            if freed:
                return freed
        return -1

    def _evict(self, entry: Entry) -> int:
        """Write ``entry``'s blob if it has none, then drop its value; return the bytes freed.

        0 if the value stays (pinned, or being loaded or written by someone else).
        """
        size = entry.size
        self._write_now(entry)
        freed = self._evict_now(entry)
        if freed:
            return freed
        # An eviction write that _write_now waited for may have dropped it already.
        return size if entry.value is MISSING else 0

    def _evict_now(self, entry: Entry) -> int:
        """Drop ``entry``'s value now if it is clean and unpinned; return the bytes freed."""
        batch = Batch()
        with self._lock:
            self._check_usable(entry)
            if (
                entry.value is MISSING
                or not entry.blob
                or entry.writer
                or entry.writing
                or entry.loading
            ):
                return 0
            if not quiet(entry):
                return 0  # pinned: it stays (the gate reopens at the next locked step)
            size = entry.size
            self._drop(entry, batch, dirty=False)
        self._after(batch)
        return size

    def _backpressure(self) -> Future[None] | None:
        """Under the lock: a future to wait on while too many bytes wait for write-back."""
        if self._pending_bytes <= self.max_pending_bytes:
            return None
        waiter: Future[None] = Future()
        self._drain_waiters.append(waiter)
        self._n["insert_waits"] += 1
        return waiter

    def _prefetch(self, entry: Entry) -> Future[None] | None:
        """Start a background load of ``entry`` unless it is resident or being loaded."""
        with self._lock:
            if entry.closed or entry.value is not MISSING or entry.loading or entry.writer:
                return None
            self.store._check_open()
            entry.loading = True
            key = entry.key
            if entry.segment != HOT:
                batch = Batch()
                self._offer_all(self._lru.touch(entry), batch)
            else:
                batch = None
        if batch is not None:
            self._after(batch)
        return self.store._submit_task(self._prefetch_blob, entry, key)

    def _prefetch_blob(self, entry: Entry, key: UUID) -> None:
        self._load_blob(entry, key, False)
        self._release(entry, False)
