"""FBPool guards: write guards, pins, eviction writes in flight, and threads sharing items."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fb import BackingStore, FBPool
from fb.exceptions import HandleClosedError
from tests.conftest import TIMEOUT, CountingStore, value_of

# -- write guards ----------------------------------------------------------------------------


def test_write_guard_changes_key_and_deletes_old_blob(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """Taking a write guard draws a new key; the old blob is deleted; the new value is kept."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("old")
    other = pool.insert("other")
    store.finished()
    assert other.resident
    old_key = handle.key
    assert counting.blob_path(old_key).is_file()
    with handle.load_mut() as guard:
        assert guard.value == "old"
        guard.value = "new"
        assert handle.key != old_key
    store.finished()
    assert counting.deleted == [old_key]
    assert not counting.blob_path(old_key).exists()
    assert not counting.blob_path(handle.key).exists()
    assert value_of(handle) == "new"


def test_replaced_value_is_written_under_the_new_key(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A value replaced through ``guard.value`` is what gets written back and read again."""
    pool: FBPool[dict[str, int]] = FBPool(store, max_items=1)
    handle = pool.insert({"v": 1})
    with handle.load_mut() as guard:
        guard.value = {"v": 2}
    new_key = handle.key
    other = pool.insert({"v": 0})
    store.finished()
    assert counting.stored == [new_key]
    assert not handle.resident
    assert other.resident
    assert value_of(handle) == {"v": 2}


def test_value_mutated_in_place_through_guard(store: BackingStore[Any]) -> None:
    """Mutating the value through a write guard changes what later loads see."""
    pool: FBPool[list[int]] = FBPool(store, max_items=1)
    handle = pool.insert([1])
    with handle.load_mut() as guard:
        guard.value.append(2)
    other = pool.insert([])
    store.finished()
    assert not handle.resident
    assert value_of(handle) == [1, 2]
    assert value_of(other) == []


def test_write_guard_on_clean_item_forgets_its_blob(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """After a write guard, a previously clean item is dirty again and is rewritten."""
    pool: FBPool[int] = FBPool(store, max_items=1)
    handle = pool.insert(1)
    handle.write_now()
    first_key = handle.key
    with handle.load_mut() as guard:
        guard.value = 2
    other = pool.insert(0)
    store.finished()
    assert other.resident
    assert counting.stored == [first_key, handle.key]
    assert counting.deleted == [first_key]
    assert value_of(handle) == 2


# -- pins --------------------------------------------------------------------------------------


def test_pinned_item_is_written_after_guard_release(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """An item pushed out while a read guard pins it is written once the guard goes."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    guard = handle.load()
    other = pool.insert("b")
    store.finished()
    assert counting.stored == []
    assert handle.resident
    assert pool.order() == [other.key, handle.key]
    guard.release()
    store.finished()
    assert counting.stored == [handle.key]
    assert not handle.resident


def test_write_pinned_item_is_written_after_release(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """An item pushed out while a write guard holds it is written under its new key after."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    with handle.load_mut() as guard:
        other = pool.insert("b")
        store.finished()
        assert counting.stored == []
        assert other.resident
        guard.value = "A"
    store.finished()
    assert counting.stored == [handle.key]
    assert not handle.resident
    assert value_of(handle) == "A"


def test_item_with_two_readers_waits_for_the_last(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """The re-offer happens when the last of several guards is released, not before."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    one, two = handle.load(), handle.load()
    other = pool.insert("b")
    assert other.resident
    one.release()
    store.finished()
    assert counting.stored == []
    two.release()
    store.finished()
    assert counting.stored == [handle.key]


# -- eviction writes in flight -----------------------------------------------------------------


def test_try_load_fails_during_eviction_write(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """While an eviction write is in flight, try_load answers None but the value is resident."""
    counting.store_gate = gate = threading.Event()
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    second = pool.insert("b")
    assert counting.store_started.wait(TIMEOUT)
    assert first.resident
    assert first.try_load() is None
    assert first.try_load_mut() is None
    guard = second.try_load()
    assert guard is not None
    with guard as value:
        assert value == "b"
    gate.set()
    store.finished()
    assert (first.resident, first.try_load()) == (False, None)
    assert counting.loaded == []


def test_close_during_eviction_write_writes_then_deletes(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A handle closed while its eviction write is in flight: the write ends, then the delete."""
    counting.store_gate = gate = threading.Event()
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    other = pool.insert("b")
    assert counting.store_started.wait(TIMEOUT)
    first.close()
    assert pool.order() == [other.key]
    assert first.closed
    gate.set()
    store.finished()
    assert counting.events == [("store", first.key), ("delete", first.key)]
    assert not counting.blob_path(first.key).exists()
    assert len(pool) == 1
    with pytest.raises(HandleClosedError):
        first.load()


def test_load_during_eviction_write_keeps_the_value(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A load while the item is being written returns the value and keeps it resident."""
    counting.store_gate = gate = threading.Event()
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    other = pool.insert("b")
    assert counting.store_started.wait(TIMEOUT)
    assert other.resident
    with ThreadPoolExecutor(1) as executor:
        loaded = executor.submit(value_of, first)
        gate.set()
        assert loaded.result(TIMEOUT) == "a"
    store.finished()
    assert counting.loaded == []
    assert first.resident
    assert pool.order()[0] == first.key


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_loads_from_threads_load_once(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """Many threads loading one stored item read its blob once and all see the value."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("shared")
    other = pool.insert("other")
    store.finished()
    assert not handle.resident
    assert other.resident
    counting.load_gate = gate = threading.Event()
    threads = 8
    barrier = threading.Barrier(threads + 1, timeout=TIMEOUT)

    def worker() -> str:
        barrier.wait()
        return value_of(handle)  # type: ignore[no-any-return]

    with ThreadPoolExecutor(threads) as executor:
        futures = [executor.submit(worker) for _ in range(threads)]
        barrier.wait()
        assert counting.load_started.wait(TIMEOUT)
        gate.set()
        results = [f.result(TIMEOUT) for f in futures]
    assert results == ["shared"] * threads
    assert counting.loaded == [handle.key]
    stats = pool.statistics()
    assert stats.loads == 1
    assert stats.hits + stats.misses == threads


def test_concurrent_write_guards_apply_every_update(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """Write guards from many threads take turns: one load, and no update is lost."""
    pool: FBPool[int] = FBPool(store, max_items=1)
    handle = pool.insert(0)
    other = pool.insert(-1)
    store.finished()
    assert other.resident
    threads = 8
    barrier = threading.Barrier(threads, timeout=TIMEOUT)

    def bump() -> None:
        barrier.wait()
        with handle.load_mut() as guard:
            guard.value += 1

    with ThreadPoolExecutor(threads) as executor:
        for future in [executor.submit(bump) for _ in range(threads)]:
            future.result(TIMEOUT)
    assert value_of(handle) == threads
    assert counting.loaded.count(counting.loaded[0]) == 1
    assert len(counting.loaded) == 1


def test_write_guard_during_eviction_write(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A write guard asked for during an eviction write waits for it, then drops that blob."""
    counting.store_gate = gate = threading.Event()
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    other = pool.insert("b")
    assert counting.store_started.wait(TIMEOUT)
    old_key = first.key

    def replace() -> None:
        with first.load_mut() as guard:
            guard.value = "A"

    with ThreadPoolExecutor(1) as executor:
        replacing = executor.submit(replace)
        gate.set()
        replacing.result(TIMEOUT)
    store.finished()
    assert first.key != old_key
    assert old_key in counting.stored
    assert counting.deleted == [old_key]
    assert not counting.blob_path(old_key).exists()
    assert value_of(first) == "A"
    assert counting.loaded == []
    assert other.key in counting.stored  # the move to the front pushed it out


def test_failing_sizeof_on_release_gives_the_guard_back(store: BackingStore[Any]) -> None:
    """If sizeof fails on a value set through a write guard, the error surfaces, the pin goes."""

    def weigh(value: object) -> int:
        if value == "bad":
            raise ValueError("cannot weigh")
        return 1

    pool: FBPool[str] = FBPool(store, max_bytes=10, sizeof=weigh)
    handle = pool.insert("good")
    with pytest.raises(ValueError, match="cannot weigh"), handle.load_mut() as guard:
        guard.value = "bad"
    guard_again = handle.try_load_mut()
    assert guard_again is not None
    with guard_again:
        guard_again.value = "fine"
    assert value_of(handle) == "fine"
