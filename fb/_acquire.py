"""The acquire loops of a pool: wait, load, or refuse, until a guard is had.

`PoolCore` (in ``_core.py``) inherits these. Each turn of a loop takes one step of the
state machine under the pool's lock (`_acquire_step`); between turns the loop waits for a
future, outside the lock, within the caller's ``timeout``. A caller whose own guard is in the
way is refused with `GuardConflictError` rather than left to wait for itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from . import _janitor
from ._entry import MISSING, Batch, Entry, HitCount, holds_read, owner, same_owner, wait
from ._store import BackingStore
from .exceptions import GuardConflictError, GuardTimeoutError

__all__ = ["Acquire", "Step"]

T = TypeVar("T")

Step = Future[None] | UUID | GuardConflictError | None
"""What a turn of an acquire tells its loop: done, wait for this, load this key, or refuse."""


def _busy(entry: Entry, write: bool) -> str:
    """Why a guard of ``entry`` must wait (for a timeout's message; read without the lock)."""
    if entry.writer:
        return "a write guard is held"
    if write and entry.readers:
        return f"{entry.readers} read guard(s) are held"
    if entry.loading:
        return "its value is being loaded"
    if entry.writing:
        return "its value is being written"
    return "it is busy"


def _flush_once(conflict: GuardConflictError, flushed: bool) -> Future[None]:
    """What to wait for before looking again at a guard the caller's own guard blocks.

    The guard in the way may be one this caller dropped without releasing: its release
    waits on the janitor thread, so the first time the wait is a janitor flush. A second
    conflict (or one seen by the janitor itself, which must not wait for itself) is real.

    Raises:
        GuardConflictError: ``conflict``, when it is real.
    """
    if flushed or _janitor.is_janitor():
        raise conflict
    return _janitor.flush()


class Acquire(Generic[T]):
    """The acquire loops of `PoolCore` (see the module docstring)."""

    store: BackingStore[T]
    _lock: threading.Lock
    _n: dict[str, int]
    _hit_count: HitCount

    if TYPE_CHECKING:  # steps of PoolCore these use

        def _after(self, batch: Batch) -> None: ...
        def _acquire_step(
            self, entry: Entry, write: bool, touched: bool, batch: Batch, who: object
        ) -> tuple[Any, Step]: ...
        def _load_blob(self, entry: Entry, key: UUID, write: bool, who: object = None) -> Any: ...
        def _release(self, entry: Entry, write: bool, who: object = None) -> None: ...
        def _unpin_locked(self, entry: Entry, who: object, batch: Batch) -> None: ...

    def _conflict(self, entry: Entry, who: object, write: bool) -> GuardConflictError | None:
        """Under the lock: the error if ``who`` would wait for its own guard of ``entry``."""
        if entry.writer and same_owner(entry.writer_owner, who):
            return GuardConflictError(
                f"waiting for the write guard of key {entry.key.hex}, which this same "
                "thread/task holds: release the guard first"
            )
        if write and entry.readers and holds_read(entry, who):
            return GuardConflictError(
                f"asking for the write guard of key {entry.key.hex} while this same "
                "thread/task holds a read guard of it would wait forever: release the read "
                "guard first, or take the write guard alone (it reads the value too)"
            )
        return None

    def _check_self_wait(self, entry: Entry) -> None:
        error = self._conflict(entry, owner(), False)
        if error is not None:
            raise error

    def _timed_out(self, entry: Entry, write: bool, timeout: float) -> GuardTimeoutError:
        kind = "write" if write else "read"
        return GuardTimeoutError(
            f"no {kind} guard of key {entry.key.hex} within {timeout} s: {_busy(entry, write)}"
        )

    def _acquire_turn(
        self,
        entry: Entry,
        write: bool,
        touched: bool,
        missed: bool,
        who: object,
        unpin: bool = False,
    ) -> tuple[Any, Step, bool]:
        """One turn of the acquire loop shared by `_acquire` and `_aacquire`.

        Returns (value, None, _) once pinned, (MISSING, future, missed) to wait for the
        future and turn again, (MISSING, key, _) when the caller must load blob ``key``,
        or (MISSING, error, _) when ``who`` holds a guard that blocks it.
        ``missed`` says whether the item was out of memory on an earlier turn (a wait for
        someone else's load still counts as a miss). ``unpin``: first give back the pin
        the lock-free hit path took (see `Fb.load`), in the same lock section.
        """
        batch = Batch()
        try:
            with self._lock:
                if unpin:
                    self._unpin_locked(entry, who, batch)
                value, step = self._acquire_step(entry, write, touched, batch, who)
                if step is None:
                    if missed:
                        self._n["misses"] += 1
                    else:
                        self._hit_count.n += 1
                elif isinstance(step, Future):
                    missed = missed or entry.value is MISSING
                elif isinstance(step, UUID):
                    self._n["misses"] += 1
        finally:
            self._after(batch)
        return value, step, missed

    def _acquire(
        self,
        entry: Entry,
        write: bool,
        who: object,
        timeout: float | None = None,
        unpin: bool = False,
    ) -> Any:
        """Blocking acquire of ``who``'s read (or write) pin; loads in this thread on a miss.

        Waits for other holders at most ``timeout`` seconds (None: no limit). ``unpin``:
        ``who`` holds a pin the lock-free hit path took, which the first turn gives back.
        """
        # A plain loop rather than a generator shared with _aacquire: driving a generator
        # costs about 1 us per miss.
        deadline = None if timeout is None else time.monotonic() + timeout
        touched = missed = flushed = False
        while True:
            value, step, missed = self._acquire_turn(entry, write, touched, missed, who, unpin)
            touched = True
            unpin = False
            if step is None:
                return value
            if isinstance(step, UUID):
                return self._load_blob(entry, step, write, who)
            if isinstance(step, GuardConflictError):
                step = _flush_once(step, flushed)
                flushed = True
            try:
                step.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except FutureTimeoutError:
                raise self._timed_out(entry, write, timeout or 0.0) from None

    async def _aacquire(
        self, entry: Entry, write: bool, who: object, patience: float | None = None
    ) -> Any:
        """Async twin of `_acquire`: the load runs on a worker, waits never block the loop.

        ``patience`` is `_acquire`'s ``timeout`` (which bounds only the waits).
        """
        deadline = None if patience is None else time.monotonic() + patience
        touched = missed = flushed = False
        while True:
            value, step, missed = self._acquire_turn(entry, write, touched, missed, who)
            touched = True
            if step is None:
                return value
            if isinstance(step, UUID):
                break
            if isinstance(step, GuardConflictError):
                step = _flush_once(step, flushed)
                flushed = True
            try:
                if deadline is None:
                    await wait(step)
                else:
                    await asyncio.wait_for(wait(step), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise self._timed_out(entry, write, patience or 0.0) from None
        job = self.store._submit_task(self._load_blob, entry, step, write, who)
        try:
            return await wait(job)
        except asyncio.CancelledError:
            # The load goes on without us; give back the pin it takes for us.
            def _unpin(done: Future[Any]) -> None:
                if done.exception() is None:
                    self._release(entry, write, who)

            job.add_done_callback(_unpin)
            raise
