"""FBPool: insert, eviction, item and byte budgets, and a model-based check of the values."""

from __future__ import annotations

import gc
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fb import BackingStore, Fb, FBPool, default_sizeof
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.conftest import TIMEOUT, CountingStore, value_of

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


def test_value_larger_than_the_budget_does_not_evict_the_others(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A value that alone exceeds max_bytes is written and dropped; the others stay."""
    pool: FBPool[bytes] = FBPool(store, max_bytes=100)
    small = [pool.insert(bytes(10)) for _ in range(8)]
    big = pool.insert(bytes(150))
    store.finished()
    assert counting.stored == [big.key]
    assert all(handle.resident for handle in small)
    assert not big.resident
    assert pool.statistics().resident_bytes == 80


def test_loading_a_value_larger_than_the_budget_does_not_evict_the_others(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """Reading back an oversize value hands it over, then drops it; the others stay."""
    pool: FBPool[bytes] = FBPool(store, max_bytes=100)
    big = pool.insert(bytes(150))
    store.finished()
    small = [pool.insert(bytes(10)) for _ in range(8)]
    assert value_of(big) == bytes(150)
    store.finished()
    assert counting.stored == [big.key]
    assert all(handle.resident for handle in small)
    assert not big.resident
    assert pool.statistics().resident_bytes == 80


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
