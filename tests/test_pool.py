"""FBPool: the crate's semantics (insert, eviction, guards, two-segment LRU) and budgets."""

from __future__ import annotations

import gc
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fb import BackingStore, Fb, FBPool, PoolStatistics, default_sizeof
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import HandleClosedError, StoreClosedError
from tests.conftest import TIMEOUT, CountingStore


def value_of(handle: Fb[Any]) -> Any:
    """Load ``handle`` and return its value."""
    with handle.load() as value:
        return value


# -- insert and plain loads ----------------------------------------------------------------


def test_insert_does_no_io(store: BackingStore[Any], counting: CountingStore) -> None:
    """Inserting within the budget touches no storage and gives fresh random UUID keys."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    first, second = pool.insert("a"), pool.insert("b")
    store.finished()
    assert counting.io_calls == 0
    assert isinstance(first.key, uuid.UUID)
    assert first.key.version == 4
    assert first.key != second.key
    assert pool.order() == [second.key, first.key]
    assert len(pool) == 2
    assert first.resident
    assert second.resident


def test_insert_past_capacity_never_waits_for_the_write(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """The eviction write an insert causes runs in the background, not in the caller."""
    counting.store_gate = gate = threading.Event()
    pool: FBPool[str] = FBPool(store, max_items=0)
    handle = pool.insert("x")  # would raise GateTimeoutError if it wrote in this thread
    assert counting.store_started.wait(TIMEOUT)
    assert handle.resident
    gate.set()
    store.finished()
    assert counting.stored == [handle.key]
    assert not handle.resident


def test_cached_load_does_no_io(store: BackingStore[Any], counting: CountingStore) -> None:
    """Loading a resident value is a hit: no storage call."""
    pool: FBPool[list[int]] = FBPool(store, max_items=2)
    handle = pool.insert([1, 2])
    with handle.load() as value:
        assert value == [1, 2]
    store.finished()
    assert counting.io_calls == 0
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.loads) == (1, 0, 0)


# -- eviction --------------------------------------------------------------------------------


def test_eviction_writes_exactly_the_pushed_out_item(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """One push past capacity writes the least recent item, and only that one."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    first, second, third = pool.insert("a"), pool.insert("b"), pool.insert("c")
    store.finished()
    assert counting.stored == [first.key]
    assert counting.blob_path(first.key).is_file()
    assert (first.resident, second.resident, third.resident) == (False, True, True)
    stats = pool.statistics()
    assert (stats.stores, stats.evictions_dirty, stats.loads, stats.misses) == (1, 1, 0, 0)
    assert stats.bytes_written == counting.blob_path(first.key).stat().st_size
    # Loading the first item pushes the next least recent one out: it alone is written,
    # as in the crate's own test (store: 2 after the reload).
    assert value_of(first) == "a"
    store.finished()
    assert counting.loaded == [first.key]
    assert counting.stored == [first.key, second.key]
    stats = pool.statistics()
    assert (stats.stores, stats.evictions_dirty, stats.loads, stats.misses) == (2, 2, 1, 1)


