"""`Shelf`: a named, persistent cache of large objects on local disk or an object store."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from types import TracebackType
from typing import Any, TypeVar

from ._entry import MISSING
from ._guards import ReadGuard
from ._handle import Fb
from ._keywords import check_keywords, storage_options_dict
from ._persist import TrackedPath
from ._pool import FBPool
from ._shelf_async import _MISSING, RETRIES, AsyncTwins
from ._shelf_handles import LiveHandles, pinned
from ._shelf_index import Record, check_name
from ._shelf_layout import BLOBS_DIR, claim_shelf, open_cache, open_index
from ._shelf_store import ShelfStore
from ._store import DEFAULT_MAX_WORKERS, BackingStore
from .backends import PreparedPath
from .codecs import get_codec
from .exceptions import BlobNotFoundError, HandleClosedError, StoreClosedError
from .typing import Codec

__all__ = ["Shelf"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_BYTES = 256 * 2**20
_RESCAN_SETS = 64
"""With size_limit, a set rescans the index at least this often (others' sets count too)."""
DEFAULT_CACHE_BYTES = 2**30


def _check_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")
    return float(value)


class Shelf(LiveHandles[T], AsyncTwins[T], MutableMapping[str, T]):
    """A persistent mapping of names to large values: an `FBPool` before a durable location.

    ``shelf[name] = value`` puts the value in the pool (memory, within its budgets) and makes
    it durable at once through fb's persist path: one blob per value under
    ``<location>/blobs`` (a hard link from the cache on local disk, one upload on an object
    store), then a record that maps the name to the blob: a row of ``<location>/names.db``
    (SQLite) on local disk, a small file ``<location>/names/<sha256 of name>`` elsewhere.
    ``shelf[name]`` answers from memory when the pool holds the name's current value, and
    otherwise loads it. Another process (or host) opening the same location sees
    every name set before; the last writer of a name wins.

    Args:
        location: a local directory (created 0700) or an fsspec URL (``s3://bucket/prefix``).
        codec: a codec or codec name, as for `fb.open_pool`.
        max_items: item budget of the in-memory tier.
        max_bytes: byte budget of the in-memory tier (default 256 MiB when no budget is
            given).
        sizeof: how to measure a value for ``max_bytes``.
        size_limit: bytes of blobs on storage; a set that goes past it removes the least
            recently used names (never one a live guard of this shelf holds). A set lists
            the index when this shelf's estimate passes the limit, and every 64 sets to
            count what other processes stored.
        expire: default lifetime of a set, in seconds (None: forever).
        secret_key: sign blobs with HMAC-SHA256 and refuse unsigned or altered ones.
        storage_options: fsspec options for a URL ``location``, in one mapping.
        max_workers: background threads of the store.
        cache_bytes: bytes of blobs this shelf keeps in its local cache directory for names
            read or set before but no longer in memory (default 1 GiB): off local disk a
            download saved; on it a hard link of each blob this shelf set (no space, unless
            the name is replaced elsewhere), while blobs it only read are read where they
            are.
        refresh: seconds a value this shelf read or set is served from memory without
            reading its name's record again (default 0: every get reads it, so a value
            another process set is seen at once). On an object store a record read is a
            request: a few seconds here make repeated gets of hot names free.
        index: where a new shelf keeps its names: ``"auto"`` (default: one SQLite database,
            ``names.db``, on a local filesystem; one record file per name on a network
            filesystem and on object stores), ``"sqlite"`` or ``"files"``. An existing
            shelf keeps what it was made with; naming the other kind is a ValueError.

    Notes:
        Thread-safe: any method may be called from several threads. Every method may
        block on storage (even a get of a value in memory checks the name's record, so that
        values set by other processes are seen: one indexed SQLite lookup on local disk, a
        ``stat`` with record files (which reads the record again only when it changed), one
        GET on an object store, unless ``refresh`` spares it); the ``a``-twins never block
        the event loop. Close the shelf (or use ``with``) to release
        its cache directory; a shelf is not shared with a forked child (open one there).
    """

    @check_keywords
    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        codec: str | Codec[Any] = "pickle",
        max_items: int | None = None,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] | None = None,
        size_limit: int | None = None,
        expire: float | None = None,
        secret_key: bytes | str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        refresh: float = 0.0,
        index: str = "auto",
    ) -> None:
        if size_limit is not None and (
            isinstance(size_limit, bool) or not isinstance(size_limit, int) or size_limit < 0
        ):
            raise ValueError(f"size_limit must be a non-negative int or None, not {size_limit!r}")
        self.size_limit = size_limit
        if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh < 0:
            raise ValueError(f"refresh must be a non-negative number of seconds, not {refresh!r}")
        self.refresh = float(refresh)
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError(f"cache_bytes must be a non-negative int, not {cache_bytes!r}")
        self.expire = _check_seconds("expire", expire)
        options = storage_options_dict(storage_options, "Shelf()")
        target = os.fspath(location)
        if "://" not in target:
            target = os.path.expanduser(target)
        self.location = PreparedPath(target, storage_options=options)
        kind = claim_shelf(self.location, index)
        self._index = open_index(self.location, kind)
        try:
            self._index.sweep_temps()
            strategy, self._cache_dir = open_cache(self.location, get_codec(codec), secret_key)
        except BaseException:
            self._index.close()
            raise
        # A ShelfStore's own: it knows its blobs by identity, without comparing paths.
        if isinstance(strategy, ShelfStore):
            blobs = strategy.blobs
        else:
            blobs = PreparedPath(f"{self.location.root}/{BLOBS_DIR}", fs=self.location.fs)
        try:
            self.store: BackingStore[T] = BackingStore(
                strategy, max_workers=max_workers or DEFAULT_MAX_WORKERS
            )
            if max_items is None and max_bytes is None:
                max_bytes = DEFAULT_MAX_BYTES
            self.pool: FBPool[T] = FBPool(
                self.store,
                max_items=max_items,
                max_bytes=max_bytes,
                sizeof=sizeof,
                write="on_evict",
            )
            # Not store.track_path: its scan lists every blob (one request per thousand on
            # S3) and the shelf never asks the TrackedPath which keys exist: a get registers
            # the key its record names, which checks the blob itself.
            self._tracked = TrackedPath(self.store, blobs, (), ())
        except BaseException:
            strategy.close()
            self._index.close()
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            raise
        self._lock = threading.Lock()
        self._live: dict[str, Fb[T]] = {}
        # Reads of this process, for the LRU order of `cull` where storage keeps no
        # access time (object stores).
        self._accessed: dict[str, float] = {}
        self._closed = False
        self.cache_bytes = cache_bytes
        self._sizes: dict[str, int] = {}
        # When this shelf last read (or wrote) each name's record, and when it expires.
        self._checked: dict[str, tuple[float, float | None]] = {}
        self._idle_bytes = 0
        # Bytes on storage as of the last scan plus this shelf's sets since: a set scans
        # the index (to cull) only when this passes size_limit, or every _RESCAN_SETS sets
        # to see what other processes stored.
        self._estimate: int | None = None
        self._sets_since_scan = 0
        self._cull_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"live={len(self._live)}"
        return f"<Shelf {self.location.url} {state} size_limit={self.size_limit}>"

    # -- the mapping -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        check_name(name)
        handle, value = self._lookup(name)
        if value is not MISSING:
            return value  # type: ignore[no-any-return]  # loaded with its new handle
        guard = self._guard(name, handle)
        try:
            return guard.value
        finally:
            guard.release()

    def __setitem__(self, name: str, value: T) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        check_name(name)
        self._check_open()
        record = self._index.read(name)
        if record is None:
            raise KeyError(name)
        self._index.remove(name)
        self._forget(name)
        self.store.delete_persisted(self._tracked, record.key)
        if record.expired(time.time()):
            raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            check_name(name)
        except ValueError:
            return False  # no such name can be set, so it is not here (as for a dict)
        self._check_open()
        record = self._index.read(name)
        return record is not None and not record.expired(time.time())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> list[str]:
        """Return every name that has not expired (one listing of the index)."""
        self._check_open()
        now = time.time()
        return [r.name for r in self._index.scan() if not r.expired(now)]

    def set(self, name: str, value: T, *, expire: float | None = _MISSING) -> None:
        """Store ``value`` under ``name``, durably, replacing what the name held.

        Args:
            name: the name (any non-empty string; never used as a path).
            value: the value; it stays in memory within the pool's budgets.
            expire: seconds until the name expires (default: the shelf's ``expire``).

        Raises:
            TypeError: ``name`` is not a string.
            InvalidKeyError: ``name`` is empty or too long.
            CodecError: the value cannot be encoded; the name keeps its old value.
        """
        check_name(name)
        self._check_open()
        seconds = self.expire if expire is _MISSING else _check_seconds("expire", expire)
        handle = self.pool.insert(value)
        try:
            key = handle.persist(self._tracked)
            old = self._index.read(name)
            now = time.time()
            record = Record(
                name=name,
                key=key,
                size=handle.stored_nbytes or 0,
                created=now,
                expire=None if seconds is None else now + seconds,
                accessed=now,
            )
            self._index.write(record)
        except BaseException:
            handle.close()
            raise
        with self._lock:
            previous = self._live.get(name)
            self._live[name] = handle
            self._accessed[name] = now
            self._sizes[name] = record.size
            self._checked[name] = (time.monotonic(), record.expire)
            self._idle_bytes += record.size
        if previous is not None:
            previous.close()
        if old is not None and old.key != key:
            # Handles registered from the old blob (here or elsewhere) use their own copy
            # in their cache, so the blob can go now.
            self.store.delete_persisted(self._tracked, old.key)
        if self.size_limit is not None:
            with self._lock:
                if self._estimate is not None:
                    self._estimate += record.size - (old.size if old is not None else 0)
                self._sets_since_scan += 1
                due = (
                    self._estimate is None
                    or self._estimate > self.size_limit
                    or self._sets_since_scan >= _RESCAN_SETS
                )
            if due:
                self.cull(keep=name)
        self._prune()

    def load(self, name: str) -> ReadGuard[T]:
        """Return a read guard on ``name``'s value: pinned in memory while held.

        A name held by a guard is never removed by `cull`. Use it as ``with shelf.load(name)
        as value:``.

        Raises:
            KeyError: no such name (or it expired).
        """
        check_name(name)
        return self._guard(name, self._lookup(name)[0])

    def _guard(self, name: str, handle: Fb[T]) -> ReadGuard[T]:
        """A read guard on ``name``'s value, from ``handle`` (just looked up) or a later one."""
        for _ in range(RETRIES):
            try:
                return handle.load()  # a handle that came loaded: a hit
            except HandleClosedError:
                pass  # replaced by another thread meanwhile: look it up again
            except BlobNotFoundError:
                # Replaced or deleted by another process since its record was read: read
                # the record again (a get sees the new value, or raises KeyError).
                self._stale(name, handle)
            handle = self._lookup(name)[0]
        raise KeyError(name)

    # -- storage ---------------------------------------------------------------------------

    def sync(self) -> None:
        """The durability barrier: every set and delete so far survives a power loss after it.

        Real on local disk (files and directories are fsynced); on an object store each
        request is durable when it returns, so this waits for nothing more.
        """
        self._check_open()
        self.store.fsync(self._tracked)
        self._index.sync()

    def cull(self, *, keep: str | None = None) -> int:
        """Remove expired names, then least recently used ones past ``size_limit``.

        A name held by a live guard of this shelf, and ``keep``, are never removed.

        Returns:
            How many names were removed.
        """
        self._check_open()
        with self._cull_lock:  # two culls at once would each remove what the limit asks
            return self._cull(keep)

    def _cull(self, keep: str | None) -> int:
        now = time.time()
        records = self._index.scan()
        with self._lock:
            held = {n for n, h in self._live.items() if pinned(h)}
            local = dict(self._accessed)
        removed = 0
        alive = []
        for record in records:
            if record.expired(now) and record.name not in held:
                removed += self._remove(record)
            else:
                alive.append(record)
        total = sum(record.size for record in alive)
        if self.size_limit is not None and total > self.size_limit:
            alive.sort(key=lambda r: max(r.accessed, local.get(r.name, 0.0)))
            for record in alive:
                if total <= self.size_limit:
                    break
                if record.name in held or record.name == keep:
                    continue
                if self._remove(record):
                    removed += 1
                    total -= record.size
        with self._lock:
            self._estimate = total
            self._sets_since_scan = 0
        return removed

    def _remove(self, record: Record) -> int:
        if not self._index.remove_if(record.name, record.key):
            return 0
        self._forget(record.name, record.key)
        self.store.delete_persisted(self._tracked, record.key)
        return 1

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    def close(self) -> None:
        """Release memory and this shelf's cache; what was set stays. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._live.clear()
        try:
            self.pool.close()
            self.store.close()
        finally:
            self._index.close()
            # A local cache directory stays, empty of blobs and unlocked, for the next shelf
            # opened here to take over (its shard directories are made already).
            if not self.location.is_local:
                shutil.rmtree(self._cache_dir, ignore_errors=True)

    def __enter__(self) -> Shelf[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Shelf[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- memoize ---------------------------------------------------------------------------

    def memoize(
        self,
        *,
        version: str | None = None,
        ignore: Iterable[str] = (),
        expire: float | None = _MISSING,
    ) -> Callable[[F], F]:
        """Return a decorator that keeps a function's results on this shelf.

        Results are stored under ``memoize/<module>.<qualname>[@version]/<hash>``: the hash
        is taken over the arguments bound to the signature (positional and keyword calls of
        one call are one entry; defaults are filled in), leaving out those named in
        ``ignore``. Concurrent calls with equal arguments compute once per process. Works on
        plain and ``async def`` functions.

        Args:
            version: part of the namespace: change it when the function's results change.
            ignore: parameter names that do not affect the result (a logger, a client).
            expire: lifetime of each result in seconds (default: the shelf's).
        """
        from ._memoize import memoize

        return memoize(self, version=version, ignore=tuple(ignore), expire=expire)

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")
