"""Backpressure: a producer faster than storage blocks in insert instead of exhausting memory.

`FBPool` bounds the bytes waiting for write-back (``max_pending_bytes``). Storage is held
shut (`FaultyStrategy.block`) or slowed (`FaultyStrategy.slow`) around a real `FBStore`:

- ``insert`` does not return while more than ``max_pending_bytes`` wait, and returns once the
  writes drain (observed from a thread, with an Event);
- ``ainsert`` waits the same way without blocking the event loop;
- a producer that never pauses keeps the pending bytes within ``max_pending_bytes`` plus one
  value, all the way through.

``benchmarks/backpressure.py`` measures the effect on the peak RSS of a process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, Fb, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.testing.faults import ENOSPC, FaultyStrategy
from tests.conftest import TIMEOUT
from tests.reliability import drain, wait_until

SIZE = 600
LIMIT = 1000
"""max_pending_bytes: one value may wait, two may not."""


@pytest.fixture(name="faulty")
def fixture_faulty(cache_dir: Path) -> FaultyStrategy[Any]:
    return FaultyStrategy(FBStore(PickleCodec(), PreparedPath(cache_dir)))


@pytest.fixture(name="gate")
def fixture_gate() -> Iterator[threading.Event]:
    """Holds every write shut until set (set at teardown, so closing never hangs)."""
    gate = threading.Event()
    yield gate
    gate.set()


@pytest.fixture(name="shut_store")
def fixture_shut_store(
    faulty: FaultyStrategy[Any], gate: threading.Event
) -> Iterator[BackingStore[Any]]:
    """A store whose writes all wait for ``gate``."""
    faulty.block("store", gate)
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2)
    yield store
    gate.set()
    drain(store.close)


def fill(pool: FBPool[bytes]) -> list[Fb[bytes]]:
    """Insert three values: two are pushed out and wait for a write that cannot start."""
    handles = [pool.insert(bytes([i]) * SIZE) for i in range(3)]
    stats = pool.statistics()
    assert (stats.pending_writes, stats.pending_bytes) == (2, 2 * SIZE)
    assert 2 * SIZE > LIMIT
    return handles


def test_insert_blocks_until_write_back_drains(
    shut_store: BackingStore[Any], gate: threading.Event
) -> None:
    """With more than max_pending_bytes waiting, insert does not return until writes drain."""
    pool: FBPool[bytes] = FBPool(shut_store, max_items=1, write="on_evict", max_pending_bytes=LIMIT)
    handles = fill(pool)
    returned = threading.Event()
    inserted: list[Fb[bytes]] = []

    def producer() -> None:
        inserted.append(pool.insert(b"the fourth"))
        returned.set()

    thread = threading.Thread(target=producer, name="producer", daemon=True)
    thread.start()
    wait_until(lambda: pool.statistics().insert_waits == 1, TIMEOUT, "the insert to wait")
    # Storage is shut, so the pending bytes cannot drop: the insert cannot have returned.
    assert not returned.is_set()
    assert pool.statistics().items == 3
    gate.set()
    assert returned.wait(TIMEOUT), "insert never returned after the writes drained"
    thread.join(TIMEOUT)
    shut_store.finished()
    assert len(pool) == 4
    for index, handle in enumerate(handles):
        with handle.load() as value:
            assert value == bytes([index]) * SIZE
    with inserted[0].load() as value:
        assert value == b"the fourth"
    pool.close()


def test_ainsert_waits_without_blocking_the_loop(
    shut_store: BackingStore[Any], gate: threading.Event
) -> None:
    """ainsert waits for write-back to drain while the event loop keeps running other tasks."""
    pool: FBPool[bytes] = FBPool(shut_store, max_items=1, write="on_evict", max_pending_bytes=LIMIT)
    fill(pool)
    # If ainsert blocked the loop, nothing below could ever open the gate: a timer does, as a
    # last resort, and the test then fails instead of hanging.
    rescued = threading.Event()

    def rescue() -> None:
        rescued.set()
        gate.set()

    timer = threading.Timer(TIMEOUT, rescue)
    timer.start()

    async def main() -> int:
        task = asyncio.create_task(pool.ainsert(b"async"))
        ticks = 0
        while pool.statistics().insert_waits < 1:
            await asyncio.sleep(0)
            ticks += 1
        for _ in range(100):  # the loop runs other work while ainsert waits
            await asyncio.sleep(0)
            ticks += 1
        assert not task.done()
        gate.set()
        handle = await asyncio.wait_for(task, TIMEOUT)
        with handle.load() as value:
            assert value == b"async"
        return ticks

    try:
        ticks = asyncio.run(main())
    finally:
        timer.cancel()
    assert not rescued.is_set(), "ainsert blocked the event loop"
    assert ticks >= 100
    assert pool.statistics().insert_waits == 1
    pool.close()


@pytest.mark.parametrize("limit", [0, 8 * SIZE])
def test_a_tireless_producer_stays_within_the_pending_limit(
    faulty: FaultyStrategy[Any], limit: int
) -> None:
    """Against a slow store, pending bytes never exceed max_pending_bytes plus one value."""
    faulty.slow("store", 0.002)
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2)
    try:
        pool: FBPool[bytes] = FBPool(store, max_items=2, max_pending_bytes=limit)
        handles = []
        peak = 0
        for index in range(120):
            handles.append(pool.insert(index.to_bytes(2, "little") * (SIZE // 2)))
            peak = max(peak, pool.statistics().pending_bytes)
        assert peak <= limit + SIZE
        assert pool.statistics().insert_waits > 0, "the producer never had to wait"
        store.finished()
        for index, handle in enumerate(handles):
            with handle.load() as value:
                assert value == index.to_bytes(2, "little") * (SIZE // 2)
        pool.close()
    finally:
        drain(store.close)


def test_failing_storage_also_holds_the_producer_back(faulty: FaultyStrategy[Any]) -> None:
    """While every write fails, values pile up waiting for a retry: insert must wait too."""
    faulty.fail("store", ENOSPC)
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2)
    pool: FBPool[bytes] = FBPool(store, max_items=1, max_pending_bytes=LIMIT)
    held_back: list[int] = []

    def rescue() -> None:
        # Only a producer that is held back is still inserting when this fires (failed
        # writes fail at once): note how much was in memory, then let storage recover.
        held_back.append(pool.statistics().resident_bytes)
        faulty.heal()
        pool.retry_writes()

    timer = threading.Timer(2.0, rescue)
    timer.start()
    try:
        handles = [pool.insert(bytes([index]) * SIZE) for index in range(50)]
    finally:
        timer.cancel()
        faulty.heal()
    try:
        resident = pool.statistics().resident_bytes
        assert held_back, f"all 50 inserts returned while storage failed; {resident} B in memory"
        assert held_back[0] <= SIZE + LIMIT + SIZE
        assert len(handles) == 50
    finally:
        pool.retry_writes()
        pool.close()
        drain(store.close)
