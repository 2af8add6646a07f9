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
            return PreparedPath(f"myfs://bucket/{uuid.uuid4().hex}", token="...")

        @pytest.fixture(name="persist_location")
        def fixture_persist_location(self):
            return PreparedPath(f"myfs://bucket/{uuid.uuid4().hex}", token="...")

``location`` is a fresh, empty `PreparedPath` for a cache; ``persist_location`` a fresh,
empty one for durable storage (on filesystems with directories, the directory exists).
The suite builds an `fb.backends.FBStore` over ``location``; a backend that is a whole
`fb.typing.Strategy` of its own overrides `BackendSuite.make_strategy`, and, if its blobs
are not files at ``location.blob_path(key)``, the raw-access hooks (`BackendSuite.read_raw`,
`BackendSuite.write_raw`, `BackendSuite.names_under`).

This module needs pytest; fb itself does not.
"""

from __future__ import annotations

import asyncio
import io
import pickle
import random
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, ClassVar

import pytest

from fb import BackingStore, Fb, FBPool, TrackedPath, save
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import (
    BlobNotFoundError,
    CodecError,
    CorruptBlobError,
    ForeignLocationError,
)
from fb.typing import Strategy

__all__ = ["BackendSuite", "ExplodingValue", "PersistSuite", "sample_values"]


def sample_values() -> list[Any]:
    """Return values of several shapes and sizes, including a 2 MiB random payload."""
    rng = random.Random(20240611)
    return [
        b"",
        b"\x00\xff" * 3,
        "text with ünïcödé",
        {"numbers": [1, 2.5, -3], "nested": {"none": None, "flag": True}},
        list(range(1000)),
        bytes(range(256)) * 1024,
        rng.randbytes(2 * 2**20 + 17),
    ]


class ExplodingValue:
    """A value whose pickling fails: put it after a large one to fail a store midway."""

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise RuntimeError("this value refuses to be pickled")


class _OtherCodec:
    """Pickle under another name: its blobs are intact but not the pickle codec's."""

    NAME = "fb-testing-other-codec"

    @property
    def name(self) -> str:
        return self.NAME

    def dump(self, value: Any, file: IO[bytes]) -> None:
        pickle.dump(value, file)

    def load(self, file: IO[bytes]) -> Any:
        return pickle.load(file)


