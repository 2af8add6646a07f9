"""Fb handles and their guards: loads, try_load, write_now, close, finalization, async API."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, Fb, FBPool, ReadGuard, WriteGuard
from fb.exceptions import CorruptBlobError, HandleClosedError
from tests.conftest import TIMEOUT, CountingStore, value_of
from tests.persist_helpers import blob, open_store


async def avalue_of(handle: Fb[Any]) -> Any:
    """Load ``handle`` through the async API and return its value."""
    async with handle.aload() as value:
        return value


def stored_pair(
    store: BackingStore[Any], max_items: int = 1
) -> tuple[FBPool[str], Fb[str], Fb[str]]:
    """A pool holding "a" on storage only and "b" in memory."""
    pool: FBPool[str] = FBPool(store, max_items=max_items)
    first = pool.insert("a")
    second = pool.insert("b")
    store.finished()
    assert not first.resident
    assert second.resident
    return pool, first, second


# -- guards --------------------------------------------------------------------------------


def test_read_guard_enters_to_the_value(store: BackingStore[Any]) -> None:
    """A read guard's ``with`` gives the value; after release the guard refuses access."""
    pool: FBPool[list[int]] = FBPool(store, max_items=2)
    handle = pool.insert([1, 2, 3])
    guard = handle.load()
    assert isinstance(guard, ReadGuard)
    assert guard.value == [1, 2, 3]
    assert "held" in repr(guard)
    with guard as value:
        assert value == [1, 2, 3]
    assert "released" in repr(guard)
    guard.release()  # idempotent
    with pytest.raises(RuntimeError):
        _ = guard.value


def test_write_guard_enters_to_itself(store: BackingStore[Any]) -> None:
    """A write guard's ``with`` gives the guard; after release it refuses access."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    handle = pool.insert("a")
    with handle.load_mut() as guard:
        assert isinstance(guard, WriteGuard)
        assert guard.value == "a"
        assert "held" in repr(guard)
        guard.value = "b"
    assert "released" in repr(guard)
    guard.release()  # idempotent
    with pytest.raises(RuntimeError):
        _ = guard.value
    with pytest.raises(RuntimeError):
        guard.value = "c"
    with pytest.raises(RuntimeError), guard:
        pass
    assert value_of(handle) == "b"


def test_write_guard_is_exclusive(store: BackingStore[Any]) -> None:
    """A load from another thread waits for the write guard and sees the new value."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    handle = pool.insert("old")
    guard = handle.load_mut()
    assert handle.try_load() is None
    assert handle.try_load_mut() is None
    with ThreadPoolExecutor(1) as executor:
        reader = executor.submit(value_of, handle)
        guard.value = "new"
        guard.release()
        assert reader.result(TIMEOUT) == "new"


def test_second_write_guard_in_same_thread_is_refused(store: BackingStore[Any]) -> None:
    """Waiting for a write guard this thread holds raises instead of deadlocking."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    handle = pool.insert("a")
    with handle.load_mut():
        with pytest.raises(RuntimeError, match="write guard"):
            handle.load_mut()
        with pytest.raises(RuntimeError, match="write guard"):
            handle.load()
        with pytest.raises(RuntimeError, match="write guard"):
            handle.write_now()
    assert value_of(handle) == "a"


def test_try_load_never_does_io(store: BackingStore[Any], counting: CountingStore) -> None:
    """try_load gives a guard for a resident value and None for a stored one, with no I/O."""
    _, first, second = stored_pair(store)
    assert first.try_load() is None
    assert first.try_load_mut() is None
    guard = second.try_load()
    assert guard is not None
    with guard as value:
        assert value == "b"
    store.finished()
    assert counting.loaded == []


def test_try_load_mut_changes_the_key(store: BackingStore[Any]) -> None:
    """try_load_mut on an unused resident value gives a write guard and a new key."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    handle = pool.insert("a")
    key = handle.key
    reader = handle.load()
    assert handle.try_load_mut() is None  # a reader holds it
    reader.release()
    guard = handle.try_load_mut()
    assert guard is not None
    with guard:
        guard.value = "b"
    assert handle.key != key
    assert value_of(handle) == "b"


