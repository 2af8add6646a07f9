"""Targeted faults: one storage failure at a time in write-backs, deletes and loads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import StoreClosedError
from fb.testing.faults import EACCES, EIO, ENOSPC, S3_CONNECTION, S3_SLOW_DOWN, FaultyStrategy
from tests.conftest import TIMEOUT
from tests.reliability import ERRORS, blob_keys_on_storage, drain, injected_op, leaves, wait_until

# -- write-backs that fail ---------------------------------------------------------------------


@pytest.fixture(name="faulty")
def fixture_faulty(cache_dir: Path) -> FaultyStrategy[Any]:
    return FaultyStrategy(FBStore(PickleCodec(), PreparedPath(cache_dir)), seed=0)


@pytest.fixture(name="faulty_store")
def fixture_faulty_store(faulty: FaultyStrategy[Any]) -> Iterator[BackingStore[Any]]:
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2)
    yield store
    faulty.heal()
    drain(store.close)


@pytest.mark.parametrize("error", list(ERRORS), ids=list(ERRORS))
def test_failed_write_backs_keep_values_until_retry_writes(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any], error: str
) -> None:
    """While storage fails every write, evicted values stay in memory; retry_writes spills them."""
    faulty.fail("store", ERRORS[error])
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=2)
    values = [bytes([i]) * 100 for i in range(10)]
    handles = [pool.insert(value) for value in values]
    errors = drain(faulty_store.finished)
    # Eight write-backs failed (more if the automatic retry came round meanwhile).
    assert len(errors) >= 8
    assert {injected_op(exc) for exc in errors} == {"store"}
    stats = pool.statistics()
    assert (stats.resident_items, stats.write_errors, stats.evictions) == (10, len(errors), 0)
    loads_before = faulty.calls["load"]
    for handle, value in zip(handles, values, strict=True):
        with handle.load() as loaded:
            assert loaded == value
    assert faulty.calls["load"] == loads_before, "the values were in memory all along"

    faulty.heal()
    pool.retry_writes()
    faulty_store.finished()
    stats = pool.statistics()
    assert (stats.resident_items, stats.evictions_dirty) == (2, 8)
    for handle, value in zip(handles, values, strict=True):
        with handle.load() as loaded:
            assert loaded == value
    pool.close()


def test_a_failed_write_back_is_retried_automatically(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """A write-back that failed once is retried after the backoff, with no call from the user."""
    evicted = threading.Event()
    errors: list[BaseException] = []
    keys: list[UUID] = []

    def on_evict(key: UUID, nbytes: int, dirty: bool) -> None:
        if keys and key == keys[0] and dirty:
            evicted.set()

    faulty.fail("store", S3_SLOW_DOWN, times=1)
    pool: FBPool[bytes] = FBPool(
        faulty_store, max_items=1, on_evict=on_evict, on_error=errors.append, write="on_evict"
    )
    first = pool.insert(b"first")
    keys.append(first.key)
    second = pool.insert(b"second")  # pushes the first out: its write fails
    assert evicted.wait(TIMEOUT), "the failed write-back was never retried"
    assert [injected_op(exc) for exc in errors] == ["store"]
    assert "503 Slow Down" in str(errors[0])
    (collected,) = drain(faulty_store.finished)
    assert collected is errors[0]
    stats = pool.statistics()
    assert (stats.write_errors, stats.stores, stats.evictions_dirty) == (1, 1, 1)
    assert faulty.calls["store"] == 2
    with first.load() as value:
        assert value == b"first"
    second.close()
    pool.close()


def test_once_storage_is_back_failed_write_backs_are_retried_promptly(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """After a burst of failed write-backs, a successful write brings the retries forward."""
    written: set[UUID] = set()
    all_written = threading.Event()
    failed_keys: list[UUID] = []

    def on_evict(key: UUID, nbytes: int, dirty: bool) -> None:
        written.add(key)
        if failed_keys and set(failed_keys) <= written:
            all_written.set()

    pool: FBPool[bytes] = FBPool(faulty_store, max_items=1, write="on_evict", on_evict=on_evict)
    faulty.fail("store", EIO)
    handles = [pool.insert(bytes([i]) * 100) for i in range(10)]  # nine write-backs fail
    assert len(drain(faulty_store.finished)) == 9
    failed_keys.extend(handle.key for handle in handles[:9])
    faulty.heal()
    handles.append(pool.insert(b"storage is back"))  # this eviction is written at once
    faulty_store.finished()
    assert handles[9].key in written
    # No retry_writes(): the automatic retries must follow now that storage works.
    assert all_written.wait(4.0), f"{len(set(failed_keys) - written)} values still wait"
    pool.close()


def test_background_errors_reach_finished_and_both_hooks(faulty: FaultyStrategy[Any]) -> None:
    """Several background failures: finished() raises an ExceptionGroup of them, each once,
    and the store's and the pool's on_error saw each one as it happened."""
    store_seen: list[BaseException] = []
    pool_seen: list[BaseException] = []
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2, on_error=store_seen.append)
    try:
        pool: FBPool[bytes] = FBPool(store, max_items=0, on_error=pool_seen.append)
        doomed = pool.insert(b"written, then deleted")  # max_items=0: written at once
        store.finished()
        faulty.fail("store", ENOSPC, times=2)
        faulty.fail("delete", EACCES, times=1)
        kept = [pool.insert(bytes([i])) for i in range(2)]  # both writes fail
        doomed.close()  # its delete fails
        with pytest.raises(BaseExceptionGroup) as info:
            store.finished()
        errors = leaves(info.value)
        assert sorted(str(injected_op(exc)) for exc in errors) == ["delete", "store", "store"]
        assert sorted(map(id, store_seen)) == sorted(map(id, errors))
        written = [e for e in errors if injected_op(e) == "store"]
        assert sorted(map(id, pool_seen)) == sorted(map(id, written))
        store.finished()  # each error is raised once, then forgotten
        faulty.heal()
        pool.retry_writes()
        store.finished()
        for index, handle in enumerate(kept):
            with handle.load() as value:
                assert value == bytes([index])
        pool.close()
    finally:
        drain(store.close)


def test_a_failed_delete_is_collected_and_leaks_only_its_blob(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any], cache_dir: Path
) -> None:
    """A delete that fails is raised by finished() naming the key; the other blobs are gone."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=0)
    handles = [pool.insert(bytes([i]) * 10) for i in range(5)]
    faulty_store.finished()
    faulty.fail("delete", EIO, times=1)
    for handle in handles:
        handle.close()
    (error,) = drain(faulty_store.finished)
    assert isinstance(error, OSError)
    assert injected_op(error) == "delete"
    leaked = UUID(hex=str(error.filename))
    assert blob_keys_on_storage(PreparedPath(cache_dir)) == {leaked}
    assert leaked in {handle.key for handle in handles}
    pool.close()


