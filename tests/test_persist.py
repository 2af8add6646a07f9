"""Persist: placing an item's blob in a tracked location, alone and against concurrent use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, FBPool, TrackedPath
from fb.exceptions import HandleClosedError
from tests.conftest import TIMEOUT, value_of
from tests.persist_helpers import (
    MARKER,
    PersistCounting,
    blob,
    cache_files,
    fixture_counting,  # noqa: F401 - a fixture, found by name
    fixture_pool,  # noqa: F401 - a fixture, found by name
    fixture_tracked,  # noqa: F401 - a fixture, found by name
    listing,
    open_store,
    persist_gate,
    store_gate,
)

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
    assert store._refcount(key) == 1  # persist's own reference was given back


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
    assert store._refcount(key) == 0
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
