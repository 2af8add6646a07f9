"""FBPool lifecycle: closing, a closed store, configuration checks and statistics."""

from __future__ import annotations

from typing import Any

import pytest

from fb import BackingStore, FBPool, PoolStatistics
from fb.exceptions import StoreClosedError
from tests.conftest import CountingStore, value_of

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
