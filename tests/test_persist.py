"""Persistence: tracked paths, persist, register, fsync, delete_persisted and the save protocol."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import fb
from fb import BackingStore, Fb, FBPool, TrackedPath
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import (
    CodecError,
    ForeignLocationError,
    HandleClosedError,
    InvalidKeyError,
)
from tests.conftest import TIMEOUT, CountingStore
from tests.crash_child import run_child

MARKER = ".fb-persist"


class PersistCounting(CountingStore):
    """A `CountingStore` that also records the persistence calls and can hold ``persist``.

    While ``persist_gate`` is not None, `persist` sets ``persist_started`` and waits for the
    gate *before* it places the blob: the handle has a blob and persist holds a reference
    to it, so a test can close, evict or rewrite the handle at exactly that point.
    """

    def __init__(self, inner: FBStore[Any]) -> None:
        super().__init__(inner)
        self.calls: list[tuple[str, UUID | None]] = []
        self.synced: list[set[str]] = []
        self.persist_gate: threading.Event | None = None
        self.persist_started = threading.Event()
        self.persist_threads: set[str] = set()
        self.active_persists = 0
        self.peak_persists = 0
        self.changed = threading.Condition()

    def _call(self, kind: str, key: UUID | None) -> None:
        with self.changed:
            self.calls.append((kind, key))

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        self._call("scan", None)
        return super().scan(location)

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        self._call("persist", key)
        with self.changed:
            self.active_persists += 1
            self.peak_persists = max(self.peak_persists, self.active_persists)
            self.persist_threads.add(threading.current_thread().name)
            self.changed.notify_all()
        try:
            self._pass(self.persist_gate, self.persist_started)
            return super().persist(key, location)
        finally:
            with self.changed:
                self.active_persists -= 1

    def register(self, key: UUID, location: PreparedPath) -> bool:
        self._call("register", key)
        return super().register(key, location)

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        self._call("delete_persisted", key)
        return super().delete_persisted(key, location)

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        self._call("fsync", None)
        self.synced.append(set(paths))
        super().fsync(location, paths)

    def kinds(self) -> list[str]:
        """The persistence calls so far, by kind."""
        return [kind for kind, _ in self.calls]


@pytest.fixture(name="counting")
def fixture_counting(cache_dir: Path) -> PersistCounting:
    """Override of the shared fixture: the same counting store, persistence calls included."""
    return PersistCounting(FBStore(PickleCodec(), PreparedPath(cache_dir)))


@pytest.fixture(name="tracked")
def fixture_tracked(store: BackingStore[Any], persist_dir: Path) -> TrackedPath:
    return store.track_path(persist_dir)


@pytest.fixture(name="pool")
def fixture_pool(store: BackingStore[Any]) -> FBPool[Any]:
    return FBPool(store, max_items=4)


@contextlib.contextmanager
def open_store(cache: Path) -> Iterator[tuple[BackingStore[Any], PersistCounting]]:
    """Open another store (a "second host" or a "later run") on ``cache``; close it after."""
    counting = PersistCounting(FBStore(PickleCodec(), PreparedPath(cache)))
    store: BackingStore[Any] = BackingStore(counting, max_workers=4)
    try:
        yield store, counting
    finally:
        store.close()


@contextlib.contextmanager
def persist_gate(counting: PersistCounting) -> Iterator[threading.Event]:
    """Hold every `persist` of ``counting`` at its gate until the event is set (or the end)."""
    gate = counting.persist_gate = threading.Event()
    try:
        yield gate
    finally:
        gate.set()
        counting.persist_gate = None


@contextlib.contextmanager
def store_gate(counting: PersistCounting) -> Iterator[threading.Event]:
    """Hold every blob write of ``counting`` at its gate until the event is set (or the end)."""
    gate = counting.store_gate = threading.Event()
    try:
        yield gate
    finally:
        gate.set()
        counting.store_gate = None


def value_of(handle: Fb[Any]) -> Any:
    """Load ``handle`` and return its value."""
    with handle.load() as value:
        return value


def blob(location: Path, key: UUID) -> Path:
    """Where blob ``key`` lives under ``location``."""
    return location / key.hex[:2] / key.hex


def listing(root: Path) -> dict[str, bytes | None]:
    """Every name under ``root`` with its content (None for a directory)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def cache_files(cache: Path) -> list[str]:
    """Every file in a cache directory's shards (blobs and temporary files)."""
    return sorted(str(p.relative_to(cache)) for p in cache.glob("??/*"))


