"""The spilling half of FbSpillBuffer: manual eviction and encode or storage failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from dask.typing import Key

from .. import Fb, FBPool
from ..exceptions import CodecError, HandleClosedError
from ._dask_metrics import SpillMetrics, metered_io

__all__ = ["Spilling"]

# distributed's own spill logger: what worker logs show and what Dask users watch. It
# rate-limits "Spill to disk failed" (the memory monitor may call evict() ten times a
# second while storage is failing).
_log = logging.getLogger("distributed.spill")


class Spilling:
    """`FbSpillBuffer`'s manual eviction and failure handling (see there).

    Holds no state of its own: the attributes below are the buffer's.
    """

    _pool: FBPool[Any]
    _lock: threading.Lock
    _handles: dict[Key, Fb[Any]]
    _owners: dict[UUID, Key]
    _unspillable: dict[Key, object]
    _failed_early: dict[UUID, BaseException]
    _metrics: SpillMetrics
    _evict_lock: threading.Lock
    _manual_evictions: int
    _closed: bool

    def evict(self) -> int:
        """Spill the least recently used value in memory; return its ``sizeof``, or -1.

        Distributed's manual-eviction interface: the worker's memory monitor calls this
        while the process uses more memory than its spill threshold. The value is written
        (unless a blob exists already) and dropped from the pool's memory. A value that
        cannot be encoded is moved out of the pool (kept in memory, logged once) and -1 is
        returned, as is done when storage fails (logged, the value stays). Never raises.
        """
        with self._evict_lock:
            if self._closed:
                return -1
            try:
                with self._metrics.capture():
                    for key, handle in self._least_recent_resident():
                        freed = self._evict_one(key, handle)
                        if freed is not None:
                            return freed
            except Exception:
                _log.exception("Spill to disk failed; keeping data in memory (%r)", self)
        return -1

    def _least_recent_resident(self) -> Iterator[tuple[Key, Fb[Any]]]:
        for blob_key in reversed(self._pool.order()):
            with self._lock:
                key = self._owners.get(blob_key)
                handle = None if key is None else self._handles.get(key)
            if key is not None and handle is not None and handle.resident:
                yield key, handle

    def _evict_one(self, key: Key, handle: Fb[Any]) -> int | None:
        """Spill one value; None when it cannot leave now (try the next one)."""
        try:
            with metered_io("disk-write") as moved:
                unwritten = handle.stored_nbytes is None
                freed = handle.evict()
                if freed and unwritten and handle.stored_nbytes is not None:
                    moved.append(handle.stored_nbytes)
        except HandleClosedError:
            return None
        except CodecError as exc:
            self._move_out(key, handle, exc)
            return -1
        except OSError:
            _log.exception("Spill to disk failed; keeping data in memory (%r)", key)
            return -1
        if not freed:
            return None  # pinned, or being loaded or written by someone else
        self._manual_evictions += 1
        return freed

    def _on_write_error(self, exc: BaseException) -> None:
        """The pool's ``on_error``: a background write-back failed."""
        if not isinstance(exc, CodecError) or exc.key is None:
            # fb keeps the value in memory and retries the write (with backoff).
            _log.error("Spill to disk failed; keeping data in memory: %s", exc, exc_info=exc)
            return
        with self._lock:
            key = self._owners.get(exc.key)
            handle = None if key is None else self._handles.get(key)
            if key is None or handle is None:
                # __setitem__ has not mapped the handle yet (or it was deleted since).
                self._failed_early[exc.key] = exc
                return
        self._move_out(key, handle, exc)

    def _move_out(self, key: Key, handle: Fb[Any], exc: BaseException) -> None:
        """Keep the value of a handle that cannot be encoded in memory, outside the pool."""
        guard = handle.try_load()
        if guard is None:
            return  # a retried write is in flight: its failure comes back here
        try:
            with self._lock:
                if self._handles.get(key) is not handle:
                    return
                del self._handles[key]
                self._owners.pop(handle.key, None)
                self._unspillable[key] = guard.value
            # Closed while still pinned: releasing the guard then finalizes the item instead
            # of offering it for eviction again (which would retry the doomed write).
            handle.close()
        finally:
            guard.release()
        # Once per value: it is out of the pool, so fb never tries to write it again.
        _log.error("Failed to pickle %r; keeping it in memory: %s", key, exc, exc_info=exc)
