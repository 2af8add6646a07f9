"""Write early: a dirty value's write starts in the background soon after insert."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.testing.faults import EIO, FaultyStrategy
from tests.conftest import TIMEOUT, CountingStore


def test_an_inserted_value_is_written_without_being_evicted(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """With write="early" an insert's value reaches storage and stays resident."""
    pool: FBPool[str] = FBPool(store, max_items=4, write="early")
    handle = pool.insert("early")
    store.finished(TIMEOUT)
    assert counting.stored == [handle.key]
    assert handle.resident
    assert counting.blob_path(handle.key).exists()
    assert pool.statistics().pending_bytes == 0


def test_on_evict_writes_nothing_before_eviction(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """With write="on_evict" nothing is written while the value fits the budget."""
    pool: FBPool[str] = FBPool(store, max_items=4, write="on_evict")
    pool.insert("late")
    store.finished(TIMEOUT)
    assert counting.stored == []


def test_eviction_finds_an_early_written_value_clean(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A value written early leaves memory without a second write when it is evicted."""
    pool: FBPool[int] = FBPool(store, max_items=2, write="early")
    first = pool.insert(1)
    store.finished(TIMEOUT)
    pool.insert(2)
    pool.insert(3)
    store.finished(TIMEOUT)
    assert not first.resident
    assert counting.stored.count(first.key) == 1
    assert pool.statistics().evictions_clean >= 1
    with first.load() as value:
        assert value == 1


def test_early_writes_count_against_max_pending_bytes(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """An insert waits while early writes hold more than max_pending_bytes."""
    pool: FBPool[bytes] = FBPool(
        store, max_items=100, write="early", max_pending_bytes=10, sizeof=len
    )
    counting.store_gate = gate = threading.Event()
    pool.insert(b"x" * 20)
    assert counting.store_started.wait(TIMEOUT)
    assert pool.statistics().pending_bytes == 20
    inserted = threading.Event()

    def produce() -> None:
        pool.insert(b"y")
        inserted.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not inserted.wait(0.2)  # held back (a bounded look, not synchronisation)
    gate.set()
    assert inserted.wait(TIMEOUT)
    producer.join(TIMEOUT)
    store.finished(TIMEOUT)
    assert pool.statistics().pending_bytes == 0
    assert pool.statistics().insert_waits >= 1


def test_a_handle_closed_before_its_write_starts_is_never_written(tmp_path: Path) -> None:
    """A queued early write of a handle closed meanwhile does no I/O."""
    counting = CountingStore(FBStore(PickleCodec(), PreparedPath(tmp_path)))
    with BackingStore(counting, max_workers=1) as store:
        pool: FBPool[str] = FBPool(store, max_items=10, write="early")
        counting.store_gate = gate = threading.Event()
        first = pool.insert("first")
        assert counting.store_started.wait(TIMEOUT)
        second = pool.insert("second")  # queued behind the gated write
        second.close()
        gate.set()
        store.finished(TIMEOUT)
        assert counting.stored == [first.key]
        assert pool.statistics().pending_bytes == 0
        assert pool.statistics().pending_writes == 0


def test_a_write_guard_during_an_early_write_leaves_no_stale_blob(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A value rewritten while its early write runs: the old key's blob is deleted."""
    pool: FBPool[str] = FBPool(store, max_items=10, write="early")
    counting.store_gate = gate = threading.Event()
    handle = pool.insert("old")
    old_key = handle.key
    assert counting.store_started.wait(TIMEOUT)
    with handle.load_mut(timeout=TIMEOUT) as guard:  # does not wait for the write
        guard.value = "new"
    assert handle.key != old_key
    gate.set()
    store.finished(TIMEOUT)
    assert not counting.blob_path(old_key).exists()
    assert counting.blob_path(handle.key).exists()  # the new value was written early too
    assert pool.statistics().pending_bytes == 0
    handle.evict()
    with handle.load() as value:
        assert value == "new"


def test_write_option_is_checked(store: BackingStore[Any]) -> None:
    """An unknown write mode is a ValueError naming it."""
    with pytest.raises(ValueError, match="sometimes"):
        FBPool(store, max_items=1, write="sometimes")  # type: ignore[arg-type]


def test_default_write_mode_depends_on_the_store(tmp_path: Path) -> None:
    """Local disk writes early by default; a store without a local path on eviction."""
    with BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "a"))) as store:
        assert FBPool(store, max_items=1).write == "early"
    with BackingStore(FBStore(PickleCodec(), PreparedPath("memory://wep"))) as store:
        assert FBPool(store, max_items=1).write == "on_evict"


def test_a_failed_early_write_is_reported_and_the_value_kept(cache_dir: Path) -> None:
    """An early write that fails reaches finished(); the value stays and is written later."""
    faulty: FaultyStrategy[Any] = FaultyStrategy(FBStore(PickleCodec(), PreparedPath(cache_dir)))
    with BackingStore(faulty) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=4, write="early")
        faulty.fail("store", EIO, times=1)
        handle = pool.insert(b"kept")
        with pytest.raises(OSError, match="injected"):
            store.finished(TIMEOUT)
        stats = pool.statistics()
        assert (stats.write_errors, stats.pending_bytes, stats.pending_writes) == (1, 0, 0)
        assert handle.resident
        assert handle.evict() > 0  # not clean yet: its eviction writes it
        with handle.load() as value:
            assert value == b"kept"
        pool.close()
