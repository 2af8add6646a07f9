"""The cache-tier suite, `BackendSuite`, and what both backend suites share.

Here live the sample values, the damage done to blobs on purpose, the raw-access hooks a
plugin may override (`_Hooks`) and `BackendSuite` itself: store, load, delete and integrity.
`PersistSuite` (durable locations) builds on the same hooks in `fb.testing.backends`, the
public module that exports both suites; import them from there.

This module needs pytest; fb itself does not.
"""

from __future__ import annotations

import io
import pickle
import random
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, ClassVar, cast

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.blobformat import BlobFormat
from fb.codecs import PickleCodec
from fb.exceptions import BlobNotFoundError, CodecError, CorruptBlobError
from fb.typing import Codec, Strategy

__all__ = ["BackendSuite", "ExplodingValue", "sample_values"]


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
    """What a plugin may override, shared by both suites.

    Every test reaches storage only through these hooks and the `fb.typing.Strategy`
    methods, so a backend whose blobs are not files (database rows, a service) passes the
    suites by overriding the raw-access hooks (`read_raw`, `write_raw`, `blob_names`).
    """

    max_workers: ClassVar[int] = 4
    """Worker threads of the `BackingStore` the pool tests use."""

    def make_codec(self) -> Codec[Any]:
        """Return the codec the strategy under test encodes with (default: pickle).

        The suites' values (`sample_values`, `small_value`) must round-trip through it and
        `failing_value` must fail in it midway; override those with it.
        """
        return PickleCodec()

    def make_strategy(self, location: PreparedPath) -> Strategy[Any]:
        """Return the strategy under test over ``location``, encoding with `make_codec`."""
        return FBStore(self.make_codec(), location)

    def sample_values(self) -> list[Any]:
        """Return values of several shapes and sizes; the last one must exceed 2 MiB."""
        return sample_values()

    def small_value(self, index: int) -> Any:
        """Return a small value, different for each ``index``."""
        return f"value {index}"

    def sized_value(self, seed: int, size: int) -> Any:
        """Return a value that encodes to about ``size`` bytes, different for each ``seed``."""
        return random.Random(seed).randbytes(size)

    def failing_value(self) -> Any:
        """Return a value whose encoding fails after the codec wrote at least 1 MiB."""
        return [random.Random(3).randbytes(2**20), ExplodingValue()]

    def read_raw(self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID) -> bytes:
        """Return the raw bytes of blob ``key`` as ``backend`` keeps them at ``location``.

        ``location`` is the cache or a persist location. The default reads the file
        ``location.blob_path(key)``; a backend that keeps blobs elsewhere (a database)
        reads them from there, without decoding or checking them.
        """
        data: bytes = location.fs.cat_file(location.blob_path(key))
        return data

    def write_raw(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID, data: bytes
    ) -> None:
        """Replace the raw bytes of blob ``key`` at the cache ``location`` (damage on purpose)."""
        location.fs.pipe_file(location.blob_path(key), data)

    def blob_names(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID
    ) -> list[str]:
        """Return the names at ``location`` that hold blob ``key``, or part of it.

        The suites check that a stored or persisted blob is exactly one name and that a
        deleted or failed one leaves none (no temporary file, no row). The default lists
        every file below ``location`` whose name contains ``key.hex``; a database backend
        returns its rows (or keys) for ``key``, temporary ones included.
        """
        return [name for name in self.names_under(location) if key.hex in name]

    def names_under(self, location: PreparedPath) -> list[str]:
        """Return every file below ``location``, relative to it, sorted (for `blob_names`)."""
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
        for value in self.sample_values():
            key = uuid.uuid4()
            size = backend.store(key, value)
            assert size == len(self.read_raw(backend, location, key))
            assert backend.load(key) == value

    def test_blob_lives_at_its_key(self, backend: Strategy[Any], location: PreparedPath) -> None:
        """A stored blob is exactly one name at the location, and ``delete`` removes it."""
        key = uuid.uuid4()
        assert self.blob_names(backend, location, key) == []
        backend.store(key, self.small_value(0))
        assert len(self.blob_names(backend, location, key)) == 1
        backend.delete(key)
        assert self.blob_names(backend, location, key) == []

    def test_concurrent_stores_and_loads(self, backend: Strategy[Any]) -> None:
        """Stores and loads of different keys from several threads at once all succeed."""
        rng = random.Random(7)
        payloads = {
            uuid.uuid4(): self.sized_value(seed, rng.randrange(1, 300_000)) for seed in range(32)
        }
        with ThreadPoolExecutor(8) as threads:
            list(threads.map(lambda item: backend.store(*item), payloads.items()))
            loaded = dict(zip(payloads, threads.map(backend.load, payloads), strict=True))
        assert loaded == payloads

    def test_round_trip_through_pool_eviction(self, backing_store: BackingStore[Any]) -> None:
        """Values evicted by an `FBPool` are written back and load back equal."""
        values = self.sample_values()
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
        payloads = [self.sized_value(seed, 100_000 + seed) for seed in range(24)]
        pool: FBPool[Any] = FBPool(backing_store, max_items=0)
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
        pool: FBPool[Any] = FBPool(backing_store, max_items=0)
        handles = [pool.insert(self.small_value(i)) for i in range(10)]
        backing_store.finished()
        backend = backing_store.strategy
        keys = [handle.key for handle in handles]
        assert all(self.blob_names(backend, location, key) for key in keys)
        for handle in handles:
            handle.close()
        backing_store.finished()
        assert [name for key in keys for name in self.blob_names(backend, location, key)] == []

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
        backend.store(key, self.small_value(0))
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
        value = self.failing_value()
        sink = _CountingSink()
        with pytest.raises(Exception) as premise:  # noqa: PT011 - any error of the codec
            self.make_codec().dump(value, cast("IO[bytes]", sink))
        assert not isinstance(premise.value, OSError)  # the codec failed, not the sink
        assert sink.count >= 2**20  # the premise: bytes were written before the failure
        key = uuid.uuid4()
        with pytest.raises(CodecError):
            backend.store(key, value)
        with pytest.raises(BlobNotFoundError):
            backend.load(key)
        assert self.blob_names(backend, location, key) == []

    def test_failed_write_back_keeps_the_value(self, backing_store: BackingStore[Any]) -> None:
        """A write-back that fails is reported by ``finished`` and the value stays loadable."""
        pool: FBPool[Any] = FBPool(backing_store, max_items=0)
        handle = pool.insert(self.failing_value())
        with pytest.raises(CodecError):
            backing_store.finished()
        # Looking at the value through a guard would offer it for eviction again (a retry).
        assert handle.resident
        assert pool.statistics().write_errors == 1
        handle.close()
        backing_store.finished()

    @pytest.mark.parametrize("damage", sorted(_DAMAGE))
    @pytest.mark.parametrize("size", ["small", "large"])
    def test_damaged_blob_raises_corrupt_blob_error(
        self, backend: Strategy[Any], location: PreparedPath, damage: str, size: str
    ) -> None:
        """A truncated, padded or altered blob, small or large, raises `CorruptBlobError`."""
        key = uuid.uuid4()
        backend.store(key, self.small_value(0) if size == "small" else self.sample_values()[-1])
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
        blob = BlobFormat(_OtherCodec()).encode(key, "written by another codec")
        backend.store(key, self.small_value(0))
        self.write_raw(backend, location, key, blob)
        with pytest.raises(CodecError, match=_OtherCodec.NAME):
            backend.load(key)
