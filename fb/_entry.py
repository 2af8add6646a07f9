"""The state of one item, and small helpers shared by the pool and the handles."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar
from uuid import UUID

__all__ = ["MISSING", "Batch", "Entry", "owner", "wait"]

R = TypeVar("R")

MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


class Entry:
    """The state of one item; guarded by its pool's lock.

    ``value`` is `MISSING` when the item is not resident. ``blob`` is true when storage
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
        "segment",
        "size",
        "stored_nbytes",
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
        self.stored_nbytes: int | None = None
        self.blob = blob
        self.readers = 0
        self.segment = -1  # kept by the pool's SegmentTaggingLRU: 0, 1, 2, or -1 if not in it
        self.writer = False
        self.writer_owner: tuple[int, object] | None = None
        self.writing = False
        self.evicting = False
        self.loading = False
        self.closed = False
        self.waiter: Future[None] | None = None


class Batch:
    """What an operation decided under the lock and runs after releasing it."""

    __slots__ = ("events", "garbage", "wake", "work")

    def __init__(self) -> None:
        self.work: list[tuple[Entry, UUID, Any]] = []  # write-backs: entry, key, value
        self.wake: list[Future[None]] = []
        self.garbage: list[Any] = []
        self.events: list[tuple[Callable[..., object], tuple[Any, ...]]] = []


def owner() -> tuple[int, object]:
    try:
        task: object = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), task


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
