"""BackingStore: draining, error collection, on_error, close, context managers, blob refs."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any, NoReturn
from uuid import uuid4

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import StoreClosedError
from tests.conftest import TIMEOUT, CountingStore


class BoomError(Exception):
    """A background failure a test provokes on purpose."""


def fail(message: str) -> NoReturn:
    """Raise `BoomError` with ``message``."""
    raise BoomError(message)


def test_finished_raises_a_background_error_once(store: BackingStore[Any]) -> None:
    """An error collected in the background is raised by the next finished(), and only once."""
    store._submit_background(fail, "one")
    with pytest.raises(BoomError, match="one"):
        store.finished()
    store.finished()
    assert store.pending_errors == 0


def test_several_errors_raise_an_exception_group(store: BackingStore[Any]) -> None:
    """Several collected errors are raised together as an ExceptionGroup, then forgotten."""
    for message in ("one", "two", "three"):
        store._submit_background(fail, message)
    with pytest.raises(ExceptionGroup) as info:
        store.finished()
    assert sorted(str(exc) for exc in info.value.exceptions) == ["one", "three", "two"]
    assert all(isinstance(exc, BoomError) for exc in info.value.exceptions)
    store.finished()


def test_on_error_sees_each_error_and_finished_still_raises(counting: CountingStore) -> None:
    """on_error is called once per background error, from a worker; finished raises them too."""
    seen: list[tuple[str, str]] = []

    def on_error(exc: BaseException) -> None:
        seen.append((str(exc), threading.current_thread().name))

    store: BackingStore[Any] = BackingStore(counting, on_error=on_error)
    try:
        store._submit_background(fail, "one")
        store._submit_background(fail, "two")
        with pytest.raises(ExceptionGroup):
            store.finished()
        assert sorted(message for message, _ in seen) == ["one", "two"]
        assert all(name != threading.current_thread().name for _, name in seen)
    finally:
        store.close()


def test_failing_on_error_does_not_lose_the_error(counting: CountingStore) -> None:
    """An on_error callback that raises does not stop the error from reaching finished()."""

    def on_error(exc: BaseException) -> None:
        raise RuntimeError("callback broke")

    store: BackingStore[Any] = BackingStore(counting, on_error=on_error)
    try:
        store._submit_background(fail, "kept")
        with pytest.raises(BoomError, match="kept"):
            store.finished()
    finally:
        store.close()


def test_submit_errors_belong_to_the_future(store: BackingStore[Any]) -> None:
    """submit() hands a failure to its future; finished() does not raise it again."""
    future = store._submit_task(fail, "mine")
    with pytest.raises(BoomError, match="mine"):
        future.result(TIMEOUT)
    store.finished()


def test_finished_waits_for_running_tasks(store: BackingStore[Any]) -> None:
    """finished() returns only after every task submitted before it has ended."""
    gate = threading.Event()
    done: list[str] = []

    def task() -> None:
        assert gate.wait(TIMEOUT)
        done.append("task")

    store._submit_background(task)
    timer = threading.Timer(0.05, gate.set)  # releases the task while finished() waits
    timer.start()
    try:
        store.finished()
        assert done == ["task"]
        assert store.pending_tasks == 0
    finally:
        timer.cancel()
        gate.set()


def test_finished_drains_without_closing(store: BackingStore[Any]) -> None:
    """After finished() the store still accepts work."""
    store.finished()
    assert not store.closed
    assert store._submit_task(lambda: 42).result(TIMEOUT) == 42
    store.finished()


def test_afinished_raises_collected_errors(store: BackingStore[Any]) -> None:
    """afinished() raises what failed in the background, like finished()."""
    store._submit_background(fail, "async")

    async def main() -> None:
        with pytest.raises(BoomError, match="async"):
            await store.afinished()
        await store.afinished()

    asyncio.run(main())


def test_close_is_idempotent(counting: CountingStore) -> None:
    """close() twice is harmless and closes the backend once; the store refuses work after."""
    store: BackingStore[Any] = BackingStore(counting)
    store.close()
    store.close()
    assert store.closed
    assert counting.closes == 1
    assert "closed" in repr(store)
    with pytest.raises(StoreClosedError):
        store._check_open()
    with pytest.raises(StoreClosedError):
        store._submit_task(lambda: None)
    with pytest.raises(StoreClosedError):
        FBPool(store, max_items=1).insert(1)


def test_close_raises_collected_errors_once(counting: CountingStore) -> None:
    """close() raises the errors collected before it, after the store is closed."""
    store: BackingStore[Any] = BackingStore(counting)
    store._submit_background(fail, "late")
    with pytest.raises(BoomError, match="late"):
        store.close()
    assert store.closed
    assert counting.closes == 1
    store.close()


def test_close_deletes_blobs_still_referenced(counting: CountingStore) -> None:
    """Blobs of handles still alive when the store closes are deleted, not left behind."""
    store: BackingStore[Any] = BackingStore(counting)
    pool: FBPool[str] = FBPool(store, max_items=0)
    handle = pool.insert("a")
    store.finished()
    path = counting.blob_path(handle.key)
    assert path.is_file()
    assert store._refcount(handle.key) == 1
    assert store.blob_keys() == frozenset({handle.key})
    store.close()
    assert not path.exists()
    assert counting.deleted == [handle.key]
    assert store.blob_keys() == frozenset()
    handle.close()  # after the store closed: nothing more to delete
    store.finished()
    assert counting.deleted == [handle.key]


def test_close_drains_pending_writes(counting: CountingStore) -> None:
    """close() waits for a write in flight before it releases the backend."""
    store: BackingStore[Any] = BackingStore(counting)
    pool: FBPool[str] = FBPool(store, max_items=0)
    counting.store_gate = gate = threading.Event()
    handle = pool.insert("a")
    assert counting.store_started.wait(TIMEOUT)
    timer = threading.Timer(0.05, gate.set)
    timer.start()
    try:
        store.close()
    finally:
        timer.cancel()
        gate.set()
    assert counting.events == [("store", handle.key), ("delete", handle.key)]
    assert counting.closes == 1


def test_sync_context_manager_closes(counting: CountingStore) -> None:
    """Leaving ``with BackingStore(...)`` closes the store and its backend."""
    with BackingStore(counting) as store:
        open_inside = not store.closed
    assert open_inside
    assert store.closed
    assert counting.closes == 1


def test_async_context_manager_closes(counting: CountingStore) -> None:
    """Leaving ``async with BackingStore(...)`` closes the store and its backend."""

    async def main() -> BackingStore[Any]:
        async with BackingStore(counting) as store:
            assert not store.closed
        return store

    assert asyncio.run(main()).closed
    assert counting.closes == 1


def test_aclose_closes(counting: CountingStore) -> None:
    """aclose() closes the store without an event loop of its own."""
    store: BackingStore[Any] = BackingStore(counting)
    asyncio.run(store.aclose())
    assert store.closed
    assert counting.closes == 1


def test_blob_refcount_follows_handles(store: BackingStore[Any]) -> None:
    """A written blob is referenced once; closing its handle drops the reference."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    first, second = pool.insert("a"), pool.insert("b")
    store.finished()
    assert store._refcount(first.key) == 1
    assert store._refcount(second.key) == 0
    first.close()
    assert store._refcount(first.key) == 0
    store.finished()


@pytest.mark.parametrize("max_workers", [0, -1, True, 1.5])
def test_invalid_max_workers(counting: CountingStore, max_workers: Any) -> None:
    """max_workers must be a positive int."""
    with pytest.raises(ValueError, match="max_workers"):
        BackingStore(counting, max_workers=max_workers)


def test_strategy_must_be_a_strategy() -> None:
    """Something without store/load/delete/close is refused."""
    with pytest.raises(TypeError, match="strategy"):
        BackingStore(object())  # type: ignore[arg-type]


def abandon_store(backend: FBStore[Any]) -> None:
    """Open a store that references a blob, and drop it without closing it."""
    store: BackingStore[Any] = BackingStore(backend)
    store._add_ref(uuid4())
    del store
    gc.collect()


def test_unclosed_store_with_blobs_warns(cache_dir: Path) -> None:
    """A store garbage-collected without close() while it references blobs warns."""
    backend: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir))
    try:
        with pytest.warns(ResourceWarning, match="without close"):
            abandon_store(backend)
    finally:
        backend.close()
