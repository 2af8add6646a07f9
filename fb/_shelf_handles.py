"""The live handles of a `fb.Shelf`: looking a name up, forgetting it, closing idle ones.

A shelf keeps one `Fb` handle per name it read or set, in ``_live``; a get answers from it
when the name's record still names its key. This mixin holds that bookkeeping, to keep
``_shelf.py`` short.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._entry import MISSING
from ._shelf_async import RETRIES
from .exceptions import BlobNotFoundError

if TYPE_CHECKING:
    from ._handle import Fb
    from ._persist import TrackedPath
    from ._pool import FBPool
    from ._shelf_index import NameIndex
    from ._shelf_sqlite import SqliteIndex

__all__ = ["LiveHandles", "pinned"]

T = TypeVar("T")

MAX_IDLE_HANDLES = 4096
"""Handles of names not in memory kept for a cheap reload; past this the oldest go."""


class LiveHandles(Generic[T]):
    """``_lookup``, ``_forget`` and ``_prune`` over the shelf's ``_live`` handles."""

    if TYPE_CHECKING:
        pool: FBPool[T]
        refresh: float
        cache_bytes: int
        _tracked: TrackedPath
        _index: NameIndex | SqliteIndex
        _lock: threading.Lock
        _live: dict[str, Fb[T]]
        _accessed: dict[str, float]
        _sizes: dict[str, int]
        _checked: dict[str, tuple[float, float | None]]
        _idle_bytes: int

        def _check_open(self) -> None: ...

    def _lookup(self, name: str) -> tuple[Fb[T], Any]:
        """Return a handle on ``name``'s current value (KeyError if none), and the value.

        The value is `MISSING` unless the handle is new: a name not looked up before (or
        replaced since) is registered and loaded in one step (`FBPool._register_loaded`),
        as every caller loads it next.
        """
        self._check_open()
        if self.refresh:
            with self._lock:
                handle = self._live.get(name)
                checked, expire = self._checked.get(name, (-math.inf, None))
            now = time.time()
            fresh_enough = time.monotonic() - checked < self.refresh
            if handle is not None and fresh_enough and (expire is None or now < expire):
                with self._lock:
                    self._accessed[name] = now
                return handle, MISSING  # checked within `refresh` seconds: no record read
        for _ in range(RETRIES):
            record = self._index.read(name, touch=True)
            now = time.time()
            if record is None or record.expired(now):
                raise KeyError(name)
            with self._lock:
                self._accessed[name] = now
                self._sizes[name] = record.size
                self._checked[name] = (time.monotonic(), record.expire)
                handle = self._live.get(name)
            if handle is not None and not handle.closed and handle.key == record.key:
                return handle, MISSING
            try:
                loaded = self.pool._register_loaded(self._tracked, record.key)
            except BlobNotFoundError:
                loaded = None
            if loaded is None:
                # The blob was replaced or deleted since the record was read: read it again.
                self._index.forget(name)
                continue
            fresh, value = loaded
            stale: Fb[T] | None
            with self._lock:
                current = self._live.get(name)
                if current is not None and not current.closed and current.key == record.key:
                    stale, handle = fresh, current  # another thread registered it first
                else:
                    stale, handle = current, fresh
                    self._live[name] = fresh
                    self._idle_bytes += record.size
            if stale is not None:
                stale.close()
            self._prune()
            return handle, value
        raise KeyError(name)

    def _stale(self, name: str, handle: Fb[T]) -> None:
        """Drop ``handle`` on ``name``, whose blob is gone, and its record as last read."""
        self._index.forget(name)
        self._forget(name, handle.key)
        handle.close()  # if another thread's handle had replaced it, `_forget` left this one

    def _forget(self, name: str, key: uuid.UUID | None = None) -> None:
        with self._lock:
            handle = self._live.get(name)
            if handle is None or (key is not None and handle.key != key):
                return
            del self._live[name]
            self._accessed.pop(name, None)
            self._sizes.pop(name, None)
            self._checked.pop(name, None)
        handle.close()

    def _prune(self) -> None:
        """Close the least recently used handles of names not in memory past the idle limits.

        Such a handle keeps its blob in this shelf's cache directory (a hard link on local
        disk, a download off it), so a later get needs no copy; past ``MAX_IDLE_HANDLES``
        of them or ``cache_bytes`` of their blobs, the oldest go (to three quarters of each).
        """
        # The idle bytes at the last prune plus every blob given a handle since: an upper
        # bound, so the handles are looked at only when the limit may be passed.
        if len(self._live) <= MAX_IDLE_HANDLES and self._idle_bytes <= self.cache_bytes:
            return
        with self._lock:
            idle = [
                (self._accessed.get(name, 0.0), name, handle)
                for name, handle in self._live.items()
                if not handle.resident and not pinned(handle)
            ]
            sizes = {name: self._sizes.get(name, 0) for _, name, _ in idle}
        count, nbytes = len(idle), sum(sizes.values())
        if count <= MAX_IDLE_HANDLES and nbytes <= self.cache_bytes:
            self._idle_bytes = nbytes
            return
        idle.sort(key=lambda item: item[0])
        drop: list[tuple[str, Fb[T]]] = []
        for _, name, handle in idle:
            if count <= MAX_IDLE_HANDLES * 3 // 4 and nbytes <= self.cache_bytes * 3 // 4:
                break
            drop.append((name, handle))
            count -= 1
            nbytes -= sizes[name]
        with self._lock:
            self._idle_bytes = nbytes
            for name, handle in drop:
                if self._live.get(name) is handle:
                    del self._live[name]
        for _, handle in drop:
            with contextlib.suppress(Exception):
                handle.close()


def pinned(handle: Fb[Any]) -> bool:
    entry = handle._entry
    return bool(entry.readers or entry.writer)
