"""Register: handles for keys persisted at a tracked location, and delete_persisted."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, Fb, FBPool, TrackedPath
from fb.exceptions import InvalidKeyError
from tests.conftest import value_of
from tests.persist_helpers import (
    PersistCounting,
    blob,
    cache_files,
    fixture_counting,  # noqa: F401 - a fixture, found by name
    fixture_pool,  # noqa: F401 - a fixture, found by name
    fixture_tracked,  # noqa: F401 - a fixture, found by name
    listing,
    open_store,
)

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
    assert store._refcount(key) == 2
    # Each registration asks the backend, which checks the location holds the key; the
    # second one finds the cache blob in place and links nothing.
    assert counting.kinds().count("register") == 2
    assert counting.blob_path(key).stat().st_nlink == 2  # one cache link + the persisted one
    first.close()
    store.finished()
    assert store._refcount(key) == 1
    assert counting.blob_path(key).exists()
    assert value_of(second) == "shared"
    second.close()
    store.finished()
    assert store._refcount(key) == 0
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
    assert store._refcount(key) == 5  # the original and four registrations
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