class _CountingSink(io.RawIOBase):
    """A write-only file that only counts what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size


def _flip(data: bytes, index: int) -> bytes:
    damaged = bytearray(data)
    damaged[index] ^= 0xFF
    return bytes(damaged)


_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "header-cut": lambda data: data[:5],
    "payload-cut": lambda data: data[: len(data) // 2],
    "trailer-cut": lambda data: data[:-3],
    "padded": lambda data: data + b"\x00" * 7,
    "bad-magic": lambda data: b"XXXX" + data[4:],
    "payload-flip": lambda data: _flip(data, len(data) // 2),
    "trailer-flip": lambda data: _flip(data, len(data) - 1),
}


class _Hooks:
    """What a plugin may override, shared by both suites."""

    max_workers: ClassVar[int] = 4
    """Worker threads of the `BackingStore` the pool tests use."""

    def make_strategy(self, location: PreparedPath) -> Strategy[Any]:
        """Return the strategy under test, storing its blobs at ``location`` (pickle codec)."""
        return FBStore(PickleCodec(), location)

    def names_under(self, location: PreparedPath) -> list[str]:
        """Return every file below ``location``, relative to it, sorted."""
        prefix = location.root.rstrip("/") + "/"
        try:
            found = location.fs.find(location.root)
        except FileNotFoundError:
            return []
        return sorted(path[len(prefix) :] if path.startswith(prefix) else path for path in found)


class BackendSuite(_Hooks):
    """The cache tier: every backend must store, load, delete and check blobs like this.

    Needs a ``location`` fixture: a fresh, empty `PreparedPath`.

    Notes:
        Each test builds its own strategy (and `BackingStore`) and closes it.
    """

    def read_raw(self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID) -> bytes:
        """Return the raw bytes of blob ``key`` as ``backend`` keeps them at ``location``."""
        data: bytes = location.fs.cat_file(location.blob_path(key))
        return data

    def write_raw(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID, data: bytes
    ) -> None:
        """Replace the raw bytes of blob ``key`` (to damage it on purpose)."""
        location.fs.pipe_file(location.blob_path(key), data)

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture(name="backend")
    def fixture_backend(self, location: PreparedPath) -> Iterator[Strategy[Any]]:
        """The strategy under test over ``location``; closed afterwards."""
        backend = self.make_strategy(location)
        yield backend
        backend.close()

    @pytest.fixture(name="backing_store")
    def fixture_backing_store(self, backend: Strategy[Any]) -> Iterator[BackingStore[Any]]:
        """A `BackingStore` running the strategy under test; closed afterwards."""
        store: BackingStore[Any] = BackingStore(backend, max_workers=self.max_workers)
        yield store
        store.close()

    # -- store and load --------------------------------------------------------------------

    def test_store_load_round_trip(self, backend: Strategy[Any], location: PreparedPath) -> None:
        """Every sample value comes back equal, and ``store`` returns the blob's size."""
        for value in sample_values():
            key = uuid.uuid4()
            size = backend.store(key, value)
            assert size == len(self.read_raw(backend, location, key))
            assert backend.load(key) == value

    def test_blob_lives_at_its_key(self, backend: Strategy[Any], location: PreparedPath) -> None:
        """A stored blob is the single name ``xx/<32 hex>`` below the location."""
        key = uuid.uuid4()
        backend.store(key, "one blob")
        blobs = [name for name in self.names_under(location) if key.hex in name]
        assert blobs == [f"{key.hex[:2]}/{key.hex}"]

    def test_concurrent_stores_and_loads(self, backend: Strategy[Any]) -> None:
        """Stores and loads of different keys from several threads at once all succeed."""
        rng = random.Random(7)
        payloads = {uuid.uuid4(): rng.randbytes(rng.randrange(1, 300_000)) for _ in range(32)}
        with ThreadPoolExecutor(8) as threads:
            list(threads.map(lambda item: backend.store(*item), payloads.items()))
            loaded = dict(zip(payloads, threads.map(backend.load, payloads), strict=True))
        assert loaded == payloads

    def test_round_trip_through_pool_eviction(self, backing_store: BackingStore[Any]) -> None:
        """Values evicted by an `FBPool` are written back and load back equal."""
        values = sample_values()
        pool: FBPool[Any] = FBPool(backing_store, max_items=1)
        handles = [pool.insert(value) for value in values]
        backing_store.finished()
        assert [handle.resident for handle in handles] == [False] * (len(values) - 1) + [True]
        for handle, value in zip(handles, values, strict=True):
            with handle.load() as loaded:
                assert loaded == value
        assert pool.statistics().stores >= len(values) - 1
        pool.close()
        backing_store.finished()

    def test_write_through_pool_keeps_nothing_resident(
        self, backing_store: BackingStore[Any]
    ) -> None:
        """With ``max_items=0`` many inserts are all written back, dropped, and load back."""
        rng = random.Random(11)
        payloads = [rng.randbytes(100_000 + i) for i in range(24)]
        pool: FBPool[bytes] = FBPool(backing_store, max_items=0)
        handles = [pool.insert(payload) for payload in payloads]
        backing_store.finished()
        assert not any(handle.resident for handle in handles)
        assert pool.statistics().stores == len(payloads)
        for handle, payload in zip(handles, payloads, strict=True):
            with handle.load() as loaded:
                assert loaded == payload
        pool.close()
        backing_store.finished()

    def test_closed_handles_leave_no_blobs(
        self, backing_store: BackingStore[Any], location: PreparedPath
    ) -> None:
        """Once every handle is closed and the store drained, no blob is left behind."""
        pool: FBPool[str] = FBPool(backing_store, max_items=0)
        handles = [pool.insert(f"value {i}") for i in range(10)]
        backing_store.finished()
        keys = {handle.key.hex for handle in handles}
        assert keys <= {name.rpartition("/")[2] for name in self.names_under(location)}
        for handle in handles:
            handle.close()
        backing_store.finished()
        assert not keys & {name.rpartition("/")[2] for name in self.names_under(location)}

    # -- missing and deleted blobs ---------------------------------------------------------

    def test_load_of_missing_key_raises_blob_not_found(self, backend: Strategy[Any]) -> None:
        """Loading a key never stored raises `BlobNotFoundError`, a `FileNotFoundError`."""
        key = uuid.uuid4()
        with pytest.raises(BlobNotFoundError, match=key.hex) as caught:
            backend.load(key)
        assert isinstance(caught.value, FileNotFoundError)

    def test_delete_is_idempotent(self, backend: Strategy[Any]) -> None:
        """Deleting twice, or deleting a key never stored, is not an error."""
        key = uuid.uuid4()
        backend.store(key, b"short-lived")
        backend.delete(key)
        backend.delete(key)
        backend.delete(uuid.uuid4())
        with pytest.raises(BlobNotFoundError):
            backend.load(key)

    def test_close_is_idempotent(self, location: PreparedPath) -> None:
        """Closing a strategy twice is not an error."""
        backend = self.make_strategy(location)
        backend.close()
        backend.close()

    # -- integrity -------------------------------------------------------------------------

    def test_failed_store_leaves_no_blob(
        self, backend: Strategy[Any], location: PreparedPath
    ) -> None:
        """A value whose encoding fails midway leaves nothing under its key."""
        value = [random.Random(3).randbytes(2**20), ExplodingValue()]
        sink = _CountingSink()
        with pytest.raises(RuntimeError):
            pickle.dump(value, sink, protocol=5)
        assert sink.count >= 2**20  # the premise: bytes were written before the failure
        key = uuid.uuid4()
        with pytest.raises(CodecError):
            backend.store(key, value)
        with pytest.raises(BlobNotFoundError):
            backend.load(key)
        assert [name for name in self.names_under(location) if key.hex in name] == []

    def test_failed_write_back_keeps_the_value(self, backing_store: BackingStore[Any]) -> None:
        """A write-back that fails is reported by ``finished`` and the value stays loadable."""
        pool: FBPool[Any] = FBPool(backing_store, max_items=0)
        handle = pool.insert([b"x" * 2**20, ExplodingValue()])
        with pytest.raises(CodecError):
            backing_store.finished()
        # Looking at the value through a guard would offer it for eviction again (a retry).
        assert handle.resident
        assert pool.statistics().write_errors == 1
        handle.close()
        backing_store.finished()

    @pytest.mark.parametrize("damage", sorted(_DAMAGE))
    def test_damaged_blob_raises_corrupt_blob_error(
        self, backend: Strategy[Any], location: PreparedPath, damage: str
    ) -> None:
        """A truncated, padded or altered blob raises `CorruptBlobError` naming its key."""
        key = uuid.uuid4()
        backend.store(key, bytes(range(256)) * 64)
        self.write_raw(
            backend, location, key, _DAMAGE[damage](self.read_raw(backend, location, key))
        )
        with pytest.raises(CorruptBlobError, match=key.hex) as caught:
            backend.load(key)
        assert caught.value.key == key

    def test_blob_of_another_codec_raises_codec_error(
        self, backend: Strategy[Any], location: PreparedPath
    ) -> None:
        """An intact blob written by another codec raises `CodecError` naming that codec."""
        key = uuid.uuid4()
        scratch = PreparedPath(f"memory://fb-testing-{uuid.uuid4().hex}")
        try:
            writer = FBStore(_OtherCodec(), scratch)
            writer.store(key, "written by another codec")
            writer.close()
            blob = scratch.fs.cat_file(scratch.blob_path(key))
        finally:
            scratch.fs.rm(scratch.root, recursive=True)
        backend.store(key, "to be replaced")
        self.write_raw(backend, location, key, blob)
        with pytest.raises(CodecError, match=_OtherCodec.NAME):
            backend.load(key)


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
        values = sample_values()
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
        original = persist_pool.insert({"lazy": True})
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        handle = persist_pool.register(tracked, key.hex)
        assert handle is not None
        assert persist_pool.statistics().loads == 0
        with handle.load() as value:
            assert value == {"lazy": True}
        assert persist_pool.statistics().loads == 1

    def test_persist_is_idempotent(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """Persisting one item twice gives one blob, unchanged, under the same key."""
        handle = persist_pool.insert(b"once" * 1000)
        key = handle.persist(tracked)
        before = persist_location.fs.cat_file(persist_location.blob_path(key))
        assert handle.persist(tracked) == key
        persist_store.fsync(tracked)
        assert persist_location.fs.cat_file(persist_location.blob_path(key)) == before
        names = [name for name in self.names_under(persist_location) if key.hex in name]
        assert names == [f"{key.hex[:2]}/{key.hex}"]
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
        original = persist_pool.insert("shared")
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        first = persist_pool.register(tracked, key)
        second = persist_pool.register(tracked, key)
        assert first is not None
        assert second is not None
        first.close()
        persist_store.finished()
        with second.load() as value:
            assert value == "shared"

    def test_persisted_items_outlive_their_store(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        location: PreparedPath,
        persist_location: PreparedPath,
    ) -> None:
        """A new store over the same cache registers what the closed one persisted."""
        handles = [persist_pool.insert(value) for value in sample_values()]
        values = {
            handle.persist(tracked): value
            for handle, value in zip(handles, sample_values(), strict=True)
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
        key = await pool.insert("async").apersist(tracked)
        await pool.store.afsync(tracked)
        handle = await pool.aregister(tracked, key)
        assert handle is not None
        async with handle.aload() as value:
            return value

    def test_async_persist_and_register(
        self, persist_pool: FBPool[Any], tracked: TrackedPath
    ) -> None:
        """``apersist``, ``afsync`` and ``aregister`` round-trip a value."""
        assert asyncio.run(self._async_round_trip(persist_pool, tracked)) == "async"

    # -- delete and scan -------------------------------------------------------------------

    def test_delete_persisted(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """A deleted persisted blob is gone from the location; deleting again is fine."""
        original = persist_pool.insert("to delete")
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        persist_store.delete_persisted(tracked, key)
        persist_store.fsync(tracked)
        assert key not in tracked
        assert key not in tracked.rescan()
        assert persist_pool.register(tracked, key) is None
        assert [name for name in self.names_under(persist_location) if key.hex in name] == []
        persist_store.delete_persisted(tracked, key)

    def test_registered_handle_outlives_delete_persisted(
        self, persist_store: BackingStore[Any], persist_pool: FBPool[Any], tracked: TrackedPath
    ) -> None:
        """A handle registered before its persisted blob was deleted still loads."""
        original = persist_pool.insert("kept in the cache")
        key = original.persist(tracked)
        self._drop(persist_store, [original])
        handle = persist_pool.register(tracked, key)
        assert handle is not None
        persist_store.delete_persisted(tracked, key)
        with handle.load() as value:
            assert value == "kept in the cache"

    def test_scan_finds_keys_and_leaves_foreign_names(
        self,
        persist_store: BackingStore[Any],
        persist_pool: FBPool[Any],
        tracked: TrackedPath,
        persist_location: PreparedPath,
    ) -> None:
        """A fresh scan lists the persisted keys and reports, untouched, a foreign file."""
        handles = [persist_pool.insert(i) for i in range(5)]
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
        old = persist_pool.insert("from an older save")
        old.persist(tracked)
        items = [persist_pool.insert(f"saved {i}") for i in range(3)]
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
