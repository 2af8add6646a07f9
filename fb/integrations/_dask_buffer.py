"""FbSpillBuffer: a Dask worker's data mapping whose task results live in an FBPool."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, MutableMapping, Set
from typing import Any, cast
from uuid import UUID

import distributed.spill  # noqa: F401 - installs the rate limits of its logger, used here
from dask.typing import Key
from distributed.metrics import context_meter
from distributed.sizeof import safe_sizeof

from .. import BackingStore, Fb, FBPool, PoolStatistics, _janitor
from .._keywords import check_keywords
from .._open import OBJECT_STORE_WORKERS
from .._pool import _check_budget
from .._store import DEFAULT_MAX_WORKERS
from ..backends import FBStore, PreparedPath
from ..exceptions import CodecError, HandleClosedError
from ..typing import Codec
from ._dask_metrics import SpillMetrics, metered_io
from ._dask_spilling import Spilling
from ._dask_views import KeyView, SpilledSize

__all__ = ["DEFAULT_PENDING_SHARE", "FbSpillBuffer"]

# distributed's own spill logger: what worker logs show and what Dask users watch. It
# rate-limits "Spill to disk failed" (the memory monitor may call evict() ten times a
# second while storage is failing).
_log = logging.getLogger("distributed.spill")

# fb's janitor thread (finalizers hand it their clean-up) lives as long as the process, a
# daemon. Starting it when the integration is imported, rather than when the first buffer
# opens, makes it older than any test or worker that the integration is used in:
# distributed's thread-leak check (``distributed.utils_test.check_thread_leak``) only
# reports threads started while the checked code ran.
_janitor.start()

DEFAULT_PENDING_SHARE = 4
"""By default a quarter of ``max_bytes`` may wait for write-back; the rest stays resident."""


class FbSpillBuffer(Spilling, MutableMapping[Key, object]):
    """A Dask worker's ``data``: each task result is kept behind an `Fb` in an `FBPool`.

    Results beyond the budget (measured with Dask's ``sizeof``) are written to storage in
    the background and dropped from memory once written; reading a spilled key loads it
    back. The mapping also implements distributed's manual-eviction interface (``fast`` and
    `evict`), so the worker's memory monitor can spill more under memory pressure.

    ``max_bytes`` bounds everything the buffer holds: values resident in the pool (at most
    ``max_bytes - max_pending_bytes``) plus values waiting to be written (at most
    ``max_pending_bytes``; storing a new result and reading a spilled one both wait while
    more wait, except while storage fails and writes are being retried: then values stay
    in memory, as with ``SpillBuffer``, under distributed's memory monitor). The documented
    slack on top is the value in flight of each thread that stores or reads one (while
    being decoded, its blob as well). A value larger than the pool's share of the budget is written
    straight to storage, alone: the other values stay in memory.

    Reading a spilled key whose value user code still references (a weak reference is kept
    for every value that supports one) returns that same object, without I/O.

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
        codec: a codec or codec name (default ``"dask"``: distributed's own serialization,
            see `fb.codecs.DaskCodec`).
        max_workers: fb's background threads (default 4 on local disk, 16 on object stores).
        max_pending_bytes: the part of ``max_bytes`` that values waiting for write-back may
            take (default a quarter); storing a result or reading a spilled one waits while
            more is pending.
        secret_key: sign blobs with HMAC-SHA256 (see `fb.backends.FBStore`).
        storage_options: passed to fsspec, in one mapping (e.g.
            ``{"client_kwargs": {"endpoint_url": …}}``), as `fb.open_pool` takes them.

    An unknown keyword raises `TypeError` when the worker builds the buffer, suggesting the
    parameter it is close to (``max_byte`` → ``max_bytes``), or ``storage_options`` for what
    looks like a storage option.

    A value that cannot be encoded (a pickle error) stays in memory outside the pool, is
    logged once, and stays readable, as distributed's ``SpillBuffer`` does with an older
    key that fails to pickle; unlike it, a value larger than the budget that fails to
    pickle is kept too, instead of failing its task. Failures are logged to distributed's
    ``distributed.spill`` logger ("Failed to pickle …", "Spill to disk failed …").

    Spilling shows in Dask's metrics under distributed's labels: reads of spilled keys
    (``disk-read``) and manual evictions (``disk-write``, under ``memory-monitor``) are
    reported to the context meter of the thread that does them, and `cumulative_metrics`
    (the worker's Prometheus ``spill_*`` counters) counts every write, including fb's
    background write-backs.

    Notes:
        Thread-safe: the worker's event loop, its task threads and fb's threads may use it
        at once (one lock around the key → handle dict, never held across I/O).
        `__getitem__` of a spilled key and `evict` block on storage I/O; `__setitem__`
        blocks only for fb's backpressure; ``del``, ``in``, ``len`` and iteration never do
        I/O. Values returned by `__getitem__` are plain references: the pool may evict the
        item while Dask still holds the value (a later read then returns the same object).
    """

    @check_keywords
    def __init__(
        self,
        worker_local_directory: str | None = None,
        *,
        max_bytes: int,
        url: str | os.PathLike[str] | None = None,
        codec: str | Codec[Any] = "dask",
        max_workers: int | None = None,
        max_pending_bytes: int | None = None,
        secret_key: bytes | str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        budget = _check_budget("max_bytes", max_bytes)
        if budget is None:
            raise TypeError("max_bytes must be an int, not None: the buffer needs a bound")
        if max_pending_bytes is None:
            pending = budget // DEFAULT_PENDING_SHARE
        else:
            pending = _check_budget("max_pending_bytes", max_pending_bytes) or 0
            if pending > budget:
                raise ValueError(
                    f"max_pending_bytes ({pending}) must not exceed max_bytes ({budget}): "
                    "values waiting for write-back count against max_bytes"
                )
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
                max_bytes=budget - pending,
                sizeof=safe_sizeof,
                max_pending_bytes=pending,
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
        # Encode errors seen before __setitem__ mapped the key, by blob key.
        self._failed_early: dict[UUID, BaseException] = {}
        # Values Dask may still hold after they left memory: read back, not loaded twice.
        self._live: weakref.WeakValueDictionary[Key, Any] = weakref.WeakValueDictionary()
        self._metrics = SpillMetrics()
        self._max_bytes = budget
        self._evict_lock = threading.Lock()
        self._manual_evictions = 0
        self._closed = False

    def __repr__(self) -> str:
        with self._lock:
            keys, unspillable = len(self._handles), len(self._unspillable)
        state = "closed" if self._closed else "open"
        return (
            f"<FbSpillBuffer {self._root.url} keys={keys} unspillable={unspillable} "
            f"max_bytes={self._max_bytes} {state}>"
        )

    # -- inspection ------------------------------------------------------------------------

    @property
    def pool(self) -> FBPool[Any]:
        """The pool that holds the results."""
        return self._pool

    @property
    def max_bytes(self) -> int:
        """The bound on what the buffer holds: resident values plus pending writes."""
        return self._max_bytes

    @property
    def max_pending_bytes(self) -> int:
        """The part of `max_bytes` that values waiting for write-back may take."""
        return self._pool.max_pending_bytes

    @property
    def cumulative_metrics(self) -> dict[tuple[str, str], float]:
        """Spill totals by ``(label, unit)``, as distributed's ``SpillBuffer`` keeps them.

        What the worker's Prometheus endpoint publishes as ``spill_bytes``,
        ``spill_count`` and ``spill_time`` by activity: ``disk-write`` (every write,
        background write-backs included, whose seconds include encoding), ``disk-read``,
        ``memory-read`` (reads of resident values), and what Dask's serialization reported
        in the buffer's own calls (``serialize``, ``deserialize``, ``compress``…).
        """
        return self._metrics.totals(self._pool.statistics())

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
        with self._metrics.capture():
            while True:
                with self._lock:
                    handle = self._handles.get(key)
                    if handle is None:
                        if key in self._unspillable:
                            return self._unspillable[key]
                        raise KeyError(key)
                    live = self._live.get(key)
                    size = self._sizes.get(key, 0)
                try:
                    return self._read(key, handle, live, size)
                except HandleClosedError:
                    # Replaced, deleted or moved out (evict, a pickle error) meanwhile.
                    continue

    def _read(self, key: Key, handle: Fb[Any], live: object, size: int) -> object:
        """Return ``key``'s value: from the pool's memory, the live object, or storage."""
        guard = handle.try_load()
        if guard is not None:
            with guard as value:
                context_meter.digest_metric("memory-read", 1, "count")
                context_meter.digest_metric("memory-read", size, "bytes")
                return value
        if live is not None:
            return live  # spilled, but still referenced elsewhere: no second copy
        if not handle.resident:
            # A read makes room by pushing others out: it waits while too many are pending
            # (as inserts do), so what waits for write-back stays within its share.
            self._wait_for_writes()
        with metered_io("disk-read") as moved:
            spilled = not handle.resident
            with handle.load() as value:
                pass
            if spilled:
                moved.append(handle.stored_nbytes or size)
        with self._lock:
            if self._handles.get(key) is handle:
                self._remember(key, value)
        return value

    def _wait_for_writes(self) -> None:
        """Wait while more than ``max_pending_bytes`` wait for write-back.

        The pool's own backpressure, which ``insert`` waits for too (counted in
        ``insert_waits``).
        """
        pool = self._pool
        while True:
            with pool._lock:
                if pool._failed:
                    # Storage fails (a full disk): the retried writes may take long to
                    # drain, and a worker whose reads and stores hang cannot even pause.
                    # Memory grows instead, which distributed's memory monitor watches.
                    return
                waiter = pool._backpressure()
            if waiter is None:
                return
            waiter.result()

    def _remember(self, key: Key, value: object) -> None:
        """Under the lock: keep a weak reference to ``value``, if it takes one."""
        try:
            self._live[key] = value
        except TypeError:
            self._live.pop(key, None)

    def __setitem__(self, key: Key, value: object) -> None:
        size = safe_sizeof(value)
        # Outside the lock: it may wait for backpressure, by the rule reads follow too.
        self._wait_for_writes()
        handle = self._pool._insert(value)
        with self._lock:
            old = self._handles.get(key)
            self._handles[key] = handle
            self._owners[handle.key] = key
            if old is not None:
                self._owners.pop(old.key, None)
            self._sizes[key] = size
            self._unspillable.pop(key, None)
            self._remember(key, value)
            failed = self._failed_early.pop(handle.key, None)
        if old is not None:
            old.close()
        if failed is not None:
            self._move_out(key, handle, failed)

    def __delitem__(self, key: Key) -> None:
        with self._lock:
            handle = self._handles.pop(key, None)
            if handle is None:
                del self._unspillable[key]  # raises KeyError for an unknown key
            else:
                self._owners.pop(handle.key, None)
            self._sizes.pop(key, None)
            self._live.pop(key, None)
        if handle is not None:
            handle.close()  # no I/O: the blob, if any, is deleted in the background

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
            self._live.clear()
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