def test_exactly_one_item_offered_per_push(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """Every insert past max_items writes exactly one more blob: the oldest resident item."""
    pool: FBPool[int] = FBPool(store, max_items=3)
    handles = [pool.insert(i) for i in range(3)]
    store.finished()
    assert counting.stored == []
    for i in range(3, 10):
        handles.append(pool.insert(i))
        store.finished()
        assert counting.stored == [h.key for h in handles[: i - 2]]
    assert [h.resident for h in handles] == [False] * 7 + [True] * 3


def test_clean_re_eviction_does_not_rewrite(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """An item loaded back from its blob and pushed out again is dropped without a write."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    second = pool.insert("b")
    store.finished()
    assert counting.stored == [first.key]
    assert value_of(first) == "a"  # moves first to the front, pushing second out
    store.finished()
    assert counting.stored == [first.key, second.key]
    other = pool.insert("c")
    store.finished()
    assert counting.stored == [first.key, second.key]
    assert not first.resident
    assert other.resident
    assert pool.statistics().evictions_clean == 1
    assert value_of(first) == "a"


def test_close_deletes_each_blob_once(store: BackingStore[Any], counting: CountingStore) -> None:
    """Closing handles deletes every blob they wrote exactly once, and nothing else."""
    pool: FBPool[int] = FBPool(store, max_items=1)
    handles = [pool.insert(i) for i in range(5)]
    store.finished()
    written = list(counting.stored)
    assert written == [h.key for h in handles[:4]]
    for handle in handles:
        handle.close()
        handle.close()
    with handles[0]:
        pass
    del handles
    gc.collect()
    store.finished()
    assert counting.delete_counts() == Counter(written)
    assert not any(counting.blob_path(key).exists() for key in written)
    assert len(pool) == 0


def test_max_items_zero_writes_through_and_drops(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """max_items=0 writes each item at once and keeps nothing resident after its guard goes."""
    pool: FBPool[str] = FBPool(store, max_items=0)
    handle = pool.insert("x")
    store.finished()
    assert counting.stored == [handle.key]
    assert not handle.resident
    with handle.load() as value:
        assert (value, handle.resident) == ("x", True)
    assert not handle.resident
    store.finished()
    assert counting.stored == [handle.key]
    assert counting.loaded == [handle.key]
    stats = pool.statistics()
    assert (stats.evictions_dirty, stats.evictions_clean, stats.resident_items) == (1, 1, 0)


def test_max_items_one_keeps_one(store: BackingStore[Any], counting: CountingStore) -> None:
    """max_items=1 keeps the newest item resident and writes the previous one."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    store.finished()
    assert counting.stored == []
    assert first.resident
    second = pool.insert("b")
    store.finished()
    assert counting.stored == [first.key]
    assert (first.resident, second.resident) == (False, True)


def test_lru_order_in_both_segments(store: BackingStore[Any], counting: CountingStore) -> None:
    """Hits in the front half do not move; hits in the back half move to the front."""
    pool: FBPool[str] = FBPool(store, max_items=4)
    a, b, c, d = (pool.insert(v) for v in "abcd")
    assert pool.order() == [d.key, c.key, b.key, a.key]
    assert value_of(c) == "c"  # position 1 of 4: front half
    assert pool.order() == [d.key, c.key, b.key, a.key]
    assert value_of(a) == "a"  # position 3 of 4: back half
    assert pool.order() == [a.key, d.key, c.key, b.key]
    assert value_of(b) == "b"
    assert pool.order() == [b.key, a.key, d.key, c.key]
    assert b.try_load() is not None
    store.finished()
    assert counting.io_calls == 0


def test_loading_a_cold_item_moves_it_first_and_pushes_one_out(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A miss moves the item to the front, which pushes exactly one other item out."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    a, b, c = (pool.insert(v) for v in "abc")
    store.finished()
    assert value_of(a) == "a"
    store.finished()
    assert pool.order() == [a.key, c.key, b.key]
    assert counting.stored == [a.key, b.key]
    assert (a.resident, b.resident, c.resident) == (True, False, True)


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


# -- byte budgets ------------------------------------------------------------------------------


def test_byte_budget_with_default_sizeof(store: BackingStore[Any], counting: CountingStore) -> None:
    """max_bytes with the default sizeof evicts by the bytes of the values."""
    pool: FBPool[bytes] = FBPool(store, max_bytes=100)
    assert pool.sizeof is default_sizeof
    a, b = pool.insert(bytes(40)), pool.insert(bytes(40))
    store.finished()
    assert counting.stored == []
    assert pool.statistics().resident_bytes == 80
    c = pool.insert(bytes(40))
    store.finished()
    assert counting.stored == [a.key]
    assert (a.resident, b.resident, c.resident) == (False, True, True)
    assert pool.statistics().resident_bytes == 80


def test_byte_budget_with_custom_sizeof(store: BackingStore[Any], counting: CountingStore) -> None:
    """A custom sizeof decides the weights the byte budget counts."""
    measured: list[str] = []

    def weigh(value: str) -> int:
        measured.append(value)
        return 10 * len(value)

    pool: FBPool[str] = FBPool(store, max_bytes=50, sizeof=weigh)
    a = pool.insert("aa")
    b = pool.insert("bbb")
    store.finished()
    assert counting.stored == []
    assert pool.statistics().resident_bytes == 50
    assert measured == ["aa", "bbb"]
    c = pool.insert("c")
    store.finished()
    assert counting.stored == [a.key]
    assert (a.resident, b.resident, c.resident) == (False, True, True)
    assert pool.statistics().resident_bytes == 40


def test_both_budgets_together(store: BackingStore[Any], counting: CountingStore) -> None:
    """With max_items and max_bytes, whichever is exceeded first decides the eviction."""
    pool: FBPool[bytes] = FBPool(store, max_items=3, max_bytes=100)
    small = [pool.insert(bytes(1)) for _ in range(4)]
    store.finished()
    assert counting.stored == [small[0].key]  # the item budget
    big = pool.insert(bytes(99))
    store.finished()
    assert counting.stored == [h.key for h in small[:3]]  # the byte budget
    assert big.resident
    assert small[3].resident
    assert pool.statistics().resident_bytes == 100


def test_growing_value_through_write_guard_evicts_others(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A value that grows under a write guard is measured again on release."""
    pool: FBPool[bytes] = FBPool(store, max_bytes=100)
    a, b = pool.insert(bytes(10)), pool.insert(bytes(10))
    with b.load_mut() as guard:
        guard.value = bytes(95)
    store.finished()
    assert counting.stored == [a.key]
    assert pool.statistics().resident_bytes == 95
    assert b.resident


def test_loaded_value_counts_against_byte_budget(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A value loaded back is measured and can push other items out."""
    pool: FBPool[bytes] = FBPool(store, max_bytes=100)
    a = pool.insert(bytes(60))
    b = pool.insert(bytes(60))
    store.finished()
    assert counting.stored == [a.key]
    assert value_of(a) == bytes(60)
    store.finished()
    assert counting.stored == [a.key, b.key]
    stats = pool.statistics()
    assert (stats.resident_bytes, stats.bytes_loaded) == (60, 60)


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


# -- pool lifecycle and validation ------------------------------------------------------------


def test_pool_close_closes_every_item(store: BackingStore[Any], counting: CountingStore) -> None:
    """pool.close() releases every item and deletes their blobs; it is idempotent."""
    with FBPool(store, max_items=1) as pool:
        handles = [pool.insert(i) for i in range(3)]
        store.finished()
    pool.close()
    store.finished()
    assert len(pool) == 0
    assert all(h.closed for h in handles)
    assert sorted(counting.deleted) == sorted(counting.stored)
    assert len(counting.stored) == 2
    stats = pool.statistics()
    assert (stats.items, stats.resident_items, stats.resident_bytes) == (0, 0, 0)


def test_insert_into_closed_store_fails(counting: CountingStore) -> None:
    """A pool whose store was closed refuses inserts, loads and writes."""
    store: BackingStore[Any] = BackingStore(counting)
    pool: FBPool[int] = FBPool(store, max_items=2)
    handle = pool.insert(1)
    store.close()
    with pytest.raises(StoreClosedError):
        pool.insert(2)
    with pytest.raises(StoreClosedError):
        handle.load()
    with pytest.raises(StoreClosedError):
        handle.write_now()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"max_items": -1}, ValueError),
        ({"max_bytes": -1}, ValueError),
        ({"max_items": True}, TypeError),
        ({"max_items": 1.5}, TypeError),
        ({"max_items": 1, "sizeof": 3}, TypeError),
    ],
)
def test_invalid_configuration_is_refused(
    store: BackingStore[Any], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """A pool needs a budget of non-negative ints and a callable sizeof."""
    with pytest.raises(error):
        FBPool(store, **kwargs)


def test_pool_needs_a_backing_store(counting: CountingStore) -> None:
    """Passing a strategy instead of a BackingStore is a TypeError."""
    with pytest.raises(TypeError):
        FBPool(counting, max_items=1)  # type: ignore[arg-type]


def test_bad_sizeof_result_is_refused(store: BackingStore[Any]) -> None:
    """A sizeof returning something other than an int >= 0 fails the insert."""
    pool: FBPool[int] = FBPool(store, max_bytes=10, sizeof=lambda _: -1)
    with pytest.raises(TypeError, match="sizeof"):
        pool.insert(1)
    assert len(pool) == 0


def test_statistics_is_a_frozen_snapshot(store: BackingStore[Any]) -> None:
    """statistics() returns a PoolStatistics that later activity does not change."""
    pool: FBPool[int] = FBPool(store, max_items=1)
    before = pool.statistics()
    assert isinstance(before, PoolStatistics)
    handle = pool.insert(1)
    value_of(handle)
    assert before.items == 0
    after = pool.statistics()
    assert (after.items, after.hits, after.hit_ratio) == (1, 1, 1.0)
    assert before.hit_ratio == 0.0
    assert "FBPool" in repr(pool)


# -- model-based -------------------------------------------------------------------------------


class PoolMachine(RuleBasedStateMachine):
    """Whatever the capacity and operations, every live handle loads its last written value."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.store: BackingStore[Any] = BackingStore(FBStore(PickleCodec(), PreparedPath(root)))
        self.pool: FBPool[int] | None = None
        self.handles: list[Fb[int]] = []
        self.values: list[int] = []

    @precondition(lambda self: self.pool is None)
    @rule(max_items=st.integers(min_value=0, max_value=4))
    def make_pool(self, max_items: int) -> None:
        self.pool = FBPool(self.store, max_items=max_items)

    @precondition(lambda self: self.pool is not None)
    @rule(value=st.integers())
    def insert(self, value: int) -> None:
        assert self.pool is not None
        self.handles.append(self.pool.insert(value))
        self.values.append(value)

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0), value=st.integers())
    def replace(self, index: int, value: int) -> None:
        index %= len(self.handles)
        with self.handles[index].load_mut() as guard:
            guard.value = value
        self.values[index] = value

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def load(self, index: int) -> None:
        index %= len(self.handles)
        assert value_of(self.handles[index]) == self.values[index]

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def close(self, index: int) -> None:
        index %= len(self.handles)
        self.handles.pop(index).close()
        self.values.pop(index)

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def write_now(self, index: int) -> None:
        self.handles[index % len(self.handles)].write_now()

    @invariant()
    def within_budget(self) -> None:
        pool = self.pool
        if pool is not None and pool.max_items is not None:
            self.store.finished()
            assert pool.statistics().resident_items <= pool.max_items
            assert len(pool) == len(self.handles)

    def teardown(self) -> None:
        try:
            for index, handle in enumerate(self.handles):
                assert value_of(handle) == self.values[index]
            for handle in self.handles:
                handle.close()
            self.store.finished()
            left = [path for path in self.root.glob("??/*") if path.is_file()]
            assert left == [], "every blob is deleted once its handle is closed"
        finally:
            self.store.close()


def test_every_handle_loads_its_last_value(tmp_path: Path) -> None:
    """Model-based: any sequence of inserts, replaces, loads, writes and closes keeps values."""
    root = tmp_path / "cache"

    class OnRoot(PoolMachine):
        def __init__(self) -> None:
            super().__init__(root)  # one directory for every example: it is swept on open

    run_state_machine_as_test(
        OnRoot, settings=settings(max_examples=25, stateful_step_count=20, deadline=None)
    )
