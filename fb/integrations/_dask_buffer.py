"""FbSpillBuffer: a Dask worker's data mapping whose task results live in an FBPool."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, MutableMapping, Set
from typing import Any, cast
from uuid import UUID

from dask.typing import Key
from distributed.sizeof import safe_sizeof
from distributed.utils import RateLimiterFilter

from .. import BackingStore, Fb, FBPool, PoolStatistics
from .._keywords import check_keywords
from .._open import OBJECT_STORE_WORKERS
from .._pool import DEFAULT_MAX_PENDING_BYTES
from .._store import DEFAULT_MAX_WORKERS
from ..backends import FBStore, PreparedPath
from ..exceptions import CodecError, HandleClosedError
from ..typing import Codec
from ._dask_views import KeyView, SpilledSize

__all__ = ["FbSpillBuffer"]

_log = logging.getLogger("fb.integrations.dask")
# The worker's memory monitor may call evict() ten times a second while storage is failing.
_log.addFilter(RateLimiterFilter(r"fb: spilling .* failed", rate="10s"))


class FbSpillBuffer(MutableMapping[Key, object]):
    """A Dask worker's ``data``: each task result is kept behind an `Fb` in an `FBPool`.

    Results beyond ``max_bytes`` (measured with Dask's ``sizeof``) are written to storage
    in the background and dropped from memory once written; reading a spilled key loads it
    back. The mapping also implements distributed's manual-eviction interface (``fast`` and
    `evict`), so the worker's memory monitor can spill more under memory pressure.

    Pass it to a worker as ``data=(FbSpillBuffer, {"max_bytes": ..., "url": ...})``:
    distributed then calls it once per worker with ``worker_local_directory``. Each
    instance writes under a fresh session directory (``fb-dask-<pid>-<hex>`` below ``url``,
    or below the worker's own directory when ``url`` is None; ``fb-dask-<hex>`` below an
    ``s3://`` URL), so several workers can share one ``url``. Add `FbSpillPlugin` to the
    workers so that a closing worker closes its buffer (distributed never closes ``data``).

    Args:
        worker_local_directory: the worker's directory, given by distributed.
        max_bytes: the pool's byte budget for results kept in memory.
        url: where spilled results go: a local directory or any fsspec URL
            (``s3://bucket/prefix``). None: the worker's directory (or the system's
            temporary directory outside a worker).
        codec: a codec or codec name (default ``"pickle"``).
        max_workers: fb's background threads (default 4 on local disk, 16 on object stores).
        max_pending_bytes: bytes that may wait for write-back before a store of a new
            result blocks (fb's default when None).
        secret_key: sign blobs with HMAC-SHA256 (see `fb.backends.FBStore`).
        storage_options: passed to fsspec, in one mapping (e.g.
            ``{"client_kwargs": {"endpoint_url": …}}``), as `fb.open_pool` takes them.

    An unknown keyword raises `TypeError` when the worker builds the buffer, suggesting the
    parameter it is close to (``max_byte`` → ``max_bytes``), or ``storage_options`` for what
    looks like a storage option.

    A value that cannot be encoded (a pickle error) stays in memory outside the pool, is
    logged once, and stays readable, as distributed's ``SpillBuffer`` does with an older
    key that fails to pickle; unlike it, a value larger than the budget that fails to
    pickle is kept too, instead of failing its task.

    Notes:
        Thread-safe: the worker's event loop, its task threads and fb's threads may use it
        at once (one lock around the key → handle dict, never held across I/O).
        `__getitem__` of a spilled key and `evict` block on storage I/O; `__setitem__`
        blocks only for fb's backpressure; ``del``, ``in``, ``len`` and iteration never do
        I/O. Values returned by `__getitem__` are plain references: the pool may evict the
        item while Dask still holds the value.
    """

    @check_keywords
    def __init__(
        self,
        worker_local_directory: str | None = None,
        *,
        max_bytes: int,
        url: str | os.PathLike[str] | None = None,
        codec: str | Codec[Any] = "pickle",
        max_workers: int | None = None,
        max_pending_bytes: int | None = None,
        secret_key: bytes | str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        target = (worker_local_directory or tempfile.gettempdir()) if url is None else url
        base = PreparedPath(target, storage_options=storage_options)
        if base.is_object_store:
            base.check_bucket()
            self._root = base.child(f"fb-dask-{uuid.uuid4().hex}")
        else:
            self._root = base.child(f"fb-dask-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        workers = OBJECT_STORE_WORKERS if base.is_object_store else DEFAULT_MAX_WORKERS
        try:
            strategy: FBStore[Any] = FBStore(
                codec, self._root.child("cache"), secret_key=secret_key
            )
        except BaseException:
            self._remove_root()
            raise
        try:
            self._store: BackingStore[Any] = BackingStore(
                strategy, max_workers=max_workers or workers
            )
            self._pool: FBPool[Any] = FBPool(
                self._store,
                max_bytes=max_bytes,
                sizeof=safe_sizeof,
                max_pending_bytes=(
                    DEFAULT_MAX_PENDING_BYTES if max_pending_bytes is None else max_pending_bytes
                ),
                on_error=self._on_write_error,
                # Distributed's memory manager decides when to spill (evict), and most task
                # results are released before that: an early write would be wasted I/O.
                write="on_evict",
            )
        except BaseException:
            strategy.close()
            self._remove_root()
            raise
        self._lock = threading.Lock()
        self._handles: dict[Key, Fb[Any]] = {}
        self._owners: dict[UUID, Key] = {}  # blob key -> Dask key, for write errors
        self._sizes: dict[Key, int] = {}
        self._unspillable: dict[Key, object] = {}  # values that failed to encode
        self._failed_early: set[UUID] = set()  # encode errors seen before the key was mapped
        self._evict_lock = threading.Lock()
        self._manual_evictions = 0
        self._closed = False

    def __repr__(self) -> str:
        with self._lock:
            keys, unspillable = len(self._handles), len(self._unspillable)
        state = "closed" if self._closed else "open"
        return (
            f"<FbSpillBuffer {self._root.url} keys={keys} unspillable={unspillable} "
            f"max_bytes={self._pool.max_bytes} {state}>"
        )

    # -- inspection ------------------------------------------------------------------------

    @property
    def pool(self) -> FBPool[Any]:
        """The pool that holds the results."""
        return self._pool

    @property
    def location(self) -> PreparedPath:
        """This buffer's session directory (or object-store prefix)."""
        return self._root

    @property
    def fast(self) -> Set[Key]:
        """The keys whose values are in the pool's memory (what `evict` can spill)."""
        return KeyView(self, resident=True)

    @property
    def slow(self) -> Set[Key]:
        """The keys whose values are on storage only."""
        return KeyView(self, resident=False)

    @property
    def unspillable(self) -> frozenset[Key]:
        """The keys kept in memory because their values could not be encoded."""
        with self._lock:
            return frozenset(self._unspillable)

    @property
    def manual_evictions(self) -> int:
        """How many values `evict` has spilled."""
        return self._manual_evictions

    @property
    def spilled_total(self) -> SpilledSize:
        """The values on storage only, for the worker's metrics.

        ``memory`` is their ``sizeof`` total; ``disk`` the size of their blobs (a value
        whose blob this pool did not write itself counts its ``sizeof``).
        """
        memory = disk = 0
        with self._lock:
            for key, handle in self._handles.items():
                if not handle.resident:
                    size = self._sizes.get(key, 0)
                    stored = handle.stored_nbytes
                    memory += size
                    disk += size if stored is None else stored
        return SpilledSize(memory, disk)

    def statistics(self) -> PoolStatistics:
        """Return the pool's counters (stores, evictions, loads, bytes, errors…)."""
        return self._pool.statistics()

    def _snapshot(self) -> list[tuple[Key, Fb[Any]]]:
        with self._lock:
            return list(self._handles.items())

    def _handle(self, key: object) -> Fb[Any] | None:
        with self._lock:
            return self._handles.get(cast("Key", key))

    # -- MutableMapping --------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._handles) + len(self._unspillable)

    def __iter__(self) -> Iterator[Key]:
        with self._lock:
            keys = [*self._handles, *self._unspillable]
        return iter(keys)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._handles or key in self._unspillable

    def __getitem__(self, key: Key) -> object:
        while True:
            with self._lock:
                handle = self._handles.get(key)
                if handle is None:
                    if key in self._unspillable:
                        return self._unspillable[key]
                    raise KeyError(key)
            try:
                with handle.load() as value:
                    return value
            except HandleClosedError:
                # Replaced, deleted or moved out (evict, a pickle error) meanwhile: look again.
                continue

    def __setitem__(self, key: Key, value: object) -> None:
        size = safe_sizeof(value)
        handle = self._pool.insert(value)  # outside the lock: it may wait for backpressure
        with self._lock:
            old = self._handles.get(key)
            self._handles[key] = handle
            self._owners[handle.key] = key
            if old is not None:
                self._owners.pop(old.key, None)
            self._sizes[key] = size
            self._unspillable.pop(key, None)
            failed = handle.key in self._failed_early
            self._failed_early.discard(handle.key)
        if old is not None:
            old.close()
        if failed:
            self._move_out(key, handle, None, logged=True)

    def __delitem__(self, key: Key) -> None:
        with self._lock:
            handle = self._handles.pop(key, None)
            if handle is None:
                del self._unspillable[key]  # raises KeyError for an unknown key
            else:
                self._owners.pop(handle.key, None)
            self._sizes.pop(key, None)
        if handle is not None:
            handle.close()  # no I/O: the blob, if any, is deleted in the background

    # -- spilling --------------------------------------------------------------------------

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
                for key, handle in self._least_recent_resident():
                    freed = self._evict_one(key, handle)
                    if freed is not None:
                        return freed
            except Exception:
                _log.exception("fb: spilling from %r failed; keeping data in memory", self)
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
            freed = handle.evict()
        except HandleClosedError:
            return None
        except CodecError as exc:
            self._move_out(key, handle, exc, logged=False)
            return -1
        except OSError:
            _log.exception("fb: spilling %r from %s failed; keeping data in memory", key, self)
            return -1
        if not freed:
            return None  # pinned, or being loaded or written by someone else
        self._manual_evictions += 1
        return freed

    def _on_write_error(self, exc: BaseException) -> None:
        """The pool's ``on_error``: a background write-back failed (fb logged it already)."""
        if not isinstance(exc, CodecError) or exc.key is None:
            return  # storage errors: fb keeps the value in memory and retries the write
        with self._lock:
            key = self._owners.get(exc.key)
            handle = None if key is None else self._handles.get(key)
            if key is None or handle is None:
                # __setitem__ has not mapped the handle yet (or it was deleted since).
                self._failed_early.add(exc.key)
                return
        self._move_out(key, handle, exc, logged=True)

    def _move_out(
        self, key: Key, handle: Fb[Any], exc: BaseException | None, *, logged: bool
    ) -> None:
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
        _log.error(
            "fb: failed to pickle %r; keeping it in memory: %s",
            key,
            exc,
            exc_info=None if logged else exc,  # fb logged background errors with their trace
        )

    # -- lifetime --------------------------------------------------------------------------

    def finished(self) -> None:
        """Wait until fb's background work (write-backs, deletes) has ended.

        Raises:
            Exception: the background errors collected since the last call that this buffer
                did not handle itself (encode errors are handled: those values stay in
                memory); several as an `ExceptionGroup`.
        """
        try:
            self._store.finished()
        except Exception as exc:
            others = _unhandled(exc)
        else:
            return
        if len(others) == 1:
            raise others[0]
        if others:
            raise ExceptionGroup(f"{len(others)} background errors in {self!r}", others)

    def close(self) -> None:
        """Close the pool and its store, delete every blob and the session directory.

        Idempotent. Background errors collected by the store were logged when they
        happened (and encode errors handled); closing logs how many there were.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles.values())
            self._handles.clear()
            self._owners.clear()
            self._sizes.clear()
            self._unspillable.clear()
            self._failed_early.clear()
        # An evict() in progress finishes first: it must not find the store closed mid-way.
        with self._evict_lock:
            for handle in handles:
                handle.close()
            try:
                self._pool.close()
                self._store.close()
            except Exception as exc:
                others = _unhandled(exc)
                if others:
                    _log.warning(
                        "fb: %d background error(s) during the life of %r (logged as they "
                        "happened); the last: %s",
                        len(others),
                        self,
                        others[-1],
                    )
            finally:
                self._remove_root()

    def _remove_root(self) -> None:
        try:
            if self._root.is_local:
                shutil.rmtree(self._root.root)
            else:
                self._root.fs.rm(self._root.root, recursive=True)
        except FileNotFoundError:
            return
        except Exception:
            _log.warning("fb: cannot remove %s", self._root.url, exc_info=True)

    def __enter__(self) -> FbSpillBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _unhandled(exc: Exception) -> list[Exception]:
    """The errors of ``exc`` (one, or a group) other than the encode errors handled here."""
    errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
    return [error for error in errors if not isinstance(error, CodecError)]
