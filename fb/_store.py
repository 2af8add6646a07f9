"""BackingStore: its public surface, blob reference counts, lifecycle and durable locations.

The store's methods live here: submitting tasks, waiting for them (`finished`), closing,
counting references to each blob and deleting it when the last goes, and tracking, fsyncing
and deleting persisted blobs. The thread pools behind them, the count of running tasks, the
collection of background errors and the fork handling are in the `Workers` base class
(``_workers.py``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar
from uuid import UUID

import attrs

from . import _exit, _janitor
from ._stats import StoreStatistics
from ._workers import _STORES, _STRIPES, Workers
from .exceptions import NotPicklableError, StoreClosedError
from .typing import Strategy

if TYPE_CHECKING:
    from ._persist import TrackedPath
    from .backends import PreparedPath

__all__ = ["BackingStore"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

DEFAULT_MAX_WORKERS = 4


@attrs.define(eq=False)
class _Shared:
    """The part of a store's state its finalizer may look at (it must not hold the store)."""

    closed: bool = False
    live_blobs: int = 0
    pid: int = attrs.field(factory=os.getpid)
    """The process that made the store: a forked child has nothing to warn about it."""


def _warn_unclosed(shared: _Shared, name: str) -> None:
    if not shared.closed and shared.live_blobs and shared.pid == os.getpid():
        warnings.warn(
            f"{name} was garbage-collected without close() while it still referenced "
            f"{shared.live_blobs} blob(s); they stay on storage until the next store sweeps "
            "the directory",
            ResourceWarning,
            stacklevel=1,
        )


