"""The state of one item, and small helpers shared by the pool and the handles."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from itertools import repeat
from typing import Any, TypeVar
from uuid import UUID

__all__ = [
    "MISSING",
    "NO_VALUE",
    "Batch",
    "Entry",
    "HitCount",
    "add_reader",
    "check_timeout",
    "forget_reader",
    "getter",
    "holds_read",
    "owner",
    "quiet",
    "regate",
    "same_owner",
    "set_value",
    "wait",
]

R = TypeVar("R")

MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


def getter(value: Any) -> Callable[[], Any]:
    """A callable written in C that returns ``value``: a read guard's ``__enter__``.

    ``with`` calls what it finds as ``__enter__``; a C callable there costs a fraction of a
    Python frame (see `fb._guards.ReadGuard`).
    """
    return repeat(value).__next__


NO_VALUE = getter(MISSING)
"""The getter of an entry without a value."""


class Entry:
    """The state of one item; guarded by its pool's lock.

    ``value`` is `MISSING` when the item is not resident. ``blob`` is true when storage
    holds a complete blob under ``key`` that this entry references. ``writing`` is true while
    a write of ``value`` is in flight (eviction, early write or ``write_now``); ``evicting``
    marks the eviction kind, during which ``try_load`` answers None as the crate does;
    ``early`` marks an early write (see `FBPool`'s ``write``), whose ``early_bytes`` count as
    pending until it ends. A write guard may be taken during an early write: the write's key
    is then stale, and its blob is deleted when it ends.

    ``pins`` holds the `owner` of each read pin (None for a pin no guard holds, as a
    prefetch's), so that a thread asking for a write guard while it holds a read guard is
    refused instead of waiting for itself; ``readers`` is their number.

    ``get`` returns ``value`` (see `getter`), built once per value rather than once per hit;
    set both through `set_value`, so that a value that leaves memory is not kept by ``get``.

    ``fast`` is the hit path's gate. The hit path takes no lock: it appends its pin to
    ``pins`` (one atomic list operation under the GIL), *then* reads ``fast``, and uses the
    value only if the gate was open. Every step that needs no read pin (dropping the value,
    a write guard, finalizing a closed item) closes the gate *first* and reads ``pins``
    second (`quiet`). Whatever the interleaving, either that step sees the pin and backs
    off, or the hit sees the gate shut and takes the locked path: a pin is never lost. A
    release that finds the gate shut takes the locked path too, which re-offers, finalizes
    or wakes what was waiting for the pins to go. The gate is opened again under the lock
    (`regate`) once nothing keeps it shut, and only for an item in the hot segment: the pool's
    order shuts it when the item moves out (a hit there must reorder under the lock).
    ``source`` is the location a registered item's blob came from, until a write replaces it.
    ``unencodable`` is true once the codec refused the value: it is not offered for eviction
    again until a write guard (which may change it) is released.
    """

    __slots__ = (
        "blob",
        "closed",
        "early",
        "early_bytes",
        "evicting",
        "fast",
        "get",
        "key",
        "loading",
        "pins",
        "segment",
        "size",
        "source",
        "stored_nbytes",
        "unencodable",
        "value",
        "waiter",
        "writer",
        "writer_owner",
        "writing",
    )

    def __init__(self, key: UUID, value: Any, size: int, *, blob: bool = False) -> None:
        self.key = key
        self.value = value
        self.get = NO_VALUE if value is MISSING else getter(value)
        self.size = size
        self.stored_nbytes: int | None = None
        self.blob = blob
        self.unencodable = False
        self.pins: list[object] = []
        self.fast = False  # opened by the pool once the item is in its order (regate)
        self.source: Any = None  # a PreparedPath; Any keeps this module free of imports
        self.segment = -1  # kept by the pool's SegmentTaggingLRU: 0, 1, 2, or -1 if not in it
        self.writer = False
        self.writer_owner: object = None
        self.writing = False
        self.evicting = False
        self.early = False
        self.early_bytes = 0
        self.loading = False
        self.closed = False
        self.waiter: Future[None] | None = None

    @property
    def readers(self) -> int:
        """How many read pins are held."""
        return len(self.pins)


class HitCount:
    """A pool's hit counter, in a slot that the lock-free hit path bumps (see `Entry`)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Batch:
    """What an operation decided under the lock and runs after releasing it."""

    __slots__ = ("events", "garbage", "wake", "work")

    def __init__(self) -> None:
        self.work: list[tuple[Entry, UUID, Any]] = []  # write-backs: entry, key, value
        self.wake: list[Future[None]] = []
        self.garbage: list[Any] = []
        self.events: list[tuple[Callable[..., object], tuple[Any, ...]]] = []


_get_ident = threading.get_ident
_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task


def owner() -> object:
    """Who is asking for a guard: see `same_owner`.

    A blocking call passes its thread's ident (an int) itself; this is for the calls that
    may run in a task: the pair (thread ident, task) when an event loop runs in the thread.
    """
    loop = _running_loop()
    if loop is None:
        return _get_ident()
    return _get_ident(), _current_task(loop)


def same_owner(holder: object, who: object) -> bool:
    """Whether waiting for ``holder``'s guard would wait for ``who`` itself.

    A thread (an int) that blocks blocks every task of its event loop too, so it is the
    same as any of them; a task (a pair) is the same only as itself.
    """
    if holder == who:
        return True
    return type(who) is int and type(holder) is tuple and holder[0] == who


def add_reader(entry: Entry, who: object) -> None:
    """Under the lock: one more read pin, held by ``who`` (None: no guard's pin)."""
    entry.pins.append(who)


def forget_reader(entry: Entry, who: object) -> None:
    """Under the lock: give back one read pin of ``who``."""
    with contextlib.suppress(ValueError):
        entry.pins.remove(who)


def holds_read(entry: Entry, who: object) -> bool:
    """Under the lock: whether ``who`` holds a read guard of ``entry`` (see `same_owner`)."""
    return any(holder is not None and same_owner(holder, who) for holder in entry.pins)


def quiet(entry: Entry) -> bool:
    """Under the lock: shut the hit path's gate, then say whether no read pin is held.

    The order is what makes the lock-free hit path safe (see `Entry`). The gate stays shut:
    the step that asked either changes the state (the value leaves, a writer comes) or
    backs off, and then the pins' release takes the locked path and re-checks.
    """
    entry.fast = False
    return not entry.pins


def regate(entry: Entry) -> None:
    """Under the lock: open the hit path's gate if nothing needs it shut."""
    entry.fast = (
        entry.segment == 0  # hot: elsewhere a hit reorders, a release may re-offer
        and entry.value is not MISSING
        and not entry.writer
        and not entry.closed
        and entry.waiter is None
    )


def set_value(entry: Entry, value: Any) -> None:
    """Give ``entry`` a new value (or `MISSING`), and the hit path's getter of it."""
    entry.value = value
    entry.get = NO_VALUE if value is MISSING else getter(value)


def check_timeout(timeout: float | None) -> float | None:
    """Return ``timeout`` if it is None or a number of seconds >= 0.

    Raises:
        TypeError: ``timeout`` is not a number.
        ValueError: ``timeout`` is negative or NaN.
    """
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
    return timeout


async def wait(future: Future[R]) -> R:
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
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_copy, done)

    future.add_done_callback(_on_done)
    return await view