def write_manifest(manifest: Path, keys: list[UUID]) -> list[UUID]:
    """A caller's atomic commit: write the key list to a temporary file, fsync, rename."""
    tmp = manifest.with_name(manifest.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump([key.hex for key in keys], file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, manifest)
    return keys


def read_manifest(manifest: Path) -> list[UUID]:
    """The keys a manifest written by `write_manifest` lists."""
    return [UUID(hex=k) for k in json.loads(manifest.read_text(encoding="utf-8"))]


# -- track_path ----------------------------------------------------------------------------


def test_track_path_of_an_empty_location_has_no_keys(
    store: BackingStore[Any], persist_dir: Path
) -> None:
    """A fresh location has no keys, nothing unknown, and tracking it writes nothing there."""
    tracked = store.track_path(persist_dir)
    assert tracked.keys() == frozenset()
    assert len(tracked) == 0
    assert tracked.unknown == ()
    assert tracked.unsynced == 0
    assert tracked.path.root == str(persist_dir)
    assert tracked.store is store
    assert listing(persist_dir) == {}


def test_track_path_accepts_a_path_a_string_a_url_and_a_prepared_path(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """Every spelling of one location tracks the same keys."""
    key = pool.insert("x").persist(store.track_path(persist_dir))
    spellings: list[Any] = [
        persist_dir,
        str(persist_dir),
        persist_dir.as_uri(),
        PreparedPath(persist_dir),
    ]
    for spelling in spellings:
        tracked = store.track_path(spelling)
        assert tracked.keys() == {key}, spelling
        assert key in tracked
        assert tracked.path == PreparedPath(persist_dir)


def test_track_path_finds_keys_persisted_by_an_earlier_store(
    tmp_path: Path, persist_dir: Path
) -> None:
    """A new store scanning the location finds exactly the keys persisted there before."""
    with open_store(tmp_path / "first") as (store, _):
        pool: FBPool[str] = FBPool(store, max_items=4)
        tracked = store.track_path(persist_dir)
        keys = {pool.insert(f"v{i}").persist(tracked) for i in range(3)}
        store.fsync(tracked)
    with open_store(tmp_path / "second") as (store, _):
        again = store.track_path(persist_dir)
        assert again.keys() == keys
        assert all(key in again for key in keys)
        assert set(again) == keys
        assert again.unknown == ()


def test_track_path_reports_and_keeps_unknown_names(
    store: BackingStore[Any],
    pool: FBPool[Any],
    persist_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Names fb does not own are logged and listed in `unknown`, and no save deletes them."""
    key = pool.insert("x").persist(store.track_path(persist_dir))
    stray = uuid.uuid4().hex
    foreign = {
        "notes.txt": b"mine",
        f"{stray}": b"a key-like name outside any shard",
        f"{key.hex[:2]}/README": b"a stranger in a shard",
        f"{'00' if stray[:2] != '00' else '01'}/{stray}": b"a key in the wrong shard",
        "sub/deeper.bin": b"nested",
    }
    for name, content in foreign.items():
        path = persist_dir / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="fb"):
        tracked = store.track_path(persist_dir)
    assert tracked.keys() == {key}
    assert set(tracked.unknown) == {*foreign, "sub"} - {"sub/deeper.bin"}
    assert any("not fb blobs" in record.getMessage() for record in caplog.records)
    # Saving nothing deletes every key, and only keys.
    fb.save([], tracked, lambda keys: keys)
    assert not blob(persist_dir, key).exists()
    for name, content in foreign.items():
        assert (persist_dir / name).read_bytes() == content


def test_track_path_of_a_missing_location_names_it(
    store: BackingStore[Any], tmp_path: Path
) -> None:
    """Tracking a location that does not exist raises FileNotFoundError naming it."""
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        store.track_path(missing)
    assert info.value.filename == str(missing)
    assert not missing.exists()


def test_track_path_refuses_the_store_cache_directory(
    store: BackingStore[Any], cache_dir: Path
) -> None:
    """A store's own cache directory is not a durable location."""
    with pytest.raises(ForeignLocationError, match="cache directory"):
        store.track_path(cache_dir)


def test_atrack_path_is_the_async_twin(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """`atrack_path` returns a TrackedPath with the same keys as `track_path`."""
    key = pool.insert("x").persist(store.track_path(persist_dir))
    tracked = asyncio.run(store.atrack_path(persist_dir))
    assert isinstance(tracked, TrackedPath)
    assert tracked.keys() == {key}


def test_rescan_sees_keys_persisted_by_another_store(
    tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """`rescan` lists the location again; keys persisted elsewhere appear."""
    with open_store(tmp_path / "other") as (other, _):
        pool: FBPool[str] = FBPool(other, max_items=2)
        key = pool.insert("elsewhere").persist(other.track_path(persist_dir))
    assert key not in tracked
    assert tracked.rescan() == {key}
    assert key in tracked


# -- persist -------------------------------------------------------------------------------


def test_persist_hard_links_on_the_same_device(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """On one device persist hard-links the cache blob: one inode, two names."""
    handle = pool.insert({"a": 1})
    key = handle.persist(tracked)
    assert key == handle.key
    assert key in tracked
    assert counting.stored == [key]  # the blob was written first, once
    cached, persisted = counting.blob_path(key), blob(persist_dir, key)
    assert os.stat(cached).st_ino == os.stat(persisted).st_ino
    assert os.stat(persisted).st_nlink == 2
    assert (persist_dir / MARKER).read_bytes().startswith(b"fb persist location")
    assert handle.resident  # persisting does not push the value out
    assert store.refcount(key) == 1  # persist's own reference was given back


def test_persist_writes_the_blob_only_when_there_is_none(
    store: BackingStore[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """An item already written back is linked as it is: persist writes nothing more."""
    pool: FBPool[str] = FBPool(store, max_items=0)
    handle = pool.insert("written back")
    store.finished()
    assert counting.stored == [handle.key]
    assert not handle.resident
    key = handle.persist(tracked)
    assert counting.stored == [key]
    assert counting.loaded == []
    assert blob(persist_dir, key).exists()


def test_persist_copies_across_devices(
    store: BackingStore[Any], pool: FBPool[Any], counting: PersistCounting, shm_dir: Path
) -> None:
    """Across devices persist copies: another inode, the same bytes, no temporary file left."""
    tracked = store.track_path(shm_dir)
    handle = pool.insert(b"x" * 100_000)
    key = handle.persist(tracked)
    cached, persisted = counting.blob_path(key), blob(shm_dir, key)
    assert os.stat(cached).st_dev != os.stat(persisted).st_dev
    assert os.stat(persisted).st_nlink == 1
    assert persisted.read_bytes() == cached.read_bytes()
    assert sorted(p.name for p in persisted.parent.iterdir()) == [key.hex]
    assert tracked.unsynced > 0


def test_persist_is_idempotent_per_location(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """Persisting one item twice, or through a second TrackedPath, places it once.

    A second TrackedPath found the key by a scan, so it asks the backend again (to have the
    file fsynced by its next fsync), but nothing new is placed.
    """
    handle = pool.insert("once")
    key = handle.persist(tracked)
    inode = blob(persist_dir, key).stat().st_ino
    before = listing(persist_dir)
    unsynced = tracked.unsynced
    assert handle.persist(tracked) == key
    assert store.track_path(persist_dir) is not tracked
    assert handle.persist(store.track_path(persist_dir)) == key
    assert counting.kinds().count("persist") == 2  # the second TrackedPath's, placing nothing
    assert counting.stored == [key]
    assert tracked.unsynced == unsynced
    assert listing(persist_dir) == before
    assert blob(persist_dir, key).stat().st_ino == inode


def test_persist_after_load_mut_places_the_new_key(
    pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """A rewritten item persists under its new key; the old persisted blob keeps the old value."""
    handle = pool.insert([1])
    old = handle.persist(tracked)
    with handle.load_mut() as guard:
        guard.value = [1, 2]
    new = handle.persist(tracked)
    assert new != old
    assert tracked.keys() == {old, new}
    with open_store(tmp_path / "reader") as (reader, _):
        again = reader.track_path(persist_dir)
        other: FBPool[list[int]] = FBPool(reader, max_items=4)
        first, second = other.register(again, old), other.register(again, new)
        assert first is not None
        assert second is not None
        assert value_of(first) == [1]
        assert value_of(second) == [1, 2]


def test_apersist_and_spawn_persist_are_the_twins(
    pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """`apersist` and `spawn_persist` return the key and place the blob like `persist`."""
    first, second = pool.insert("async"), pool.insert("spawned")
    key = asyncio.run(first.apersist(tracked))
    future = second.spawn_persist(tracked)
    assert isinstance(future, Future)
    assert future.result(TIMEOUT) == second.key
    assert key == first.key
    assert tracked.keys() == {first.key, second.key}
    assert blob(persist_dir, first.key).exists()
    assert blob(persist_dir, second.key).exists()


def test_persist_of_a_closed_handle_raises(
    pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """A closed handle has nothing to persist."""
    handle = pool.insert("gone")
    handle.close()
    with pytest.raises(HandleClosedError):
        handle.persist(tracked)
    assert listing(persist_dir) == {}


def test_persist_refuses_a_location_tracked_by_another_store(
    pool: FBPool[Any], tmp_path: Path, persist_dir: Path
) -> None:
    """A TrackedPath belongs to the store that made it."""
    with open_store(tmp_path / "other") as (other, _):
        foreign = other.track_path(persist_dir)
        with pytest.raises(ValueError, match="another store"):
            pool.insert("x").persist(foreign)
        with pytest.raises(ValueError, match="another store"):
            pool.register(foreign, uuid.uuid4())
    assert listing(persist_dir) == {}


# -- persist against concurrent close, eviction and load_mut -------------------------------


def test_persist_survives_a_close_of_the_handle_mid_link(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    tmp_path: Path,
    persist_dir: Path,
) -> None:
    """Closing the handle while persist links it neither breaks the link nor leaks the blob."""
    handle = pool.insert("closing")
    key = handle.key
    with persist_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        future = executor.submit(handle.persist, tracked)
        assert counting.persist_started.wait(TIMEOUT)
        handle.close()
        store.finished()
        assert counting.deleted == []  # persist still references the blob
        assert counting.blob_path(key).exists()
        gate.set()
        assert future.result(TIMEOUT) == key
    store.finished()
    assert counting.deleted == [key]  # now nothing references it in the cache
    assert not counting.blob_path(key).exists()
    assert store.refcount(key) == 0
    with open_store(tmp_path / "reader") as (reader, _):
        again = FBPool(reader, max_items=1).register(reader.track_path(persist_dir), key)
        assert again is not None
        assert value_of(again) == "closing"


def test_persist_survives_load_mut_mid_link(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    tmp_path: Path,
    persist_dir: Path,
) -> None:
    """A write guard taken while persist links keeps the old blob alive until the link is made."""
    handle = pool.insert("before")
    old = handle.key
    with persist_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        future = executor.submit(handle.persist, tracked)
        assert counting.persist_started.wait(TIMEOUT)
        with handle.load_mut() as guard:
            guard.value = "after"
        assert handle.key != old
        store.finished()
        assert counting.blob_path(old).exists()
        gate.set()
        assert future.result(TIMEOUT) == old
    store.finished()
    assert not counting.blob_path(old).exists()  # the cache drops the old blob afterwards
    assert value_of(handle) == "after"
    with open_store(tmp_path / "reader") as (reader, _):
        again = FBPool(reader, max_items=1).register(reader.track_path(persist_dir), old)
        assert again is not None
        assert value_of(again) == "before"


def test_persist_survives_eviction_mid_link(
    store: BackingStore[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """An item pushed out of memory while persist links it is dropped clean, blob intact."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("evicted")
    with persist_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        future = executor.submit(handle.persist, tracked)
        assert counting.persist_started.wait(TIMEOUT)
        pool.insert("newcomer")  # pushes the persisting item out
        store.finished()
        assert not handle.resident
        assert counting.stored == [handle.key]  # it had a blob: no second write
        gate.set()
        assert future.result(TIMEOUT) == handle.key
    key = handle.key
    assert os.stat(blob(persist_dir, key)).st_ino == os.stat(counting.blob_path(key)).st_ino
    assert value_of(handle) == "evicted"
    assert counting.loaded == [key]


def test_persist_waits_for_an_eviction_write_in_flight(
    store: BackingStore[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """Persist during an eviction write waits for that write instead of writing twice."""
    pool: FBPool[str] = FBPool(store, max_items=0)
    with store_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        handle = pool.insert("in flight")
        assert counting.store_started.wait(TIMEOUT)
        future = executor.submit(handle.persist, tracked)
        assert not future.done()
        gate.set()
        assert future.result(TIMEOUT) == handle.key
    assert counting.stored == [handle.key]
    assert blob(persist_dir, handle.key).exists()


def test_close_during_the_persist_write_places_nothing(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """A handle closed while persist writes its blob: persist raises, nothing is left anywhere."""
    handle = pool.insert("short-lived")
    key = handle.key
    with store_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        future = executor.submit(handle.persist, tracked)
        assert counting.store_started.wait(TIMEOUT)
        handle.close()
        gate.set()
        with pytest.raises(HandleClosedError):
            future.result(TIMEOUT)
    store.finished()
    assert key not in tracked
    assert not blob(persist_dir, key).exists()
    assert cache_files(counting.blob_path(key).parent.parent) == []


def test_concurrent_persists_of_one_handle_agree(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting, persist_dir: Path
) -> None:
    """Eight threads persisting one handle at once all get its key; one blob is placed."""
    claimed = pool.insert("claims the location first").persist(tracked)  # see the race test
    handle = pool.insert("contended")
    start = threading.Barrier(8)

    def persist() -> UUID:
        start.wait(TIMEOUT)
        return handle.persist(tracked)

    with ThreadPoolExecutor(8) as executor:
        keys = [f.result(TIMEOUT) for f in [executor.submit(persist) for _ in range(8)]]
    assert set(keys) == {handle.key}
    assert counting.stored == [claimed, handle.key]
    shard = blob(persist_dir, handle.key).parent
    assert sorted(p.name for p in shard.iterdir()) == [handle.key.hex]
    assert value_of(handle) == "contended"


def test_concurrent_first_persists_claim_the_location_once(
    pool: FBPool[Any],
    tracked: TrackedPath,
    persist_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two first persists into a fresh location both succeed, whoever writes the marker."""
    from fb.backends import _locations

    both_looked = threading.Barrier(2)

    def open_marker(file: Any, *args: Any, **kwargs: Any) -> Any:
        # Hold each thread that finds no marker until the other one has looked too: the
        # interleaving that concurrent first persists (fb.save into a new location) hit.
        try:
            return open(file, *args, **kwargs)
        except FileNotFoundError:
            with contextlib.suppress(threading.BrokenBarrierError):
                both_looked.wait(TIMEOUT)
            raise

    monkeypatch.setattr(_locations, "open", open_marker, raising=False)
    first, second = pool.insert("one"), pool.insert("two")
    with ThreadPoolExecutor(2) as executor:
        futures = [executor.submit(h.persist, tracked) for h in (first, second)]
        keys = [f.result(TIMEOUT) for f in futures]
    assert keys == [first.key, second.key]
    assert blob(persist_dir, first.key).exists()
    assert blob(persist_dir, second.key).exists()


# -- register ------------------------------------------------------------------------------


def test_register_an_absent_key_returns_none(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    cache_dir: Path,
) -> None:
    """A key the location does not hold gives None and leaves no trace."""
    assert pool.register(tracked, uuid.uuid4()) is None
    assert pool.register(tracked, uuid.uuid4().hex) is None
    assert len(pool) == 0
    assert store.blob_keys() == frozenset()
    assert cache_files(cache_dir) == []
    assert tracked.keys() == frozenset()


def test_register_links_the_blob_without_loading_it(
    tmp_path: Path, persist_dir: Path, cache_dir: Path
) -> None:
    """Register links the persisted blob into the cache; nothing is read until a load."""
    with open_store(tmp_path / "writer") as (writer, _):
        key = FBPool(writer, max_items=1).insert("payload").persist(writer.track_path(persist_dir))
    with open_store(cache_dir) as (store, counting):
        pool: FBPool[str] = FBPool(store, max_items=4)
        tracked = store.track_path(persist_dir)
        others = [pool.insert("hot"), pool.insert("warm")]
        handle = pool.register(tracked, key)
        assert handle is not None
        assert handle.key == key
        assert counting.loaded == []
        assert counting.stored == []
        assert not handle.resident
        assert handle.try_load() is None
        assert pool.order() == [others[1].key, others[0].key, key]  # at the cold end
        assert os.stat(counting.blob_path(key)).st_ino == os.stat(blob(persist_dir, key)).st_ino
        assert value_of(handle) == "payload"
        assert counting.loaded == [key]


def test_register_copies_across_devices(tmp_path: Path, shm_dir: Path, cache_dir: Path) -> None:
    """A blob persisted on another device is copied into the cache and loads bit-exact."""
    payload = os.urandom(50_000)
    with open_store(tmp_path / "writer") as (writer, _):
        tracked = writer.track_path(shm_dir)
        key = FBPool(writer, max_items=1).insert(payload).persist(tracked)
        writer.fsync(tracked)
    with open_store(cache_dir) as (store, counting):
        handle = FBPool(store, max_items=1).register(store.track_path(shm_dir), key)
        assert handle is not None
        assert counting.loaded == []
        cached = counting.blob_path(key)
        assert os.stat(cached).st_ino != os.stat(blob(shm_dir, key)).st_ino
        assert cached.read_bytes() == blob(shm_dir, key).read_bytes()
        assert value_of(handle) == payload


def test_registered_handle_is_clean(
    store: BackingStore[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    tmp_path: Path,
    persist_dir: Path,
) -> None:
    """A registered item, once loaded, is evicted without being written again."""
    with open_store(tmp_path / "writer") as (writer, _):
        key = FBPool(writer, max_items=1).insert("clean").persist(writer.track_path(persist_dir))
    tracked.rescan()
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.register(tracked, key)
    assert handle is not None
    assert value_of(handle) == "clean"
    pool.insert("pushes it out")
    store.finished()
    assert not handle.resident
    assert counting.stored == []
    assert pool.statistics().evictions_clean == 1
    assert pool.statistics().evictions_dirty == 0


def test_register_twice_shares_one_cache_blob(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    tmp_path: Path,
    persist_dir: Path,
) -> None:
    """Two registrations share one cache blob, which goes when both handles are gone."""
    with open_store(tmp_path / "writer") as (writer, _):
        key = FBPool(writer, max_items=1).insert("shared").persist(writer.track_path(persist_dir))
    tracked.rescan()
    first, second = pool.register(tracked, key), pool.register(tracked, key.hex)
    assert first is not None
    assert second is not None
    assert first is not second
    assert store.refcount(key) == 2
    # Each registration asks the backend, which checks the location holds the key; the
    # second one finds the cache blob in place and links nothing.
    assert counting.kinds().count("register") == 2
    assert counting.blob_path(key).stat().st_nlink == 2  # one cache link + the persisted one
    first.close()
    store.finished()
    assert store.refcount(key) == 1
    assert counting.blob_path(key).exists()
    assert value_of(second) == "shared"
    second.close()
    store.finished()
    assert store.refcount(key) == 0
    assert not counting.blob_path(key).exists()
    assert counting.deleted == [key]
    assert blob(persist_dir, key).exists()  # the durable copy is not the cache's to delete


def test_register_accepts_every_spelling_of_a_key(
    store: BackingStore[Any], pool: FBPool[Any], tracked: TrackedPath
) -> None:
    """A UUID, its 32 hex digits, its hyphenated form and upper case all name the same key."""
    original = pool.insert("spelled")
    key = original.persist(tracked)
    handles = []
    for spelling in (key, key.hex, str(key), key.hex.upper()):
        handle = pool.register(tracked, spelling)
        assert handle is not None
        assert handle.key == key
        handles.append(handle)  # kept alive: a collected handle releases its reference
    assert store.refcount(key) == 5  # the original and four registrations
    assert not original.closed


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "",
        "g" * 32,
        "0" * 31,
        "0" * 33,
        "../" + "0" * 32,
        "00/" + "0" * 30,
        "0" * 32 + "\n",
        "{" + "0" * 32 + "}",
        "urn:uuid:" + str(uuid.UUID(int=0)),
    ],
)
def test_register_rejects_a_malformed_key_before_any_io(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting, cache_dir: Path, bad: str
) -> None:
    """A string that is not a key raises InvalidKeyError (a ValueError); no storage is touched."""
    before = listing(cache_dir)
    calls = list(counting.calls)
    with pytest.raises(InvalidKeyError) as info:
        pool.register(tracked, bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidKeyError):
        asyncio.run(pool.aregister(tracked, bad))
    with pytest.raises(InvalidKeyError):
        pool.store.delete_persisted(tracked, bad)
    assert counting.calls == calls
    assert listing(cache_dir) == before
    assert len(pool) == 0


@pytest.mark.parametrize("bad", [123, 1.5, None, b"0" * 32, uuid.UUID(int=1).int, ["x"]])
def test_register_rejects_a_key_that_is_not_a_string(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting, bad: Any
) -> None:
    """A key that is neither a UUID nor a string raises TypeError, touching nothing."""
    calls = list(counting.calls)
    with pytest.raises(TypeError):
        pool.register(tracked, bad)
    assert counting.calls == calls


def test_aregister_is_the_async_twin(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting
) -> None:
    """`aregister` returns a handle for a present key and None for an absent one."""
    key = pool.insert("async").persist(tracked)

    async def main() -> tuple[Fb[Any] | None, Fb[Any] | None]:
        return await pool.aregister(tracked, key), await pool.aregister(tracked, uuid.uuid4())

    present, absent = asyncio.run(main())
    assert present is not None
    assert present.key == key
    assert absent is None
    assert value_of(present) == "async"


def test_register_all_returns_every_key(tmp_path: Path, persist_dir: Path, cache_dir: Path) -> None:
    """`register_all` registers each key at the location (and no unknown name), unloaded."""
    with open_store(tmp_path / "writer") as (writer, _):
        wpool: FBPool[int] = FBPool(writer, max_items=8)
        wtracked = writer.track_path(persist_dir)
        values = {wpool.insert(i).persist(wtracked): i for i in range(5)}
    (persist_dir / "notes.txt").write_text("not an item", encoding="utf-8")
    with open_store(cache_dir) as (store, counting):
        tracked = store.track_path(persist_dir)
        pool: FBPool[int] = FBPool(store, max_items=8)
        handles = pool.register_all(tracked)
        assert set(handles) == set(values)
        assert counting.loaded == []
        assert {key: value_of(handle) for key, handle in handles.items()} == values
        assert all(handle.key == key for key, handle in handles.items())
        assert asyncio.run(pool.aregister_all(tracked)).keys() == values.keys()


def test_register_after_delete_persisted_returns_none(
    store: BackingStore[Any], pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """A key deleted from the location is not registrable, even while its item is alive."""
    handle = pool.insert("alive")
    key = handle.persist(tracked)
    store.delete_persisted(tracked, key)
    assert not blob(persist_dir, key).exists()
    assert pool.register(tracked, key) is None
    assert key not in tracked
    assert handle.persist(tracked) == key
    assert blob(persist_dir, key).exists()  # persisting again must really place it


# -- delete_persisted ----------------------------------------------------------------------


def test_delete_persisted_removes_the_blob_and_the_key(
    store: BackingStore[Any], pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """`delete_persisted` removes the blob; handles registered from it keep working."""
    original = pool.insert("doomed")
    key = original.persist(tracked)
    registered = pool.register(tracked, key)
    assert registered is not None
    store.fsync(tracked)
    store.delete_persisted(tracked, key.hex)
    assert key not in tracked
    assert not blob(persist_dir, key).exists()
    assert tracked.unsynced > 0  # the shard's directory entry changed
    store.fsync(tracked)
    assert tracked.unsynced == 0
    assert value_of(registered) == "doomed"
    store.delete_persisted(tracked, key)  # already gone: not an error
    assert value_of(original) == "doomed"
    assert store.track_path(persist_dir).keys() == frozenset()


# -- fsync ---------------------------------------------------------------------------------


def test_fsync_is_the_barrier_for_what_persist_changed(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """After persist paths wait for fsync; fsync syncs the new file, its shard and the root."""
    assert tracked.unsynced == 0
    key = pool.insert("durable").persist(tracked)
    assert tracked.unsynced > 0
    store.fsync(tracked)
    assert tracked.unsynced == 0
    assert counting.synced[-1] >= {
        str(blob(persist_dir, key)),
        str(persist_dir / key.hex[:2]),
        str(persist_dir),
    }
    store.fsync(tracked)  # nothing new: an empty barrier
    assert counting.synced[-1] == set()
    asyncio.run(pool.insert("async").apersist(tracked))
    assert tracked.unsynced > 0
    asyncio.run(store.afsync(tracked))
    assert tracked.unsynced == 0


def _events_between(lines: list[str], start: int, stop: int) -> list[list[str]]:
    return [json.loads(line[6:]) for line in lines[start:stop] if line.startswith("event ")]


def _index(lines: list[str], prefix: str, start: int = 0) -> int:
    return next(i for i, line in enumerate(lines) if i >= start and line.startswith(prefix))


@pytest.fixture(name="proc_fd")
def fixture_proc_fd() -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd: the child cannot name the descriptors it fsyncs")


@pytest.mark.usefixtures("proc_fd")
def test_fsync_reaches_the_new_files_and_their_directories(tmp_path: Path) -> None:
    """In a child process whose os.fsync is wrapped, every link is fsynced with its directories."""
    cache, persist = tmp_path / "cache", tmp_path / "persist"
    persist.mkdir()
    run = run_child(cache, persist, "--items", "3", "--size", "1000", "--trace", "--delete-one")
    assert run.returncode == 0, run.stderr
    lines = run.lines
    # The marker is fsynced under a temporary name before it is linked into place.
    events_all = _events_between(lines, 0, len(lines))
    marker_syncs = [
        e[1] for e in events_all if e[0] == "os.fsync" and e[1].startswith(str(persist / MARKER))
    ]
    assert marker_syncs
    assert all(
        re.fullmatch(re.escape(str(persist / MARKER)) + r"\.[0-9a-f]+\.tmp", p)
        for p in marker_syncs
    )
    assert (persist / MARKER).is_file()
    start = 0
    for key in run.persisted:
        done = _index(lines, f"persisted {run.persisted[key]} ", start)
        events = _events_between(lines, start, done)
        target = str(blob(persist, key))
        link = events.index(["os.link", str(blob(cache, key)), target])
        synced = [e[1] for e in events[link:] if e[0] == "os.fsync"]
        assert {target, str(persist / key.hex[:2]), str(persist)} <= set(synced), events
        start = done + 1
    (deleted,) = run.deleted
    events = _events_between(lines, start, _index(lines, "deleted ", start))
    unlink = events.index(["os.unlink", str(blob(persist, deleted))])
    assert ["os.fsync", str(persist / deleted.hex[:2])] in events[unlink:]


@pytest.mark.usefixtures("proc_fd")
def test_cross_device_copy_is_fsynced_before_its_rename(tmp_path: Path, shm_dir: Path) -> None:
    """A copy to another device is written and fsynced under a temporary name, then renamed."""
    cache = tmp_path / "cache"
    run = run_child(cache, shm_dir, "--items", "2", "--size", "100000", "--trace")
    assert run.returncode == 0, run.stderr
    lines = run.lines
    start = 0
    for key in run.persisted:
        done = _index(lines, f"persisted {run.persisted[key]} ", start)
        events = _events_between(lines, start, done)
        target = str(blob(shm_dir, key))
        assert ["!os.link", str(blob(cache, key)), target, "EXDEV"] in events
        assert not any(e[0] == "os.link" and e[-1] == target for e in events)
        (rename,) = [i for i, e in enumerate(events) if e[0] == "os.replace" and e[2] == target]
        tmp = events[rename][1]
        assert Path(tmp).parent == Path(target).parent
        assert Path(tmp).name.startswith(".")
        copied = events.index(["shutil.copyfileobj", str(blob(cache, key)), tmp])
        assert ["os.fsync", tmp] in events[copied:rename]
        synced = [e[1] for e in events[rename:] if e[0] == "os.fsync"]
        assert {target, str(shm_dir / key.hex[:2]), str(shm_dir)} <= set(synced)
        start = done + 1


# -- the save protocol ---------------------------------------------------------------------


def test_save_persists_commits_then_deletes_the_rest(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    tmp_path: Path,
    persist_dir: Path,
) -> None:
    """Save persists all, fsyncs, commits the keys in order, then deletes the keys left out."""
    manifest = tmp_path / "manifest.json"
    first = [pool.insert(f"v{i}") for i in range(3)]
    # One at a time into the fresh location: concurrent first persists race on the marker
    # (see test_concurrent_first_persists_claim_the_location_once).
    assert fb.save(
        first, tracked, lambda keys: write_manifest(manifest, keys), max_concurrency=1
    ) == [h.key for h in first]
    assert read_manifest(manifest) == [h.key for h in first]
    second = [first[2], pool.insert("v3")]
    seen: list[str] = []

    def commit(keys: list[UUID]) -> str:
        seen.extend(counting.kinds())
        assert tracked.unsynced == 0  # fsynced before the commit
        assert all(blob(persist_dir, key).exists() for key in [h.key for h in first])
        write_manifest(manifest, keys)
        return "committed"

    assert fb.save(second, tracked, commit, max_concurrency=2) == "committed"
    assert seen[-1] == "fsync"
    assert read_manifest(manifest) == [h.key for h in second]
    assert counting.kinds()[-1] == "fsync"  # the deletions were made durable too
    assert tracked.unsynced == 0
    assert tracked.keys() == {h.key for h in second}
    assert store.track_path(persist_dir).keys() == {h.key for h in second}
    assert value_of(first[0]) == "v0"  # deleting the durable copy does not touch the item


def test_save_with_a_failing_commit_deletes_nothing(
    pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """A commit that raises leaves the previous save whole, and the error reaches the caller."""
    manifest = tmp_path / "manifest.json"
    old = [pool.insert("a"), pool.insert("b")]
    fb.save(old, tracked, lambda keys: write_manifest(manifest, keys), max_concurrency=1)
    saved = listing(persist_dir)

    def commit(keys: list[UUID]) -> None:
        raise RuntimeError("the disk with the manifest is full")

    new = [pool.insert("c")]
    with pytest.raises(RuntimeError, match="disk with the manifest"):
        fb.save(new, tracked, commit)
    assert read_manifest(manifest) == [h.key for h in old]
    for key in read_manifest(manifest):
        assert blob(persist_dir, key).exists()
    assert {k: v for k, v in listing(persist_dir).items() if k in saved} == saved


def test_save_with_an_unpicklable_item_deletes_nothing(
    pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """An item that cannot be encoded fails its persist: no commit, nothing deleted."""
    manifest = tmp_path / "manifest.json"
    old = [pool.insert("a"), pool.insert("b")]
    fb.save(old, tracked, lambda keys: write_manifest(manifest, keys), max_concurrency=1)
    saved = listing(persist_dir)
    commits: list[list[UUID]] = []
    bad = pool.insert(threading.Lock())
    with pytest.raises(CodecError):
        fb.save([pool.insert("c"), bad], tracked, commits.append)
    assert commits == []
    assert read_manifest(manifest) == [h.key for h in old]
    assert {k: v for k, v in listing(persist_dir).items() if k in saved} == saved
    assert bad.key not in tracked
    assert not blob(persist_dir, bad.key).exists()


def test_save_of_nothing_commits_an_empty_list_and_deletes_every_key(
    pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """Saving no items commits [] and empties the location of keys."""
    keys = {pool.insert(i).persist(tracked) for i in range(2)}
    assert fb.save([], tracked, lambda keys: list(keys)) == []
    assert tracked.keys() == frozenset()
    assert not any(blob(persist_dir, key).exists() for key in keys)
    assert (persist_dir / MARKER).exists()


def test_asave_is_the_async_twin(pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path) -> None:
    """`asave` runs the same protocol and returns the commit's result."""
    manifest = tmp_path / "manifest.json"
    stale = pool.insert("stale").persist(tracked)  # also claims the location (see race test)
    items = [pool.insert("x"), pool.insert("y")]
    result = asyncio.run(fb.asave(items, tracked, lambda keys: write_manifest(manifest, keys)))
    assert result == [h.key for h in items]
    assert read_manifest(manifest) == result
    assert tracked.keys() == set(result)
    assert stale not in tracked


def test_save_bounds_its_concurrency(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting
) -> None:
    """At most ``max_concurrency`` persists run at once."""
    claimed = pool.insert("claims the location first")  # see the race test
    claimed.persist(tracked)
    counting.persist_threads.clear()
    items = [pool.insert(i) for i in range(4)]
    with persist_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        future = executor.submit(fb.save, items, tracked, list, max_concurrency=2)
        with counting.changed:
            assert counting.changed.wait_for(lambda: counting.active_persists == 2, TIMEOUT)
        gate.set()
        assert future.result(TIMEOUT) == [h.key for h in items]
    assert counting.peak_persists == 2
    assert len(counting.persist_threads) == 2


def test_save_rejects_a_concurrency_below_one(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting
) -> None:
    """``max_concurrency=0`` is an error raised before anything is persisted."""
    with pytest.raises(ValueError, match="max_concurrency"):
        fb.save([pool.insert("x")], tracked, list, max_concurrency=0)
    assert "persist" not in counting.kinds()


# -- locations fb must not write to --------------------------------------------------------


def test_persist_into_a_location_with_a_foreign_marker_raises(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """A marker fb did not write makes persist refuse the location, changing nothing."""
    (persist_dir / MARKER).write_bytes(b"somebody else's tool, format 7\n")
    before = listing(persist_dir)
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    with pytest.raises(ForeignLocationError, match="marker"):
        handle.persist(tracked)
    assert listing(persist_dir) == before
    assert tracked.keys() == frozenset()
    assert tracked.unsynced == 0


def test_persist_into_a_directory_in_use_raises_and_changes_nothing(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """A first persist refuses a non-empty directory without fb's marker, naming a culprit."""
    (persist_dir / "thesis.tex").write_text("years of work")
    before = listing(persist_dir)
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    with pytest.raises(ForeignLocationError, match=r"not empty .*thesis\.tex"):
        handle.persist(tracked)
    assert listing(persist_dir) == before
    assert tracked.keys() == frozenset()


def test_persist_into_a_directory_of_empty_shards_claims_it(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """Shard directories alone (say, from a persist that crashed early) are fb's own."""
    (persist_dir / "ab").mkdir()
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    key = handle.persist(tracked)
    assert (persist_dir / MARKER).is_file()
    assert (persist_dir / key.hex[:2] / key.hex).is_file()


def test_persist_into_another_store_cache_directory_raises(
    store: BackingStore[Any], pool: FBPool[Any], tmp_path: Path
) -> None:
    """The cache directory of another store (it holds ``.fb-lock``) is not a durable location."""
    with open_store(tmp_path / "other-cache") as (other, _):
        other_cache = Path(other.strategy.inner.path.root)  # type: ignore[attr-defined]
        assert (other_cache / ".fb-lock").exists()
        before = listing(other_cache)
        tracked = store.track_path(other_cache)
        with pytest.raises(ForeignLocationError, match="cache directory"):
            pool.insert("x").persist(tracked)
        assert listing(other_cache) == before
        assert tracked.keys() == frozenset()


def _can_create_in(path: Path) -> bool:
    """Whether a file can be created in ``path`` right now (the probe leaves nothing)."""
    probe = path / ".fb-test-probe"
    try:
        probe.touch(exist_ok=False)
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture(name="make_read_only")
def fixture_make_read_only() -> Iterator[Callable[[Path], None]]:
    """Make a directory tree read-only for real: mode 0o500, or a read-only bind mount as root."""
    undo: list[Callable[[], object]] = []

    def make(path: Path) -> None:
        directories = [p for p in path.rglob("*") if p.is_dir()]
        for directory in [path, *directories]:
            directory.chmod(0o500)
            undo.append(functools.partial(directory.chmod, 0o700))
        if not _can_create_in(path):
            return
        # Permissions are not enforced (root, CAP_DAC_OVERRIDE): try a read-only bind mount.
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("directory permissions are not enforced and mount is unavailable")
        bound = subprocess.run(
            ["mount", "--bind", str(path), str(path)], capture_output=True, check=False
        )
        if bound.returncode != 0:
            pytest.skip(f"permissions are not enforced and bind mounts fail: {bound.stderr!r}")
        undo.append(
            lambda: subprocess.run(["umount", "-l", str(path)], capture_output=True, check=True)
        )
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, check=False
        )
        if remount.returncode != 0 or _can_create_in(path):
            pytest.skip("cannot make a read-only bind mount here")

    yield make
    for step in reversed(undo):
        step()


def test_persist_into_a_read_only_location_changes_nothing(
    store: BackingStore[Any],
    pool: FBPool[Any],
    counting: PersistCounting,
    persist_dir: Path,
    make_read_only: Callable[[Path], None],
) -> None:
    """A location that cannot be written raises an OSError naming it, and nothing changes."""
    make_read_only(persist_dir)
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    with pytest.raises(OSError, match=str(persist_dir)) as info:
        handle.persist(tracked)
    assert info.value.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    assert listing(persist_dir) == {}
    assert tracked.keys() == frozenset()
    assert tracked.unsynced == 0
    assert store.refcount(handle.key) == 1  # persist gave its reference back
    assert value_of(handle) == "x"


def test_persist_into_a_location_made_read_only_later_changes_nothing(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
    make_read_only: Callable[[Path], None],
) -> None:
    """Once fb's location turned read-only, persist raises and the blobs there stay as they are."""
    kept = pool.insert("kept").persist(tracked)
    store.fsync(tracked)
    make_read_only(persist_dir)
    before = listing(persist_dir)
    handle = pool.insert("refused")
    with pytest.raises(OSError, match=str(persist_dir)):
        handle.persist(tracked)
    with pytest.raises(OSError, match=str(persist_dir)):
        store.delete_persisted(tracked, kept)
    assert listing(persist_dir) == before
    assert tracked.keys() == {kept}
    assert tracked.unsynced == 0
    assert store.refcount(handle.key) == 1
    assert counting.blob_path(handle.key).exists()


def test_persist_into_a_removed_location_raises_file_not_found(
    store: BackingStore[Any], pool: FBPool[Any], tmp_path: Path
) -> None:
    """A location removed after it was tracked makes persist raise FileNotFoundError naming it."""
    location = tmp_path / "vanishing"
    location.mkdir()
    tracked = store.track_path(location)
    location.rmdir()
    with pytest.raises(FileNotFoundError, match=str(location)):
        pool.insert("x").persist(tracked)
    assert not location.exists()


def test_persist_into_a_claimed_location_removed_since_raises_file_not_found(
    store: BackingStore[Any], pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """A location removed after this store persisted there is not silently recreated."""
    pool.insert("first").persist(tracked)
    shutil.rmtree(persist_dir)
    with pytest.raises(FileNotFoundError, match=str(persist_dir)):
        pool.insert("second").persist(tracked)
    assert not persist_dir.exists()