@attrs.define(eq=False, repr=False, init=False)
class BackingStore(Workers, Generic[T]):
    """Runs a `Strategy`'s blocking I/O on worker threads and owns every blob's lifetime.

    A store counts references to each blob key; when the last handle referencing a key goes,
    a background task deletes the blob. Background failures (a write-back that failed, a
    delete that failed) are collected; `finished` raises them and `on_error` (if given) sees
    each one as it happens.

    Args:
        strategy: the backend that stores and loads values (e.g. `fb.backends.FBStore`).
        max_workers: worker threads for background work (write-back, deletes, async loads).
        on_error: called with each background exception, from a worker thread.

    Notes:
        Thread-safe. `finished`, `close` and the context managers block; their ``a``-twins
        never block the event loop. Several pools may share one store.
    """

    strategy: Strategy[T]
    max_workers: int
    on_error: Callable[[BaseException], object] | None
    _lock: threading.Lock
    _idle: threading.Condition
    _refs: dict[UUID, int]
    _tasks: int
    _deletes: int
    _inherited: frozenset[UUID]
    _idle_waiters: list[Future[None]]
    _errors: list[BaseException]
    _executor: ThreadPoolExecutor | None
    _spawner: ThreadPoolExecutor | None
    _stripes: tuple[threading.Lock, ...]
    _pid: int
    _shared: _Shared

    def __init__(
        self,
        strategy: Strategy[T],
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, not {max_workers!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, not {on_error!r}")
        if not isinstance(strategy, Strategy):
            raise TypeError(
                f"strategy must have store(), load(), delete() and close(); got {strategy!r}"
            )
        self.strategy = strategy
        self.max_workers = max_workers
        self.on_error = on_error
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._refs = {}
        self._tasks = 0
        self._deletes = 0
        self._inherited = frozenset()
        self._idle_waiters = []
        self._errors = []
        self._executor = None
        self._spawner = None
        self._stripes = tuple(threading.Lock() for _ in range(_STRIPES))
        self._pid = os.getpid()
        self._shared = _Shared()
        weakref.finalize(self, _warn_unclosed, self._shared, f"BackingStore({strategy!r})")
        _janitor.start()
        _STORES.add(self)
        _exit.track(self)  # closed at interpreter exit if the program forgets to

    def __repr__(self) -> str:
        state = "closed" if self._shared.closed else "open"
        return (
            f"<BackingStore {self.strategy!r} blobs={len(self._refs)} "
            f"pending={self._tasks} errors={len(self._errors)} {state}>"
        )

    def __reduce__(self) -> Any:
        raise NotPicklableError(
            f"a BackingStore cannot be pickled ({self!r}): it owns worker threads, locks "
            "and the blobs of this process. Open a store of its own in the other process "
            "(fb.open_pool or BackingStore) and register the persisted items there"
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._shared.closed

    def _check_open(self) -> None:
        """Raise `StoreClosedError` if the store was closed."""
        if self._shared.closed:
            raise StoreClosedError(f"{self!r} is closed")

    def finished(self, timeout: float | None = None) -> None:
        """Wait until every background task has ended, then raise what failed.

        Each error collected since the last call is raised once: a single error as itself,
        several as an `ExceptionGroup`. Draining is not shutting down: the store stays usable.

        Args:
            timeout: give up after this many seconds (None: wait as long as it takes).

        Raises:
            TimeoutError: work was still running when ``timeout`` ran out (nothing raised
                or forgotten: call again to keep waiting).
            Exception: the background error(s) collected since the last call.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            _janitor.flush().result(timeout)
        except FutureTimeoutError:
            raise TimeoutError(f"{self!r}: background work still running") from None
        with self._idle:
            while self._tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{self!r}: background work still running")
                self._idle.wait(left)
        self._raise_errors()

    async def afinished(self) -> None:
        """Async twin of `finished`: waits without blocking the event loop."""
        await asyncio.wrap_future(_janitor.flush())
        while True:
            with self._lock:
                if not self._tasks:
                    break
                waiter: Future[None] = Future()
                self._idle_waiters.append(waiter)
            await asyncio.wrap_future(waiter)
        self._raise_errors()

    def close(self) -> None:
        """Drain background work, delete the blobs still referenced, release the backend.

        Idempotent. Handles of this store cannot load or write afterwards. Background errors
        collected before closing are raised, after the store is closed.
        """
        if self._shared.closed:
            return
        try:
            _janitor.flush().result()
            with self._idle:
                while self._tasks:
                    self._idle.wait()
                self._shared.closed = True
                leftover, self._refs = list(self._refs), {}
                self._shared.live_blobs = 0
            # Blobs of handles still alive are unreachable once the store is closed: the
            # cache tier is temporary, so they are removed now rather than left as litter.
            for key in leftover:
                if key in self._inherited:
                    continue
                try:
                    self.strategy.delete(key)
                except Exception as exc:
                    self._collect(exc)
            if self._pid == os.getpid():
                for executor in (self._spawner, self._executor):
                    if executor is not None:
                        executor.shutdown(wait=True)
            self._executor = self._spawner = None
        finally:
            self._shared.closed = True
            self.strategy.close()
        self._raise_errors()

    async def aclose(self) -> None:
        """Async twin of `close`."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> BackingStore[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> BackingStore[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- tasks -----------------------------------------------------------------------------

    def _submit_task(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Run ``fn`` on a worker thread; its outcome belongs to the returned future.

        ``fn`` must never wait for other background work (a worker waiting for a queued task
        can deadlock the pool); use `_spawn` for that. `finished` waits for it, but does not
        collect its error: the future's owner does.
        """
        return self._submit(self._get_executor, False, fn, *args, **kwargs)

    def _spawn(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Run ``fn``, which may wait for background work, on a thread outside the workers."""
        return self._submit(self._get_spawner, False, fn, *args, **kwargs)

    def _submit_background(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Future[R]:
        """Run ``fn`` on a worker thread; an exception it raises is collected for `finished`."""
        return self._submit(self._get_executor, True, fn, *args, **kwargs)

    def _report(self, exc: BaseException) -> None:
        """Collect ``exc`` as a background error (for `finished` and ``on_error``)."""
        self._collect(exc)

    @property
    def pending_errors(self) -> int:
        """How many background errors wait to be raised by `finished`."""
        return len(self._errors)

    @property
    def pending_tasks(self) -> int:
        """How many background tasks are queued or running."""
        return self._tasks

    # -- blob references -------------------------------------------------------------------

    def _add_ref(self, key: UUID) -> None:
        """Count one more handle referencing blob ``key`` (a fresh write or a register)."""
        with self._lock:
            self._refs[key] = self._refs.get(key, 0) + 1
            self._shared.live_blobs = len(self._refs)

    def _release(self, key: UUID) -> None:
        """Drop one reference to blob ``key``; delete the blob when none is left."""
        with self._lock:
            count = self._refs.get(key, 0) - 1
            if count > 0:
                self._refs[key] = count
                return
            self._refs.pop(key, None)
            self._shared.live_blobs = len(self._refs)
            if self._shared.closed:
                return  # close() deleted it already
        self._delete_blob(key)

    def _delete_blob(self, key: UUID) -> None:
        """Delete blob ``key`` in the background unless it is referenced again by then."""
        try:
            self._submit_background(self._delete, key)
        except StoreClosedError:
            return

    def _stripe(self, key: UUID) -> threading.Lock:
        return self._stripes[key.int % _STRIPES]

    def _delete(self, key: UUID) -> None:
        # The stripe lock orders this delete with a register of the same key: a key that
        # was registered again after its last release keeps its blob.
        with self._stripe(key):
            if key in self._refs or key in self._inherited:
                return
            self.strategy.delete(key)
        with self._lock:
            self._deletes += 1

    def statistics(self) -> StoreStatistics:
        """Return a frozen snapshot of the store's state."""
        with self._lock:
            return StoreStatistics(
                blobs=len(self._refs),
                pending_tasks=self._tasks,
                pending_errors=len(self._errors),
                deletes=self._deletes,
                max_workers=self.max_workers,
                closed=self._shared.closed,
            )

    def _retain_registered(self, key: UUID, location: PreparedPath) -> bool:
        """Reference blob ``key``, bringing it from ``location`` into the cache if needed.

        Two registrations of one key share one cache blob. Returns False if ``location``
        holds no blob ``key``.
        """
        self._check_open()
        with self._stripe(key):
            # Always ask the backend: the location must still hold the key, even when the
            # cache holds its blob already (the backend then places nothing).
            if not self.strategy.register(key, location):
                return False
            with self._lock:
                self._refs[key] = self._refs.get(key, 0) + 1
                self._shared.live_blobs = len(self._refs)
        return True

    def _refcount(self, key: UUID) -> int:
        """Return how many handles reference blob ``key``."""
        return self._refs.get(key, 0)

    def blob_keys(self) -> frozenset[UUID]:
        """Return the keys of every blob this store references."""
        with self._lock:
            return frozenset(self._refs)

    # -- durable locations -----------------------------------------------------------------

    def track_path(self, location: PreparedPath | str | os.PathLike[str]) -> TrackedPath:
        """Scan a durable location and return a `TrackedPath` that knows its keys.

        A path or URL on the same filesystem as the store's cache (the same protocol: a
        local path next to a local cache, any ``s3://`` URL next to an S3 cache) is reached
        through the store's own filesystem object, with its storage options (endpoint,
        credentials). A `PreparedPath` is used as it is, so a location that needs other
        options is given as ``PreparedPath(url, storage_options={...})``.

        Names at the location that fb does not own are never touched; they are logged and
        listed in `TrackedPath.unknown`.

        Raises:
            FileNotFoundError: the location does not exist.
            ForeignLocationError: the location is this store's cache directory.
        """
        from ._persist import TrackedPath
        from .backends import PreparedPath
        from .backends._prepared_path import location_like

        self._check_open()
        # The cache location of a backend that has one (FBStore's ``path``); a plugin
        # backend without it gets a location built from the URL alone.
        cache = getattr(self.strategy, "path", None)
        path = location_like(location, cache if isinstance(cache, PreparedPath) else None)
        keys, unknown = self.strategy.scan(path)
        return TrackedPath(self, path, keys, unknown)

    async def atrack_path(self, location: PreparedPath | str | os.PathLike[str]) -> TrackedPath:
        """Async twin of `track_path`."""
        return await asyncio.to_thread(self.track_path, location)

    def fsync(self, tracked: TrackedPath) -> None:
        """The durability barrier: fsync what was persisted to ``tracked`` since the last one.

        Each new file and each directory whose entries changed is fsynced; after this
        returns, those blobs survive a power loss.
        """
        from ._persist import check_tracked

        self._check_open()
        check_tracked(tracked, self)
        paths = tracked._take_unsynced()
        try:
            self.strategy.fsync(tracked.path, paths)
        except BaseException:
            tracked._return_unsynced(paths)
            raise

    async def afsync(self, tracked: TrackedPath) -> None:
        """Async twin of `fsync`."""
        await asyncio.to_thread(self.fsync, tracked)

    def delete_persisted(self, tracked: TrackedPath, key: UUID | str) -> None:
        """Delete the blob ``key`` from ``tracked`` (handles registered from it keep working)."""
        from ._persist import check_tracked, parse_key

        key = parse_key(key)
        self._check_open()
        check_tracked(tracked, self)
        paths = self.strategy.delete_persisted(key, tracked.path)
        tracked._removed(key, paths)

    async def adelete_persisted(self, tracked: TrackedPath, key: UUID | str) -> None:
        """Async twin of `delete_persisted`."""
        await asyncio.to_thread(self.delete_persisted, tracked, key)
