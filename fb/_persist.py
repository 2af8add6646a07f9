"""Durable locations: TrackedPath, key parsing, and the save protocol."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from .backends import PreparedPath
from .exceptions import InvalidKeyError, NotPicklableError

if TYPE_CHECKING:
    from ._handle import Fb
    from ._store import BackingStore

__all__ = ["TrackedPath", "as_location", "asave", "check_tracked", "parse_key", "save"]

R = TypeVar("R")

_KEY = re.compile(r"^[0-9a-f]{32}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def parse_key(key: object) -> UUID:
    """Return ``key`` as a UUID; accepts a `uuid.UUID` or its 32-hex (or hyphenated) string.

    Raises:
        TypeError: ``key`` is neither a UUID nor a string.
        InvalidKeyError: a string that is not a key (e.g. a path); nothing is touched.
    """
    if isinstance(key, UUID):
        return key
    if not isinstance(key, str):
        raise TypeError(f"a key is a uuid.UUID or a 32-hex string, not {type(key).__name__}")
    lowered = key.lower()
    if not _KEY.fullmatch(lowered):
        raise InvalidKeyError(f"not a key: {key!r} (expected 32 hexadecimal digits)")
    return UUID(lowered)


def check_tracked(tracked: object, store: BackingStore[Any]) -> TrackedPath:
    """Return ``tracked`` if it is a `TrackedPath` of ``store``.

    Raises:
        TypeError: ``tracked`` is not a TrackedPath (a path, say).
        ValueError: another store tracks it.
    """
    if not isinstance(tracked, TrackedPath):
        raise TypeError(f"a TrackedPath is needed (from store.track_path), not {tracked!r}")
    tracked._check_store(store)
    return tracked


def as_location(location: PreparedPath | str | os.PathLike[str]) -> PreparedPath:
    """Return ``location`` as a `PreparedPath`."""
    if isinstance(location, PreparedPath):
        return location
    return PreparedPath(location)


class TrackedPath:
    """A durable location whose keys a `BackingStore` knows: where items are persisted.

    Made by `BackingStore.track_path`. It records the keys found at the location and those
    persisted or deleted through its store since, and the files and directories that the next
    `BackingStore.fsync` must make durable.

    Attributes:
        path: the location.
        unknown: names found at the location that are not fb blobs (left untouched).

    Notes:
        Thread-safe. Reading keys never does I/O.
    """

    __slots__ = ("_keys", "_lock", "_placed", "_store", "_unsynced", "path", "unknown")

    def __init__(
        self,
        store: BackingStore[Any],
        path: PreparedPath,
        keys: Iterable[UUID],
        unknown: Iterable[str],
    ) -> None:
        self._store = store
        self.path = path
        self.unknown: tuple[str, ...] = tuple(unknown)
        self._keys: set[UUID] = set(keys)
        # Keys placed through this store since tracking began: their files are in
        # _unsynced until the next fsync. A key found only by a scan may have been left
        # unsynced by a process that died, so persisting it again syncs it too.
        self._placed: set[UUID] = set()
        self._lock = threading.Lock()
        self._unsynced: set[str] = set()

    def __repr__(self) -> str:
        return f"<TrackedPath {self.path.url} keys={len(self._keys)} unknown={len(self.unknown)}>"

    def __reduce__(self) -> Any:
        raise NotPicklableError(
            f"a TrackedPath cannot be pickled ({self!r}): it belongs to a store of this "
            "process. Pickle its location (tracked.path, a PreparedPath) and call "
            "store.track_path(path) in the other process"
        )

    @property
    def store(self) -> BackingStore[Any]:
        """The store that tracks this location."""
        return self._store

    def keys(self) -> frozenset[UUID]:
        """Return the keys persisted at the location (as far as this store knows)."""
        with self._lock:
            return frozenset(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[UUID]:
        return iter(self.keys())

    @property
    def unsynced(self) -> int:
        """How many paths wait for the next `BackingStore.fsync`."""
        return len(self._unsynced)

    def rescan(self) -> frozenset[UUID]:
        """Scan the location again (one listing) and return its keys."""
        keys, unknown = self._store.strategy.scan(self.path)
        with self._lock:
            self._keys = set(keys)
            self.unknown = tuple(unknown)
            return frozenset(self._keys)

    # -- bookkeeping for the store ---------------------------------------------------------

    def _check_store(self, store: BackingStore[Any]) -> None:
        if store is not self._store:
            raise ValueError(f"{self!r} is tracked by another store")

    def _added(self, key: UUID, paths: Iterable[str], *, placed: bool = True) -> None:
        with self._lock:
            self._keys.add(key)
            if placed:
                self._placed.add(key)
            self._unsynced.update(paths)

    def _is_placed(self, key: UUID) -> bool:
        return key in self._placed

    def _removed(self, key: UUID, paths: Iterable[str]) -> None:
        with self._lock:
            self._keys.discard(key)
            self._placed.discard(key)
            self._unsynced.update(paths)

    def _take_unsynced(self) -> set[str]:
        with self._lock:
            paths, self._unsynced = self._unsynced, set()
            return paths

    def _return_unsynced(self, paths: set[str]) -> None:
        with self._lock:
            self._unsynced |= paths


def save(
    items: Iterable[Fb[Any]],
    tracked: TrackedPath,
    commit: Callable[[list[UUID]], R],
    *,
    max_concurrency: int = 8,
) -> R:
    """Save exactly ``items`` to ``tracked``: the crate's save protocol.

    1. persist every item (at most ``max_concurrency`` at once);
    2. `BackingStore.fsync` the location;
    3. call ``commit(keys)`` with the persisted keys, in the order of ``items`` — the caller's
       atomic commit, e.g. replacing a manifest file that lists them;
    4. delete every key at the location that is not in this save, and fsync again.

    An error before ``commit`` returns deletes nothing: the previous save stays whole.

    Returns:
        What ``commit`` returned.
    """
    handles = list(items)
    if not isinstance(tracked, TrackedPath):
        raise TypeError(f"a TrackedPath is needed (from store.track_path), not {tracked!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency}")
    store = tracked.store
    if handles:
        # A local pool of threads: persisting may wait for background writes, which must
        # never happen on the store's own workers.
        with ThreadPoolExecutor(min(max_concurrency, len(handles)), "fb-save") as pool:
            keys = list(pool.map(lambda handle: handle.persist(tracked), handles))
    else:
        keys = []
    store.fsync(tracked)
    result = commit(keys)
    keep = set(keys)
    for key in tracked.keys() - keep:
        store.delete_persisted(tracked, key)
    store.fsync(tracked)
    return result


async def asave(
    items: Iterable[Fb[Any]],
    tracked: TrackedPath,
    commit: Callable[[list[UUID]], R],
    *,
    max_concurrency: int = 8,
) -> R:
    """Async twin of `save` (``commit`` is called from a worker thread)."""
    return await asyncio.to_thread(
        save, list(items), tracked, commit, max_concurrency=max_concurrency
    )
