"""The diskcache:// backend: blobs in an embedded SQLite database, proven by the unchanged kit."""

from __future__ import annotations

import os
import random
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import fb
from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath, available_backends, open_backend
from fb.backends._diskcache import MARKER_NAME, DiskcacheStore, open_cache
from fb.blobformat import BlobFormat
from fb.codecs import PickleCodec
from fb.exceptions import (
    BlobNotFoundError,
    CodecError,
    CorruptBlobError,
    ForeignLocationError,
    StoreLockedError,
)
from fb.testing.backends import BackendSuite, ExplodingValue, PersistSuite
from fb.typing import Strategy
from tests.fds import open_files_under

SECRET = b"a secret key of at least 16 bytes"


class TestDiskcache(BackendSuite, PersistSuite):
    """Every suite of the kit, run unchanged: only fixtures and raw-access hooks are given."""

    @pytest.fixture(name="location")
    def fixture_location(self, tmp_path: Path) -> PreparedPath:
        return PreparedPath(tmp_path / "cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, tmp_path: Path) -> PreparedPath:
        (tmp_path / "persist").mkdir()
        return PreparedPath(tmp_path / "persist")

    def make_strategy(self, location: PreparedPath) -> Strategy[Any]:
        return DiskcacheStore(self.make_codec(), location)

    def read_raw(self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID) -> bytes:
        with open_cache(location.root) as cache:
            data: bytes = cache.get(key.hex)
        return data

    def write_raw(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID, data: bytes
    ) -> None:
        with open_cache(location.root) as cache:
            cache.set(key.hex, data)

    def blob_names(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID
    ) -> list[str]:
        """The key's row, and any value file that no row references (a leftover)."""
        if not (Path(location.root) / "cache.db").exists():
            return []
        with open_cache(location.root) as cache:
            names = [key.hex] if key.hex in cache else []
            referenced = {
                row[0]
                for row in cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL")
            }
        root = Path(location.root)
        names += [
            f"orphan:{path.relative_to(root)}"
            for path in root.glob("*/*/*.val")
            if str(path.relative_to(root)) not in referenced
        ]
        return names


@pytest.fixture(name="cache_dir")
def fixture_cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(name="backend")
def fixture_backend(cache_dir: Path) -> Iterator[DiskcacheStore[Any]]:
    backend: DiskcacheStore[Any] = DiskcacheStore("pickle", f"diskcache://{cache_dir}")
    yield backend
    backend.close()


def _value_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/*.val"))


def test_open_pool_serves_the_diskcache_protocol(tmp_path: Path) -> None:
    """open_pool("diskcache://PATH") spills to a DiskcacheStore, listed among the backends."""
    assert "diskcache" in available_backends()
    with fb.open_pool(f"diskcache://{tmp_path}/spill", max_items=1) as pool:
        assert isinstance(pool.store.strategy, DiskcacheStore)
        handles = [pool.insert(f"value {i}") for i in range(5)]
        pool.store.finished()
        for i, handle in enumerate(handles):
            with handle.load() as value:
                assert value == f"value {i}"


def test_open_pool_passes_the_secret_key(tmp_path: Path) -> None:
    """A secret_key given to open_pool signs blobs; an unsigned blob is then refused."""
    with fb.open_pool(f"diskcache://{tmp_path}/spill", max_items=0, secret_key=SECRET) as pool:
        strategy = pool.store.strategy
        assert isinstance(strategy, DiskcacheStore)
        assert strategy.signed
        key = uuid.uuid4()
        with open_cache(f"{tmp_path}/spill") as cache:
            cache.set(key.hex, BlobFormat(PickleCodec()).encode(key, "unsigned"))
        with pytest.raises(CorruptBlobError, match=f"not signed.*{key.hex}"):
            strategy.load(key)


def test_storage_options_are_refused(tmp_path: Path) -> None:
    """The diskcache factory raises TypeError for storage options, naming them."""
    with pytest.raises(TypeError, match="anon"):
        open_backend(f"diskcache://{tmp_path}/x", "pickle", anon=True)


def test_small_blobs_are_inline_and_large_ones_are_files(
    backend: DiskcacheStore[Any], cache_dir: Path
) -> None:
    """A blob under 32 KiB makes no file; a large one is one value file, gone on delete."""
    small, large = uuid.uuid4(), uuid.uuid4()
    backend.store(small, b"x" * 1000)
    assert _value_files(cache_dir) == []
    payload = random.Random(1).randbytes(3 << 20)
    size = backend.store(large, payload)
    (file,) = _value_files(cache_dir)
    assert file.stat().st_size == size
    assert backend.load(large) == payload
    backend.delete(large)
    assert _value_files(cache_dir) == []
    assert backend.load(small) == b"x" * 1000


def test_failed_large_encode_leaves_no_file(backend: DiskcacheStore[Any], cache_dir: Path) -> None:
    """A codec failure after the blob spilled to a file removes that file."""
    key = uuid.uuid4()
    with pytest.raises(CodecError):
        backend.store(key, [b"y" * (1 << 20), ExplodingValue()])
    assert _value_files(cache_dir) == []
    with pytest.raises(BlobNotFoundError, match=key.hex):
        backend.load(key)


def test_close_closes_the_connections_of_every_thread(cache_dir: Path, tmp_path: Path) -> None:
    """diskcache opens one connection per thread; the store's close closes all of them
    (threads still alive and threads ended alike), not only the calling thread's."""
    backend: DiskcacheStore[Any] = DiskcacheStore("pickle", cache_dir)
    persist = PreparedPath(tmp_path / "persist")
    (tmp_path / "persist").mkdir()
    keys = [uuid.uuid4() for _ in range(8)]

    def work(key: uuid.UUID) -> None:
        backend.store(key, b"v" * 100)
        backend.persist(key, persist)
        assert backend.load(key) == b"v" * 100

    with ThreadPoolExecutor(4) as ended:
        for future in [ended.submit(work, key) for key in keys]:
            future.result(timeout=60)
    with ThreadPoolExecutor(1) as alive:  # its thread outlives the close
        alive.submit(work, uuid.uuid4()).result(timeout=60)
        assert open_files_under(tmp_path) != []
        backend.close()
        assert open_files_under(tmp_path) == []


def test_second_owner_is_refused(backend: DiskcacheStore[Any], cache_dir: Path) -> None:
    """A second store on a directory that a live store owns raises StoreLockedError."""
    with pytest.raises(StoreLockedError, match=str(cache_dir)):
        DiskcacheStore("pickle", cache_dir)


def test_open_sweeps_an_earlier_owner(cache_dir: Path) -> None:
    """A new store deletes the entries and value files left behind; other files stay."""
    first: DiskcacheStore[Any] = DiskcacheStore("pickle", cache_dir)
    key = uuid.uuid4()
    first.store(key, random.Random(2).randbytes(1 << 20))
    first.close()
    (cache_dir / "notes.txt").write_text("mine")
    orphan = cache_dir / "ab" / "cd" / "leftover.val"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"partial")
    second: DiskcacheStore[Any] = DiskcacheStore("pickle", cache_dir)
    try:
        assert not second.exists(key)
        assert _value_files(cache_dir) == []
        assert (cache_dir / "notes.txt").read_text() == "mine"
    finally:
        second.close()


def test_fsync_checkpoints_the_persist_database(
    backend: DiskcacheStore[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After fsync the persist database's log is empty and the value directories synced."""
    durable = tmp_path / "durable"
    durable.mkdir()
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    with BackingStore(backend) as store:
        pool: FBPool[Any] = FBPool(store, max_items=0)
        tracked = store.track_path(durable)
        big = pool.insert(random.Random(3).randbytes(1 << 20))
        small = pool.insert("small")
        big.persist(tracked)
        small.persist(tracked)
        assert (durable / "cache.db-wal").stat().st_size > 0
        monkeypatch.setattr(os, "fsync", recording_fsync)
        store.fsync(tracked)
        monkeypatch.undo()
        assert (durable / "cache.db-wal").stat().st_size == 0
        (value_file,) = _value_files(durable)
        assert str(value_file.parent) in synced
        assert str(durable) in synced
        pool.close()


def test_persist_refuses_other_locations(
    backend: DiskcacheStore[Any], tmp_path: Path, cache_dir: Path
) -> None:
    """An FBStore persist location, a cache and a non-local URL are refused by name."""
    fbstore_location = tmp_path / "files"
    fbstore_location.mkdir()
    (fbstore_location / ".fb-persist").write_bytes(b"fb persist location, format 1\n")
    other_cache = tmp_path / "other-cache"
    FBStore("pickle", other_cache).close()
    with BackingStore(backend) as store:
        for location in (fbstore_location, other_cache, cache_dir):
            with pytest.raises(ForeignLocationError, match=str(location)):
                store.track_path(location)
        with pytest.raises(ForeignLocationError, match="local directory"):
            store.track_path(f"memory://{uuid.uuid4().hex}")


def test_first_persist_marks_the_location_and_refuses_one_in_use(
    backend: DiskcacheStore[Any], tmp_path: Path
) -> None:
    """The first persist writes a marker; a directory holding other files is refused."""
    durable, in_use = tmp_path / "durable", tmp_path / "in-use"
    durable.mkdir()
    in_use.mkdir()
    (in_use / "report.csv").write_text("a,b\n")
    with BackingStore(backend) as store:
        pool: FBPool[Any] = FBPool(store, max_items=2)
        handle = pool.insert("persisted")
        handle.persist(store.track_path(durable))
        assert (durable / MARKER_NAME).is_file()
        with pytest.raises(ForeignLocationError, match=r"report\.csv"):
            handle.persist(store.track_path(in_use))
        assert (in_use / "report.csv").read_text() == "a,b\n"
        pool.close()


def test_register_copies_bytes_without_decoding(
    backend: DiskcacheStore[Any], tmp_path: Path
) -> None:
    """register copies the blob's bytes into the cache; a blob the codec cannot read is
    still registered, and its load then fails with CodecError."""
    durable = tmp_path / "durable"
    durable.mkdir()
    key = uuid.uuid4()
    writer: DiskcacheStore[Any] = DiskcacheStore("json", tmp_path / "writer")
    writer.store(key, {"written": "by json"})
    writer.persist(key, PreparedPath(durable))
    writer.close()
    assert backend.register(key, PreparedPath(durable))
    with pytest.raises(CodecError, match="json"):
        backend.load(key)


def test_a_persist_location_is_never_opened_as_a_cache(
    backend: DiskcacheStore[Any], tmp_path: Path
) -> None:
    """A directory with a persist marker is refused as a cache, and its blobs stay."""
    durable = tmp_path / "durable"
    durable.mkdir()
    key = uuid.uuid4()
    backend.store(key, "kept")
    backend.persist(key, PreparedPath(durable))
    with pytest.raises(ForeignLocationError, match="persist location"):
        DiskcacheStore("pickle", durable)
    with open_cache(str(durable)) as cache:
        assert key.hex in cache


def test_database_errors_are_os_errors_naming_the_directory(
    backend: DiskcacheStore[Any], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite failure (a full disk) comes out as OSError naming the cache, not sqlite3's."""

    def full(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(backend._cache, "set", full)
    with pytest.raises(OSError, match="disk is full") as caught:
        backend.store(uuid.uuid4(), "x")
    assert caught.value.filename == f"diskcache://{cache_dir}"
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


def test_sweep_never_follows_a_link(cache_dir: Path, tmp_path: Path) -> None:
    """A value-directory name that is a link to elsewhere is left alone, and so is its target."""
    elsewhere = tmp_path / "elsewhere" / "cd"
    elsewhere.mkdir(parents=True)
    (elsewhere / "precious.val").write_bytes(b"not the cache's")
    cache_dir.mkdir()
    (cache_dir / "ab").symlink_to(tmp_path / "elsewhere")
    store: DiskcacheStore[Any] = DiskcacheStore("pickle", cache_dir)
    store.close()
    assert (elsewhere / "precious.val").read_bytes() == b"not the cache's"


def test_a_closed_cache_reconnects_in_every_thread(cache_dir: Path) -> None:
    """After `close`, a diskcache is usable again from any thread, as diskcache's own is."""
    cache = open_cache(str(cache_dir))
    with ThreadPoolExecutor(1) as other:
        other.submit(cache.set, "a", b"1").result(timeout=60)
        cache.close()
        assert other.submit(cache.get, "a").result(timeout=60) == b"1"
        assert cache.get("a") == b"1"
        cache.close()
