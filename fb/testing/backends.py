"""A conformance suite for storage backends: subclass it in your own tests.

Every built-in backend (local directory, ``memory://``, S3) passes it, and a plugin proves
itself with it. Subclass `BackendSuite` (the cache tier: store, load, delete, integrity) and
`PersistSuite` (durable locations: persist, register, scan, delete) in a module whose name
pytest collects, and give two fixtures::

    import uuid
    import pytest
    from fb.backends import PreparedPath
    from fb.testing.backends import BackendSuite, PersistSuite

    class TestMyFilesystem(BackendSuite, PersistSuite):
        @pytest.fixture(name="location")
        def fixture_location(self):
            url = f"myfs://bucket/{uuid.uuid4().hex}"
            return PreparedPath(url, storage_options={"token": "..."})

        @pytest.fixture(name="persist_location")
        def fixture_persist_location(self):
            url = f"myfs://bucket/{uuid.uuid4().hex}"
            return PreparedPath(url, storage_options={"token": "..."})

``location`` is a fresh, empty `PreparedPath` for a cache; ``persist_location`` a fresh,
empty one for durable storage (on filesystems with directories, the directory exists).
The suite builds an `fb.backends.FBStore` over ``location``; a backend that is a whole
`fb.typing.Strategy` of its own overrides ``make_strategy``, and, if its blobs are not files
at ``location.blob_path(key)`` (database rows, say), the raw-access hooks ``read_raw``,
``write_raw`` and ``blob_names``. Every test reaches storage through these hooks and the
`Strategy` methods only. The values come from hooks too (``make_codec``, ``sample_values``,
``small_value``, ``sized_value``, ``failing_value``), so a backend can be tested with its own
codec. Blobs must be in fb's blob format: write and check them with `fb.blobformat`.

`BackendSuite` and the sample values live in ``_backend_cache.py``; this module defines
`PersistSuite` and exports both.

This module needs pytest; fb itself does not.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fb import BackingStore, Fb, FBPool, TrackedPath, save
from fb.backends import PreparedPath
from fb.exceptions import BlobNotFoundError, ForeignLocationError

from ._backend_cache import BackendSuite, ExplodingValue, _Hooks, sample_values

__all__ = ["BackendSuite", "ExplodingValue", "PersistSuite", "sample_values"]


class PersistSuite(_Hooks):
    """Durable locations: persist, register, scan and delete persisted blobs.

    Needs the fixtures ``location`` (a fresh cache `PreparedPath`) and ``persist_location``
    (a fresh durable one). Mix it with `BackendSuite`, or use it alone with a
    ``persist_location`` on another filesystem to test a step of the persist ladder.
    """

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture(name="persist_store")
    def fixture_persist_store(self, location: PreparedPath) -> Iterator[BackingStore[Any]]:
        """A `BackingStore` over the strategy under test; closed afterwards."""
        store: BackingStore[Any] = BackingStore(
            self.make_strategy(location), max_workers=self.max_workers
        )
        yield store
        store.close()

    @pytest.fixture(name="persist_pool")
    def fixture_persist_pool(self, persist_store: BackingStore[Any]) -> Iterator[FBPool[Any]]:
        """A pool that keeps two values in memory; closed afterwards."""
        pool: FBPool[Any] = FBPool(persist_store, max_items=2)
        yield pool
        pool.close()

    @pytest.fixture(name="tracked")
    def fixture_tracked(
        self, persist_store: BackingStore[Any], persist_location: PreparedPath
    ) -> TrackedPath:
        """``persist_location`` tracked by the store under test."""
        return persist_store.track_path(persist_location)

    def _drop(self, store: BackingStore[Any], handles: list[Fb[Any]]) -> None:
        for handle in handles:
            handle.close()
        store.finished()

    # -- persist and register --------------------------------------------------------------

    def test_persist_register_round_trip(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
    ) -> None:
        """Persisted values, dropped from the cache, come back equal through ``register``."""
        values = self.sample_values()
        handles = [persist_pool.insert(value) for value in values]
        keys = [handle.persist(tracked) for handle in handles]
        persist_store.fsync(tracked)
        assert keys == [handle.key for handle in handles]
        assert set(keys) <= tracked.keys()
        self._drop(persist_store, handles)
        for key, value in zip(keys, values, strict=True):
            with pytest.raises(BlobNotFoundError):
                persist_store.strategy.load(key)  # the cache copy went with its handle
            handle = persist_pool.register(tracked, key)
            assert handle is not None
            assert not handle.resident
            with handle.load() as loaded:
                assert loaded == value

    def test_register_is_lazy(
        self, persist_store: BackingStore[Any], persist_pool: FBPool[Any], tracked: TrackedPath
    ) -> None:
        """``register`` decodes nothing: the value is read on the first load."""
        original = persist_pool.insert(self.small_value(1))
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        handle = persist_pool.register(tracked, key.hex)
        assert handle is not None
        assert persist_pool.statistics().loads == 0
        with handle.load() as value:
            assert value == self.small_value(1)
        assert persist_pool.statistics().loads == 1

    def test_persist_is_idempotent(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """Persisting one item twice gives one blob, unchanged, under the same key."""
        backend = persist_store.strategy
        handle = persist_pool.insert(self.small_value(2))
        key = handle.persist(tracked)
        before = self.read_raw(backend, persist_location, key)
        assert handle.persist(tracked) == key
        persist_store.fsync(tracked)
        assert self.read_raw(backend, persist_location, key) == before
        assert len(self.blob_names(backend, persist_location, key)) == 1
        assert persist_store.track_path(persist_location).keys() == {key}

    def test_register_of_absent_key_returns_none(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """Registering a key the location does not hold gives None and creates nothing."""
        key = uuid.uuid4()
        assert persist_pool.register(tracked, key) is None
        assert persist_store.strategy.register(key, persist_location) is False
        with pytest.raises(BlobNotFoundError):
            persist_store.strategy.load(key)
        assert len(persist_pool) == 0

    def test_register_same_key_twice_shares_the_blob(
        self, persist_store: BackingStore[Any], persist_pool: FBPool[Any], tracked: TrackedPath
    ) -> None:
        """Two registrations of one key both load; closing one keeps the other working."""
        original = persist_pool.insert(self.small_value(3))
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        first = persist_pool.register(tracked, key)
        second = persist_pool.register(tracked, key)
        assert first is not None
        assert second is not None
        first.close()
        persist_store.finished()
        with second.load() as value:
            assert value == self.small_value(3)

    def test_persisted_items_outlive_their_store(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        location: PreparedPath,
        persist_location: PreparedPath,
    ) -> None:
        """A new store over the same cache registers what the closed one persisted."""
        handles = [persist_pool.insert(value) for value in self.sample_values()]
        values = {
            handle.persist(tracked): value
            for handle, value in zip(handles, self.sample_values(), strict=True)
        }
        persist_store.fsync(tracked)
        persist_pool.close()
        persist_store.close()
        with BackingStore(self.make_strategy(location)) as store:
            pool: FBPool[Any] = FBPool(store, max_items=1)
            later = store.track_path(persist_location)
            assert later.keys() == set(values)
            for key, value in values.items():
                handle = pool.register(later, key)
                assert handle is not None
                with handle.load() as loaded:
                    assert loaded == value
            pool.close()

    async def _async_round_trip(self, pool: FBPool[Any], tracked: TrackedPath) -> Any:
        key = await pool.insert(self.small_value(4)).apersist(tracked)
        await pool.store.afsync(tracked)
        handle = await pool.aregister(tracked, key)
        assert handle is not None
        async with handle.aload() as value:
            return value

    def test_async_persist_and_register(
        self, persist_pool: FBPool[Any], tracked: TrackedPath
    ) -> None:
        """``apersist``, ``afsync`` and ``aregister`` round-trip a value."""
        assert asyncio.run(self._async_round_trip(persist_pool, tracked)) == self.small_value(4)

    # -- delete and scan -------------------------------------------------------------------

    def test_delete_persisted(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """A deleted persisted blob is gone from the location; deleting again is fine."""
        original = persist_pool.insert(self.small_value(5))
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        persist_store.delete_persisted(tracked, key)
        persist_store.fsync(tracked)
        assert key not in tracked
        assert key not in tracked.rescan()
        assert persist_pool.register(tracked, key) is None
        assert self.blob_names(persist_store.strategy, persist_location, key) == []
        persist_store.delete_persisted(tracked, key)

    def test_registered_handle_outlives_delete_persisted(
        self, persist_store: BackingStore[Any], persist_pool: FBPool[Any], tracked: TrackedPath
    ) -> None:
        """A handle registered before its persisted blob was deleted still loads."""
        original = persist_pool.insert(self.small_value(6))
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        handle = persist_pool.register(tracked, key)
        assert handle is not None
        persist_store.delete_persisted(tracked, key)
        with handle.load() as value:
            assert value == self.small_value(6)

    def test_scan_finds_keys_and_leaves_foreign_names(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """A fresh scan lists the persisted keys and reports, untouched, a foreign file."""
        handles = [persist_pool.insert(self.small_value(i)) for i in range(5)]
        keys = {handle.persist(tracked) for handle in handles}
        foreign = f"{persist_location.root}/notes.txt"
        persist_location.fs.pipe_file(foreign, b"not a blob")
        rescanned = persist_store.track_path(persist_location)
        assert rescanned.keys() == keys
        assert rescanned.unknown == ("notes.txt",)
        assert persist_location.fs.cat_file(foreign) == b"not a blob"

    def test_save_keeps_exactly_the_saved_items(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """``fb.save`` persists the items, commits their keys, then drops the others."""
        old = persist_pool.insert(self.small_value(7))
        old.persist(tracked)
        items = [persist_pool.insert(self.small_value(10 + i)) for i in range(3)]
        committed: list[list[uuid.UUID]] = []
        save(items, tracked, committed.append)
        assert committed == [[item.key for item in items]]
        assert tracked.keys() == {item.key for item in items}
        assert persist_store.track_path(persist_location).keys() == {item.key for item in items}

    def test_tracking_the_cache_is_refused(
        self, persist_store: BackingStore[Any], location: PreparedPath
    ) -> None:
        """The store's own cache location cannot be used as a persist location."""
        with pytest.raises(ForeignLocationError):
            persist_store.track_path(location)
