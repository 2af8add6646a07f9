"""Guards a caller can never get (its own guard blocks them) raise; ``timeout`` bounds waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from fb import BackingStore, Fb, FBPool, WriteGuard, _janitor
from fb.exceptions import GuardConflictError, GuardTimeoutError
from tests.conftest import TIMEOUT, CountingStore, value_of

R = TypeVar("R")

SHORT = 0.05
"""A timeout that runs out: the guard it waits for is held until the test releases it."""


def without_deadlock(fn: Callable[[], R]) -> R:
    """Run ``fn`` in a daemon thread; return or raise its outcome, or fail if it hangs.

    A deadlocked call stays blocked in its daemon thread instead of hanging the test run.
    """
    outcome: Future[R] = Future()

    def run() -> None:
        try:
            outcome.set_result(fn())
        except BaseException as exc:  # handed to the test
            outcome.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    try:
        return outcome.result(TIMEOUT)
    except TimeoutError:
        pytest.fail(f"deadlock: {fn!r} still waits after {TIMEOUT} s")


def held_elsewhere(take: Callable[[], Any]) -> tuple[threading.Event, threading.Thread]:
    """Take a guard with ``take`` in another thread and hold it until the event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with take():
            taken.set()
            release.wait(TIMEOUT)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(TIMEOUT)
    return release, thread


@pytest.fixture(name="handle")
def fixture_handle(store: BackingStore[Any]) -> Fb[str]:
    pool: FBPool[str] = FBPool(store, max_items=4)
    return pool.insert("value")


# -- the same thread or task ---------------------------------------------------------------


def test_write_guard_while_holding_a_read_guard_is_refused(handle: Fb[str]) -> None:
    """``with h.load(): h.load_mut()`` raises GuardConflictError naming the key, not hangs."""

    def read_then_write() -> None:
        with handle.load() as value:
            assert value == "value"
            handle.load_mut()

    with pytest.raises(GuardConflictError, match=handle.key.hex) as caught:
        without_deadlock(read_then_write)
    assert isinstance(caught.value, RuntimeError)
    assert "read guard" in str(caught.value)
    with handle.load_mut() as guard:  # nothing was left pinned
        guard.value = "changed"
    assert value_of(handle) == "changed"


def test_try_load_guard_blocks_a_write_guard_of_the_same_thread(handle: Fb[str]) -> None:
    """A read guard from try_load counts as held by its thread too."""

    def try_then_write() -> None:
        guard = handle.try_load()
        assert guard is not None
        with guard:
            handle.load_mut()

    with pytest.raises(GuardConflictError):
        without_deadlock(try_then_write)


def test_every_read_guard_of_the_thread_must_be_released(handle: Fb[str]) -> None:
    """With two read guards of one thread, releasing one still leaves load_mut refused."""

    def two_readers() -> str:
        first, second = handle.load(), handle.load()
        first.release()
        with pytest.raises(GuardConflictError):
            handle.load_mut()
        second.release()
        with handle.load_mut() as guard:
            return guard.value

    assert without_deadlock(two_readers) == "value"


def test_thread_holding_a_read_guard_next_to_another_reader_is_refused(
    handle: Fb[str],
) -> None:
    """A reader that is not the item's first reader is still seen as the holder."""
    release, thread = held_elsewhere(handle.load)  # the first reader: another thread
    try:

        def read_then_write() -> None:
            with handle.load():
                handle.load_mut()

        with pytest.raises(GuardConflictError):
            without_deadlock(read_then_write)
    finally:
        release.set()
        thread.join(TIMEOUT)


def test_any_guard_while_holding_the_write_guard_is_refused(handle: Fb[str]) -> None:
    """load and load_mut under the same thread's write guard raise GuardConflictError."""

    def write_then_read() -> None:
        with handle.load_mut():
            with pytest.raises(GuardConflictError, match="write guard"):
                handle.load()
            with pytest.raises(GuardConflictError, match="write guard"):
                handle.load_mut()

    without_deadlock(write_then_read)
    assert value_of(handle) == "value"


def test_dropped_read_guard_does_not_block_the_write_guard(handle: Fb[str]) -> None:
    """A read guard dropped without release (released by the janitor) is not a conflict."""

    def drop_then_write() -> str:
        handle.load()  # collected at once: its release is deferred to the janitor thread
        with handle.load_mut() as guard:
            return guard.value

    assert without_deadlock(drop_then_write) == "value"


def test_dropped_write_guard_does_not_block_the_same_thread(handle: Fb[str]) -> None:
    """A write guard dropped without release is no conflict either: the janitor releases it."""

    def drop_then_read() -> str:
        handle.load_mut()  # collected at once, released on the janitor thread
        with handle.load() as value:
            return value

    assert without_deadlock(drop_then_read) == "value"