def test_write_now_and_persist_raise_the_write_error_and_keep_the_value(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any], persist_dir: Path
) -> None:
    """An explicit write that fails raises to its caller (not to finished) and keeps the value."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=4, write="on_evict")
    tracked = faulty_store.track_path(persist_dir)
    handle = pool.insert(b"precious")
    faulty.fail("store", S3_CONNECTION, times=2)
    with pytest.raises(ConnectionError, match="injected into store"):
        handle.write_now()
    with pytest.raises(ConnectionError, match="injected into store"):
        handle.persist(tracked)
    assert drain(faulty_store.finished) == []
    assert pool.statistics().write_errors == 2
    key = handle.persist(tracked)
    faulty_store.fsync(tracked)
    assert key in faulty_store.track_path(persist_dir)
    with handle.load() as value:
        assert value == b"precious"
    pool.close()


def test_closing_the_store_drains_a_blocked_write_back(
    faulty: FaultyStrategy[Any],
) -> None:
    """Closing the store while writes are blocked drains them first; the store then refuses."""
    gate = threading.Event()
    store: BackingStore[Any] = BackingStore(faulty, max_workers=1)
    faulty.block("store", gate, times=1)
    pool: FBPool[bytes] = FBPool(store, max_items=1, write="on_evict")
    handle = pool.insert(b"a")
    other = pool.insert(b"b")  # pushes the first out: its write blocks
    wait_until(lambda: faulty.injected["store"] == 1, TIMEOUT, "the write-back to block")
    closer = threading.Thread(target=store.close, name="closer")
    closer.start()
    gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert store.closed
    assert pool.statistics().stores == 1, "the blocked write ran to its end, not cut off"
    with pytest.raises(StoreClosedError):
        handle.load()
    other.close()
    pool.close()


def test_prefetch_of_one_failing_handle_raises_its_error(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """A prefetch whose load fails hands the error to its future; the handle loads later."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=1)
    handle = pool.insert(b"x")
    other = pool.insert(b"y")  # held: a dropped handle would free the budget again
    faulty_store.finished()
    faulty.fail("load", EIO, times=1)
    with pytest.raises(OSError, match="injected into load"):
        pool.prefetch([handle]).result(TIMEOUT)
    with handle.load() as value:
        assert value == b"x"
    other.close()
    pool.close()


def test_prefetch_reports_every_failed_load(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """Three prefetched loads fail: all three errors surface (its future or finished())."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=1)
    handles = [pool.insert(bytes([i])) for i in range(4)]
    faulty_store.finished()
    faulty.fail("load", EIO)
    seen: list[BaseException] = []
    try:
        pool.prefetch(handles[:3]).result(TIMEOUT)
    except Exception as exc:
        seen += leaves(exc)
    seen += drain(faulty_store.finished)
    assert faulty.injected["load"] == 3
    assert len([exc for exc in seen if injected_op(exc) == "load"]) == 3
    faulty.heal()
    pool.close()


def test_evict_lru_racing_a_close_of_its_candidate(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """The least recently used handle is closed while evict_lru writes it: no error escapes."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=10)
    oldest = pool.insert(b"a" * 100)
    other = pool.insert(b"b" * 100)
    gate = threading.Event()
    faulty.block("store", gate, times=1)
    outcome: list[int | BaseException] = []

    def evict() -> None:
        try:
            outcome.append(pool.evict_lru())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=evict, name="evict-lru", daemon=True)
    thread.start()
    wait_until(lambda: faulty.injected["store"] == 1, TIMEOUT, "evict_lru to write")
    oldest.close()
    gate.set()
    thread.join(TIMEOUT)
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    assert result == -1 or result > 0
    with other.load() as value:
        assert value == b"b" * 100
    other.close()
    pool.close()
