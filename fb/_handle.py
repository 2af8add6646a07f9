"""Fb handles (their guards are in ``_guards.py``)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import weakref
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from . import _janitor
from ._entry import MISSING, Batch, Entry, check_timeout, owner, wait
from ._guards import Acquisition, ReadGuard, WriteGuard, _Droppable, read_guard
from ._persist import check_tracked
from .exceptions import NotPicklableError

if TYPE_CHECKING:
    from ._persist import TrackedPath
    from ._pool import FBPool

__all__ = ["Fb", "ReadGuard", "WriteGuard"]

T = TypeVar("T")

_get_ident = threading.get_ident


_LIVE: dict[weakref.ref[Any], tuple[FBPool[Any], Entry]] = {}
"""Every open handle's weak reference, with the item to close once the handle is collected.

What `weakref.finalize` would keep, at a fifth of its cost per handle: a module-level
registry, so the callback runs even when a handle is collected in a cycle with its pool.
"""


def _collected(ref: weakref.ref[Any]) -> None:
    # Runs at any allocation on any thread, possibly while a pool lock is held there: it
    # only queues the close for the janitor thread (dict.pop is atomic under the GIL).
    item = _LIVE.pop(ref, None)
    if item is not None:
        pool, entry = item
        _janitor.put(functools.partial(pool._close, entry))


@atexit.register
def _forget_handles() -> None:
    # As `weakref.finalize` with ``atexit = False``: handles collected while the
    # interpreter shuts down close nothing (the janitor thread is gone by then).
    _LIVE.clear()


class Fb(Generic[T]):
    """The handle of one item of an `FBPool`: a box whose value may be in memory or on storage.

    Use `load` (or `aload`) to read the value through a guard that pins it in memory, and
    `load_mut` (or `aload_mut`) to change or replace it. When the handle is closed, or
    garbage-collected, its value leaves memory and its blob is deleted in the background.

    Notes:
        Thread-safe. Read guards of one handle may be held by several threads at once; a
        write guard is exclusive (acquiring one waits for the readers to finish, and is
        refused with `GuardConflictError` to a thread or task that holds one of them).
        `load` and `load_mut` block on a miss and may wait (at most ``timeout``) for other
        guards; `try_load` and `try_load_mut` never block and never do I/O; the
        ``a``-methods never block the event loop.
    """

    __slots__ = ("__weakref__", "_entry", "_hits", "_pool", "_ref", "_shared")

    def __init__(self, pool: FBPool[T], entry: Entry) -> None:
        self._pool = pool
        self._entry = entry
        # What the hit path reads, in slots of the handle rather than in the pool's
        # __dict__ (a dict lookup each): the store's closed flag and the hit counter.
        self._shared = pool._shared
        self._hits = pool._hit_count
        ref = weakref.ref(self, _collected)
        _LIVE[ref] = (pool, entry)
        self._ref = ref

    def __repr__(self) -> str:
        entry = self._entry
        if entry.closed:
            state = "closed"
        else:
            state = "resident" if entry.value is not MISSING else "stored"
            state += " clean" if entry.blob else (" dirty" if entry.value is not MISSING else "")
            if entry.readers:
                state += f" readers={entry.readers}"
            if entry.writer:
                state += " writer"
            if entry.writing:
                state += " writing"
        return f"<Fb key={entry.key.hex} {state}>"

    @property
    def key(self) -> UUID:
        """The key of the item's blob; a new one is drawn when a write guard is taken."""
        return self._entry.key

    @property
    def pool(self) -> FBPool[T]:
        """The pool this handle belongs to."""
        return self._pool

    @property
    def closed(self) -> bool:
        """True once the handle was closed."""
        return self._entry.closed

    @property
    def resident(self) -> bool:
        """True when the value is in memory right now."""
        return self._entry.value is not MISSING

    # -- reading ---------------------------------------------------------------------------

    def load(self, timeout: float | None = None) -> ReadGuard[T]:
        """Return a read guard, loading the value from storage if it is not in memory.

        Concurrent loads of one handle read storage once. ``with handle.load() as value:``
        pins the value for the block.

        Args:
            timeout: wait at most this many seconds for a write guard held elsewhere, or for
                another caller's load or an eviction write in flight (None: no limit). A
                load this call makes itself is not cut short.

        Raises:
            GuardConflictError: this thread or task holds the item's write guard.
            GuardTimeoutError: the guard could not be had within ``timeout``.
            HandleClosedError: the handle was closed.
            StoreClosedError: the store was closed.
            CorruptBlobError: the blob failed its integrity check.
            CodecError: the blob could not be decoded.
            OSError: storage failed.
        """
        if timeout is not None:
            check_timeout(timeout)
        # A blocking call's owner is its thread (it blocks every task of the thread).
        who = _get_ident()
        entry = self._entry
        # The hit path, without the lock: the pin first (one atomic list append), the gate
        # second (see fb._entry.Entry); a resident item in the hot segment needs no more.
        entry.pins.append(who)
        if entry.fast and not self._shared.closed:
            self._hits.n += 1  # a statistic: a lost increment would be harmless
            # read_guard(self, value, who), inline: a Python call less on a hit; the
            # entry's getter is built once per value, not once per hit.
            guard: ReadGuard[T] = _Droppable()
            guard.__enter__ = entry.get  # type: ignore[method-assign]
            guard._handle = self
            guard._owner = who
            return guard
        self._pool._slow_load(entry, who, timeout)
        # Pinned now: the value cannot change before the guard goes, nor can its getter.
        guard = _Droppable()
        guard.__enter__ = entry.get  # type: ignore[method-assign]
        guard._handle = self
        guard._owner = who
        return guard

    def aload(self, timeout: float | None = None) -> Acquisition[ReadGuard[T]]:
        """Async twin of `load`: ``await handle.aload()`` or ``async with handle.aload() as v``.

        ``timeout`` bounds the waits as in `load`, without blocking the event loop.
        """
        return Acquisition(functools.partial(self._aload, check_timeout(timeout)))

    async def _aload(self, patience: float | None) -> ReadGuard[T]:
        who = owner()
        return read_guard(self, await self._pool._aacquire(self._entry, False, who, patience), who)

    def try_load(self) -> ReadGuard[T] | None:
        """Return a read guard if the value is in memory and not busy, else None. No I/O.

        "Busy" is a write guard held, or an eviction write in flight.
        """
        who = _get_ident()
        value = self._try(False, who)
        return None if value is MISSING else read_guard(self, value, who)

    # -- writing ---------------------------------------------------------------------------

    def load_mut(self, timeout: float | None = None) -> WriteGuard[T]:
        """Return a write guard: exclusive access to change or replace the value.

        The item gets a new key and drops its reference to the old blob (deleted when no
        other handle references it). ``with handle.load_mut() as guard: guard.value = ...``

        Args:
            timeout: wait at most this many seconds for the item's other guards to be
                released, or for a load or write of it in flight (None: no limit). A load
                this call makes itself is not cut short.

        Raises:
            GuardConflictError: this thread or task holds a read guard or the write guard
                of the item (waiting for it would never end).
            GuardTimeoutError: the guard could not be had within ``timeout``.
            HandleClosedError: the handle was closed.
            StoreClosedError: the store was closed.
        """
        self._pool._acquire(self._entry, True, _get_ident(), check_timeout(timeout))
        return WriteGuard(self)

    def aload_mut(self, timeout: float | None = None) -> Acquisition[WriteGuard[T]]:
        """Async twin of `load_mut`."""
        return Acquisition(functools.partial(self._aload_mut, check_timeout(timeout)))

    async def _aload_mut(self, patience: float | None) -> WriteGuard[T]:
        await self._pool._aacquire(self._entry, True, owner(), patience)
        return WriteGuard(self)

    def try_load_mut(self) -> WriteGuard[T] | None:
        """Return a write guard if the value is in memory and nobody uses it, else None."""
        value = self._try(True, _get_ident())
        return None if value is MISSING else WriteGuard(self)

    def _try(self, write: bool, who: object) -> Any:
        pool, entry = self._pool, self._entry
        batch = Batch()
        with pool._lock:
            pool._check_usable(entry)
            value = pool._try_acquire(entry, write, batch, who)
            if value is not MISSING:
                pool._hit_count.n += 1
        pool._after(batch)
        return value

    def write_now(self) -> None:
        """Make sure the item's blob is on storage: write it now if it has none.

        Blocks until the write ends; the value stays in memory either way.

        Raises:
            CodecError: the value cannot be encoded.
            OSError: storage failed.
            GuardConflictError: this thread or task holds the write guard.
        """
        self._pool._write_now(self._entry)

    async def awrite_now(self) -> None:
        """Async twin of `write_now`: the write runs on a worker thread."""
        pool, entry = self._pool, self._entry
        while True:
            step = pool._write_now_turn(entry)
            if step is None:
                return
            if isinstance(step, Future):
                await wait(step)
                continue
            await wait(pool.store._submit_task(pool._write, entry, *step))
            return

    def evict(self) -> int:
        """Make the value leave memory now: write its blob if it has none, then drop it.

        Blocks for the write. A pinned value (a guard is held) stays; so does one that is
        being loaded or written by someone else.

        Returns:
            The bytes freed (the value's ``sizeof``), or 0 if nothing left memory.

        Raises:
            CodecError: the value cannot be encoded (it stays in memory).
            OSError: storage failed (the value stays in memory).
        """
        if self._entry.value is MISSING:
            return 0
        return self._pool._evict(self._entry)

    @property
    def stored_nbytes(self) -> int | None:
        """Size of the blob this pool last wrote for the item, or None if it wrote none."""
        return self._entry.stored_nbytes

    def spawn_write_now(self) -> Future[None]:
        """Start `write_now` in the background; the future holds its outcome."""
        return self._pool.store._spawn(self.write_now)

    # -- persistence -----------------------------------------------------------------------

    def persist(self, tracked: TrackedPath) -> UUID:
        """Place the item's blob in the durable location ``tracked``; return its key.

        Writes the blob first if the item has none, then links it there (a hard link on the
        same local device; a fsynced copy renamed into place otherwise). Idempotent per
        location. Durable after the next `BackingStore.fsync` of ``tracked``.

        Raises:
            ForeignLocationError: ``tracked`` belongs to something else (another marker,
                a cache directory, or a non-empty directory fb has not claimed).
            CodecError: the value cannot be encoded.
            OSError: the location cannot be written; nothing is left half-done.
        """
        pool, entry = self._pool, self._entry
        store = pool.store
        check_tracked(tracked, store)
        while True:
            with pool._lock:
                pool._check_usable(entry)
                key = entry.key
                if entry.blob:
                    # Hold a reference so a concurrent load_mut or close cannot delete the
                    # blob while it is being linked.
                    store._add_ref(key)
                    break
            self.write_now()
        try:
            if not tracked._is_placed(key):
                tracked._added(key, store.strategy.persist(key, tracked.path))
        finally:
            store._release(key)
        return key

    async def apersist(self, tracked: TrackedPath) -> UUID:
        """Async twin of `persist`."""
        return await asyncio.to_thread(self.persist, tracked)

    def spawn_persist(self, tracked: TrackedPath) -> Future[UUID]:
        """Start `persist` in the background; the future holds the key or the error."""
        return self._pool.store._spawn(self.persist, tracked)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the item: its value leaves memory and its blob is deleted in the background.

        Idempotent. If guards are held, this happens when the last one is released.
        """
        _LIVE.pop(self._ref, None)
        self._pool._close(self._entry)

    def __reduce__(self) -> Any:
        raise NotPicklableError(
            f"an Fb handle cannot be pickled ({self!r}): it belongs to a pool in this "
            "process. Pickle its value instead (with handle.load() as value: ...), or "
            "persist it (handle.persist(tracked), then store.fsync(tracked)) and send the "
            "key: the other process calls pool.register(tracked, key)"
        )

    def __enter__(self) -> Fb[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
