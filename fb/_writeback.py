"""Write-back of a pool's values: the queue, its workers, completion and retries.

Two kinds of background write share the queue: an *eviction* write (the value was pushed
past the budget; it leaves memory once written, and a failure is retried with backoff) and
an *early* write (``write="early"``: a dirty value is written soon after its insert or its
write guard's release, and stays resident; eviction then finds it clean and drops it without
I/O). Both count against ``max_pending_bytes``.

`PoolCore` (in ``_core.py``) inherits these steps; like every step of the state machine
they decide under the pool's lock and do their I/O outside it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from ._entry import MISSING, Batch, Entry, quiet, regate
from ._lru import COLD
from ._store import BackingStore
from .exceptions import CodecError, StoreClosedError

__all__ = ["RETRY_FIRST_DELAY", "RETRY_MAX_DELAY", "WriteBack"]

_log = logging.getLogger("fb")
_events = logging.getLogger("fb.events")
"""Structured events: every record carries ``fb_event`` and its fields in ``extra``."""

RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 30.0

T = TypeVar("T")


def _event_retry(key: UUID, nbytes: int) -> None:
    _events.info(
        "fb: retrying the write-back of %s (%d bytes)",
        key.hex,
        nbytes,
        extra={"fb_event": "retry", "fb_key": key.hex, "fb_nbytes": nbytes},
    )


class WriteBack(Generic[T]):
    """The write-back steps of `PoolCore`, and the state they share with it."""

    store: BackingStore[T]
    _lock: threading.Lock
    _n: dict[str, int]
    _seconds: dict[str, float]
    _pending_writes: int
    _pending_bytes: int
    max_pending_bytes: int
    _write_queue: deque[tuple[Entry, UUID, Any]]  # write-backs no worker has taken yet
    _writers: int  # workers draining _write_queue
    _drain_waiters: list[Future[None]]
    _failed: dict[Entry, tuple[float, int]]
    _retry_delay: float
    _retry_timer: threading.Timer | None
    _early: bool  # write="early"
    on_error: Callable[[BaseException], object] | None

    if TYPE_CHECKING:  # steps of PoolCore these use

        def _after(self, batch: Batch) -> None: ...
        def _offer(self, entry: Entry, batch: Batch) -> None: ...
        def _drop(self, entry: Entry, batch: Batch, *, dirty: bool) -> None: ...
        def _finalize(self, entry: Entry, batch: Batch) -> None: ...
        def _wake(self, entry: Entry, batch: Batch) -> None: ...

    def _write_early(self, entry: Entry, batch: Batch) -> None:
        """Under the lock: start the early write of ``entry`` if it is resident and dirty."""
        if (
            not self._early
            or entry.blob
            or entry.writing
            or entry.writer
            or entry.closed
            or entry.unencodable
            or entry.value is MISSING
            or self.store.closed
        ):
            return
        entry.writing = entry.early = True
        entry.early_bytes = entry.size
        self._pending_writes += 1
        self._pending_bytes += entry.size
        batch.work.append((entry, entry.key, entry.value))

    def _queue_writes(self, writes: list[tuple[Entry, UUID, Any]]) -> None:
        """Queue write-backs, and start workers to drain the queue if too few are at it.

        A worker writes queued values one after another until none is left, rather than
        taking one task per value: the caller pays for a deque append, not a task and a
        thread wake-up per eviction. One worker of the store stays free of write-backs
        (when it has two or more) for loads and deletes.
        """
        with self._lock:
            self._write_queue.extend(writes)
            limit = max(1, self.store.max_workers - 1)
            start = min(len(self._write_queue), limit) - self._writers
            if start > 0:
                self._writers += start
        for _ in range(start):
            try:
                self.store._submit_task(self._drain_writes)
            except StoreClosedError:
                with self._lock:
                    self._writers -= 1
                    failed = list(self._write_queue)
                    self._write_queue.clear()
                for entry, key, _value in failed:
                    self._write_done(entry, key, None, 0.0)  # it can never start

    def _drain_writes(self) -> None:
        """Worker: write back queued values until the queue is empty."""
        lock = self._lock
        queue = self._write_queue
        idle = False
        try:
            while True:
                with lock:
                    if not queue:
                        self._writers -= 1
                        idle = True
                        return
                    entry, key, value = queue.popleft()
                    # Closed, or rewritten by a write guard (new key) while it waited: the
                    # write is moot, and skipping it is the point of a queue.
                    moot = entry.closed or entry.key != key
                if moot:
                    self._write_done(entry, key, None, 0.0, skipped=True)
                else:
                    self._write_back(entry, key, value)
        finally:
            if not idle:  # left early (an error escaped): another worker takes over
                with lock:
                    self._writers -= 1
                    again = bool(queue)
                if again:
                    self._queue_writes([])

    def _write_back(self, entry: Entry, key: UUID, value: Any) -> None:
        """Worker: write a queued value; memory is released only if the write succeeded."""
        early = entry.early  # set when queued, reset only by _write_done
        start = time.perf_counter()
        try:
            nbytes = self.store.strategy.store(key, value)
        except BaseException as exc:
            self._write_done(entry, key, None, time.perf_counter() - start, exc)
            _events.warning(
                "fb: %s of %s failed: %s",
                "early write" if early else "write-back",
                key.hex,
                exc,
                extra={"fb_event": "write_failed", "fb_key": key.hex, "fb_error": repr(exc)},
            )
            # An early write's failure is reported too (none is swallowed); the value stays
            # resident and dirty, and its eviction writes it again (with retries).
            self.store._report(exc)
            if self.on_error is not None:
                batch = Batch()
                batch.events.append((self.on_error, (exc,)))
                self._after(batch)
            return
        self._write_done(entry, key, nbytes, time.perf_counter() - start)

    def _write_done(
        self,
        entry: Entry,
        key: UUID,
        nbytes: int | None,
        seconds: float,
        error: BaseException | None = None,
        *,
        skipped: bool = False,
    ) -> None:
        """Record the end of a write of blob ``key`` (``nbytes`` None: failed or skipped)."""
        batch = Batch()
        with self._lock:
            evicting = entry.evicting
            early = entry.early
            entry.writing = entry.evicting = entry.early = False
            self._pending_writes -= 1
            # A write guard gave the item a new key while this (early) write ran.
            stale = key != entry.key
            # A value its codec cannot encode fails the same way every time: it stays in
            # memory, reported once, never retried (nor written again when its guards are
            # released: ``unencodable``) and never counted as pending.
            retrying = (
                evicting
                and nbytes is None
                and not skipped
                and not isinstance(error, CodecError)
                and not entry.closed
                and entry.value is not MISSING
            )
            if evicting and not retrying:
                self._pending_bytes -= entry.size
                self._wake_drained(batch)
            if early:
                self._pending_bytes -= entry.early_bytes
                entry.early_bytes = 0
                self._wake_drained(batch)
            self._seconds["store"] += seconds
            if skipped:
                pass
            elif nbytes is None:
                self._n["write_errors"] += 1
                if isinstance(error, CodecError) and not stale:
                    entry.unencodable = True  # not offered for eviction again
                if retrying:
                    # Its bytes stay counted as pending: while storage fails, backpressure
                    # holds the producer back instead of letting memory grow without bound.
                    self._schedule_retry(entry)
                elif early and not stale and not entry.closed and entry.segment == COLD:
                    self._offer(entry, batch)  # pushed out meanwhile: now an eviction write
            elif stale:
                self._n["stores"] += 1
                self._n["bytes_written"] += nbytes
                self.store._delete_blob(key)  # nothing references the old key any more
            else:
                self._unfail(entry, batch)
                if self._retry_delay != RETRY_FIRST_DELAY:
                    # Storage works again: what waits for a retry should not sit out the
                    # backoff that the failures built up.
                    self._retry_delay = RETRY_FIRST_DELAY
                    self._retry_soon()
                self._n["stores"] += 1
                self._n["bytes_written"] += nbytes
                entry.stored_nbytes = nbytes
                if entry.closed and not entry.writer and quiet(entry):
                    # The handle went while its blob was being written: write, then delete.
                    self.store._delete_blob(key)
                    self._finalize(entry, batch)
                else:
                    entry.blob = True
                    self.store._add_ref(key)
                    if (
                        entry.segment == COLD
                        and entry.value is not MISSING
                        and not (entry.writer or entry.loading)
                        and entry.waiter is None
                        and quiet(entry)
                    ):
                        self._drop(entry, batch, dirty=evicting)
            if stale and not (entry.closed or entry.writer):
                # The guard's release found this write in flight and left the new value
                # to it: write the new value now (or offer it, if it was pushed out).
                if entry.segment == COLD:
                    self._offer(entry, batch)
                else:
                    self._write_early(entry, batch)
            self._wake(entry, batch)
            regate(entry)
        self._after(batch)

    def _wake_drained(self, batch: Batch) -> None:
        if self._drain_waiters and self._pending_bytes <= self.max_pending_bytes:
            batch.wake.extend(self._drain_waiters)
            self._drain_waiters.clear()

    def _unfail(self, entry: Entry, batch: Batch) -> None:
        """Under the lock: ``entry`` no longer waits for a retry; its bytes stop pending."""
        failed = self._failed.pop(entry, None)
        if failed is not None:
            self._pending_bytes -= failed[1]
            self._wake_drained(batch)

    def _schedule_retry(self, entry: Entry) -> None:
        """Under the lock: retry a failed eviction write later, with backoff and jitter."""
        delay = self._retry_delay
        self._retry_delay = min(delay * 2, RETRY_MAX_DELAY)
        earlier = self._failed.get(entry)
        if earlier is not None:
            # It failed again before its retry came up: count its bytes once.
            self._pending_bytes -= earlier[1]
        self._failed[entry] = (time.monotonic() + delay * (0.5 + random.random()), entry.size)
        if self._retry_timer is None:
            timer = threading.Timer(delay, self._retry_due)
            timer.daemon = True
            timer.name = "fb-retry"
            self._retry_timer = timer
            timer.start()

    def _retry_soon(self) -> None:
        """Under the lock: bring every pending retry forward to a first-delay backoff."""
        if not self._failed:
            return
        now = time.monotonic()
        for entry, (due, size) in list(self._failed.items()):
            soon = now + RETRY_FIRST_DELAY * (0.5 + random.random())
            if due > soon:
                self._failed[entry] = (soon, size)
        timer, self._retry_timer = self._retry_timer, None
        if timer is not None:
            timer.cancel()
        timer = threading.Timer(RETRY_FIRST_DELAY * 1.5, self._retry_due)
        timer.daemon = True
        timer.name = "fb-retry"
        self._retry_timer = timer
        timer.start()

    def _retry_due(self) -> None:
        """Timer thread: re-offer the failed writes whose backoff has passed."""
        with self._lock:
            self._retry_timer = None
        self._retry(time.monotonic())

    def _retry(self, now: float) -> int:
        batch = Batch()
        offered = 0
        with self._lock:
            if self.store.closed:
                for entry in list(self._failed):
                    self._unfail(entry, batch)
                due_entries = []
            else:
                due_entries = [e for e, (due, _) in self._failed.items() if due <= now]
            for entry in due_entries:
                self._unfail(entry, batch)
                if entry.closed or entry.value is MISSING or entry.segment != COLD:
                    continue  # it left memory or came back into the budget meanwhile
                self._offer(entry, batch)
                offered += 1
                if _events.isEnabledFor(logging.INFO):
                    batch.events.append((_event_retry, (entry.key, entry.size)))
            if self._failed and self._retry_timer is None:
                delay = max(0.0, min(due for due, _ in self._failed.values()) - time.monotonic())
                timer = threading.Timer(delay, self._retry_due)
                timer.daemon = True
                self._retry_timer = timer
                timer.start()
        self._after(batch)
        return offered