def test_conflict_on_the_janitor_thread_does_not_wait_for_the_janitor(handle: Fb[str]) -> None:
    """Code run by the janitor (a finalizer's work) gets the error, not a wait for itself."""
    outcome: Future[None] = Future()

    def job() -> None:
        try:
            with handle.load():
                handle.load_mut()
        except BaseException as exc:  # handed to the test
            outcome.set_exception(exc)
        else:
            outcome.set_result(None)

    _janitor.put(job)
    with pytest.raises(GuardConflictError):
        outcome.result(TIMEOUT)


def test_async_write_guard_while_the_task_holds_a_read_guard_is_refused(
    handle: Fb[str],
) -> None:
    """``async with h.aload(): await h.aload_mut()`` raises; so does a blocking load_mut."""

    async def main() -> None:
        async with handle.aload():
            with pytest.raises(GuardConflictError):
                async with asyncio.timeout(TIMEOUT):  # in this task, unlike wait_for
                    await handle.aload_mut()
            with pytest.raises(GuardConflictError):
                handle.load_mut()  # blocking the task's thread blocks the task
        async with handle.aload_mut() as guard:
            guard.value = "changed"

    asyncio.run(main())
    assert value_of(handle) == "changed"


def test_another_task_holding_a_read_guard_is_waited_for(handle: Fb[str]) -> None:
    """A read guard of another task of the same loop is no conflict: aload_mut waits for it."""

    async def main() -> str:
        taken, release = asyncio.Event(), asyncio.Event()

        async def reader() -> None:
            async with handle.aload():
                taken.set()
                await release.wait()

        task = asyncio.create_task(reader())
        await asyncio.wait_for(taken.wait(), TIMEOUT)

        async def take_write_guard() -> WriteGuard[str]:
            return await handle.aload_mut()

        writer = asyncio.create_task(take_write_guard())
        await asyncio.sleep(0)  # let the writer start waiting
        assert not writer.done()
        release.set()
        guard = await asyncio.wait_for(writer, TIMEOUT)
        await task
        with guard:
            return guard.value

    assert asyncio.run(main()) == "value"


# -- timeouts --------------------------------------------------------------------------------


def test_load_gives_up_after_its_timeout(handle: Fb[str]) -> None:
    """load(timeout=...) raises GuardTimeoutError while another thread holds the write guard."""
    release, thread = held_elsewhere(handle.load_mut)
    try:
        with pytest.raises(GuardTimeoutError, match="write guard is held") as caught:
            handle.load(timeout=SHORT)
        assert isinstance(caught.value, TimeoutError)
        assert handle.key.hex in str(caught.value)
    finally:
        release.set()
        thread.join(TIMEOUT)
    assert value_of(handle) == "value"


def test_load_mut_gives_up_after_its_timeout(handle: Fb[str]) -> None:
    """load_mut(timeout=...) raises GuardTimeoutError while another thread reads."""
    release, thread = held_elsewhere(handle.load)
    try:
        with pytest.raises(GuardTimeoutError, match="1 read guard"):
            handle.load_mut(timeout=SHORT)
        with pytest.raises(GuardTimeoutError):
            handle.load_mut(timeout=0)
    finally:
        release.set()
        thread.join(TIMEOUT)
    with handle.load_mut(timeout=TIMEOUT) as guard:  # free again: no wait, no error
        assert guard.value == "value"


def test_async_guards_give_up_after_their_timeout(handle: Fb[str]) -> None:
    """aload and aload_mut with a timeout raise GuardTimeoutError without blocking the loop."""
    release, thread = held_elsewhere(handle.load_mut)

    async def main() -> None:
        with pytest.raises(GuardTimeoutError):
            await handle.aload(timeout=SHORT)
        with pytest.raises(GuardTimeoutError):
            async with handle.aload_mut(timeout=SHORT):
                pass

    try:
        asyncio.run(main())
    finally:
        release.set()
        thread.join(TIMEOUT)


def test_timeout_bounds_a_wait_for_another_callers_load(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """A load waiting for another thread's read of the blob gives up after its timeout."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    first = pool.insert("a")
    second = pool.insert("b")
    store.finished()
    assert not first.resident
    assert second.resident
    counting.load_gate = gate = threading.Event()
    thread = threading.Thread(target=value_of, args=(first,), daemon=True)
    thread.start()
    try:
        assert counting.load_started.wait(TIMEOUT)
        with pytest.raises(GuardTimeoutError, match="being loaded"):
            first.load(timeout=SHORT)
    finally:
        gate.set()
        thread.join(TIMEOUT)
    assert value_of(first) == "a"


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError), (True, TypeError)],
)
def test_bad_timeout_is_refused(handle: Fb[str], timeout: Any, error: type[Exception]) -> None:
    """A timeout that is not a number of seconds >= 0 raises before anything is pinned."""
    for call in (handle.load, handle.load_mut, handle.aload, handle.aload_mut):
        with pytest.raises(error, match="timeout"):
            call(timeout)
    assert value_of(handle) == "value"