def test_dropped_read_guard_is_released_in_background(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A read guard dropped without release unpins its value, so the item can be evicted."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    guard = handle.load()
    other = pool.insert("b")
    store.finished()
    assert counting.stored == []
    del guard
    gc.collect()
    store.finished()
    assert counting.stored == [handle.key]
    assert not handle.resident
    assert other.resident


# -- write_now --------------------------------------------------------------------------------


def test_write_now_writes_once_and_keeps_the_value(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """write_now writes a dirty item once; the value stays; its later eviction is clean."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    handle.write_now()
    assert counting.stored == [handle.key]
    assert counting.blob_path(handle.key).is_file()
    assert handle.resident
    handle.write_now()
    assert counting.stored == [handle.key]
    other = pool.insert("b")
    store.finished()
    assert counting.stored == [handle.key]
    assert (handle.resident, other.resident) == (False, True)
    assert pool.statistics().evictions_clean == 1


def test_write_now_on_stored_item_does_no_io(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """write_now on an item whose blob exists returns without touching storage."""
    _, first, _ = stored_pair(store)
    calls = counting.io_calls
    first.write_now()
    assert counting.io_calls == calls


def test_spawn_write_now_returns_a_future(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """spawn_write_now runs write_now on a worker; its future completes when the blob exists."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    future = handle.spawn_write_now()
    assert isinstance(future, Future)
    assert future.result(TIMEOUT) is None
    assert counting.stored == [handle.key]
    assert counting.blob_path(handle.key).is_file()


def test_write_now_waits_for_an_eviction_write(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """write_now during an eviction write waits for it instead of writing a second time."""
    counting.store_gate = gate = threading.Event()
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    other = pool.insert("b")
    assert counting.store_started.wait(TIMEOUT)
    with ThreadPoolExecutor(1) as executor:
        writing = executor.submit(handle.write_now)
        gate.set()
        assert writing.result(TIMEOUT) is None
    store.finished()
    assert counting.stored == [handle.key]
    assert counting.blob_path(handle.key).is_file()
    assert other.resident


# -- close and finalization -----------------------------------------------------------------


def test_close_is_idempotent_and_final(store: BackingStore[Any], counting: CountingStore) -> None:
    """A closed handle refuses every use; closing twice is harmless; its blob goes once."""
    pool, first, second = stored_pair(store)
    key = first.key
    first.close()
    first.close()
    assert first.closed
    assert "closed" in repr(first)
    for use in (first.load, first.load_mut, first.try_load, first.try_load_mut, first.write_now):
        with pytest.raises(HandleClosedError):
            use()
    store.finished()
    assert counting.deleted == [key]
    assert not counting.blob_path(key).exists()
    assert pool.order() == [second.key]


def test_with_block_closes_the_handle(store: BackingStore[Any], counting: CountingStore) -> None:
    """Leaving ``with handle:`` closes it and deletes its blob."""
    pool: FBPool[str] = FBPool(store, max_items=0)
    with pool.insert("a") as handle:
        store.finished()
        assert counting.stored == [handle.key]
    assert handle.closed
    store.finished()
    assert counting.deleted == [handle.key]
    assert len(pool) == 0


def test_close_while_guard_held_waits_for_release(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """Closing a handle whose value is pinned keeps the value until the guard goes."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    handle = pool.insert("a")
    handle.write_now()
    with handle.load() as value:
        handle.close()
        assert value == "a"
        assert handle.resident
        store.finished()
        assert counting.deleted == []
    store.finished()
    assert counting.deleted == [counting.stored[0]]
    assert (handle.resident, len(pool)) == (False, 0)


@pytest.mark.parametrize("how", ["dropped", "in a cycle", "closed, then dropped"])
def test_garbage_collected_handle_deletes_its_blob(
    store: BackingStore[Any], counting: CountingStore, how: str
) -> None:
    """A handle that is garbage-collected releases its item and its blob in the background.

    Also when only the cycle collector can free it, and exactly once when it was closed.
    """
    pool, first, second = stored_pair(store)
    key = first.key
    if how == "in a cycle":
        cycle: list[Any] = [first, None]
        cycle[1] = cycle
        del cycle
    elif how == "closed, then dropped":
        first.close()
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None
    store.finished()
    assert counting.deleted == [key]
    assert not counting.blob_path(key).exists()
    assert pool.order() == [second.key]


def test_close_during_load_raises_handle_closed(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A load in flight when its handle is closed raises HandleClosedError, not a storage error."""
    pool, first, second = stored_pair(store)
    key = first.key
    counting.load_gate = gate = threading.Event()
    with ThreadPoolExecutor(1) as executor:
        loading = executor.submit(value_of, first)
        assert counting.load_started.wait(TIMEOUT)
        first.close()
        store.finished()  # any background work the close started has ended
        gate.set()
        with pytest.raises(HandleClosedError):
            loading.result(TIMEOUT)
    store.finished()
    assert not first.resident
    assert pool.order() == [second.key]
    assert counting.deleted == [key]
    assert pool.statistics().load_errors == 0


def test_handle_exposes_key_pool_and_state(store: BackingStore[Any]) -> None:
    """key, pool, resident and repr describe the handle."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    handle = pool.insert("a")
    assert handle.pool is pool
    assert not handle.closed
    assert handle.resident
    assert handle.key.hex in repr(handle)
    assert "dirty" in repr(handle)
    handle.write_now()
    assert "clean" in repr(handle)


# -- async API --------------------------------------------------------------------------------


def test_aload_and_aload_mut(store: BackingStore[Any], counting: CountingStore) -> None:
    """aload is awaitable and an async context manager; aload_mut replaces the value."""
    _, first, _ = stored_pair(store)

    async def main() -> None:
        guard = await first.aload()
        assert isinstance(guard, ReadGuard)
        async with guard as value:
            assert value == "a"
        key = first.key
        async with first.aload_mut() as wguard:
            assert wguard.value == "a"
            wguard.value = "A"
        assert first.key != key
        wguard2 = await first.aload_mut()
        async with wguard2:
            assert wguard2.value == "A"
        assert await avalue_of(first) == "A"
        await first.awrite_now()
        assert counting.blob_path(first.key).is_file()

    asyncio.run(main())
    assert counting.loaded[:1] == counting.stored[:1]


def test_many_tasks_load_once(store: BackingStore[Any], counting: CountingStore) -> None:
    """Many asyncio tasks loading one stored item read its blob once."""
    _, first, _ = stored_pair(store)
    counting.load_gate = gate = threading.Event()

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(avalue_of(first)) for _ in range(20)]
        assert await asyncio.to_thread(counting.load_started.wait, TIMEOUT)
        gate.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)

    assert asyncio.run(main()) == ["a"] * 20
    assert counting.loaded == [first.key]
    assert first.pool.statistics().loads == 1


def test_aload_never_blocks_the_loop(store: BackingStore[Any], counting: CountingStore) -> None:
    """While aload waits for storage, the event loop keeps running other work."""
    _, first, _ = stored_pair(store)
    counting.load_gate = gate = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(avalue_of(first))
        # If aload loaded on the loop thread, this line would only run after its gate
        # timed out, with the task already failed.
        assert await asyncio.to_thread(counting.load_started.wait, TIMEOUT)
        assert not task.done()
        gate.set()
        assert await asyncio.wait_for(task, TIMEOUT) == "a"

    asyncio.run(main())


def test_aload_mut_never_blocks_the_loop(store: BackingStore[Any], counting: CountingStore) -> None:
    """While aload_mut waits for storage, the event loop keeps running other work."""
    _, first, _ = stored_pair(store)
    counting.load_gate = gate = threading.Event()

    async def replace() -> None:
        async with first.aload_mut() as guard:
            guard.value = guard.value.upper()

    async def main() -> None:
        task = asyncio.create_task(replace())
        assert await asyncio.to_thread(counting.load_started.wait, TIMEOUT)
        assert not task.done()
        gate.set()
        await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())
    assert value_of(first) == "A"


def test_awrite_now_never_blocks_the_loop(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """While awrite_now waits for storage, the event loop keeps running other work."""
    pool: FBPool[str] = FBPool(store, max_items=2)
    handle = pool.insert("a")
    counting.store_gate = gate = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(handle.awrite_now())
        assert await asyncio.to_thread(counting.store_started.wait, TIMEOUT)
        assert not task.done()
        gate.set()
        await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())
    assert counting.stored == [handle.key]
    assert handle.resident


def test_afinished_never_blocks_the_loop(store: BackingStore[Any], counting: CountingStore) -> None:
    """While afinished waits for an eviction write, the event loop keeps running."""
    pool: FBPool[str] = FBPool(store, max_items=0)
    counting.store_gate = gate = threading.Event()
    handle = pool.insert("a")

    async def main() -> None:
        assert await asyncio.to_thread(counting.store_started.wait, TIMEOUT)
        task = asyncio.create_task(store.afinished())
        await asyncio.sleep(0)  # let afinished start waiting
        assert not task.done()
        gate.set()
        await asyncio.wait_for(task, TIMEOUT)
        assert not handle.resident

    asyncio.run(main())
    assert counting.stored == [handle.key]


def test_cancelled_aload_gives_its_pin_back(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A task cancelled while its load is in flight does not leave the value pinned."""
    _, first, _ = stored_pair(store)
    key = first.key
    counting.load_gate = gate = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(avalue_of(first))
        assert await asyncio.to_thread(counting.load_started.wait, TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        # A write guard waits for every reader: it is granted only if the pin went back.
        async with asyncio.timeout(TIMEOUT), first.aload_mut() as guard:
            assert guard.value == "a"

    asyncio.run(main())
    assert counting.loaded == [key]


# -- errors of registered items ---------------------------------------------------------------


def test_corrupt_registered_blob_names_where_it_was_registered_from(
    tmp_path: Path, persist_dir: Path, cache_dir: Path
) -> None:
    """CorruptBlobError of a registered item names its cache copy and its persisted blob."""
    with open_store(tmp_path / "writer") as (writer, _):
        tracked = writer.track_path(persist_dir)
        key = FBPool(writer, max_items=1).insert(b"precious" * 100).persist(tracked)
        writer.fsync(tracked)
    with open_store(cache_dir) as (store, counting):
        pool: FBPool[bytes] = FBPool(store, max_items=1)
        handle = pool.register(store.track_path(persist_dir), key)
        assert handle is not None
        cached = counting.blob_path(key)
        damaged = bytearray(cached.read_bytes())
        damaged[40] ^= 0xFF
        cached.unlink()  # a copy of its own: the persisted blob stays whole
        cached.write_bytes(bytes(damaged))
        with pytest.raises(CorruptBlobError, match="registered from") as caught:
            handle.load()
        error = caught.value
        assert (error.key, error.path) == (key, str(cached))
        assert error.source == str(blob(persist_dir, key))
        assert error.source in str(error)
        assert "checksum mismatch" in str(error)
        assert blob(persist_dir, key).read_bytes() != bytes(damaged)
        handle.close()


def test_corrupt_own_blob_names_no_source(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """An item this store wrote itself has no source: the error names its cache path only."""
    pool: FBPool[bytes] = FBPool(store, max_items=0)
    handle = pool.insert(b"precious" * 100)
    store.finished()
    path = counting.blob_path(handle.key)
    damaged = bytearray(path.read_bytes())
    damaged[40] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptBlobError) as caught:
        handle.load()
    assert caught.value.source is None
    assert "registered from" not in str(caught.value)
