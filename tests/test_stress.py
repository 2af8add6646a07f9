"""Thread and asyncio stress: every operation at once, for a bounded time, with a deadlock watchdog.

Sixteen threads and two hundred asyncio tasks share one pool and mix every operation:
insert/ainsert, load/aload, try_load, load_mut/aload_mut (replace and mutate in place),
try_load_mut, write_now/awrite_now/spawn_write_now, persist/apersist/spawn_persist, fsync,
register/aregister, prefetch/aprefetch, close, guards dropped without release (the
garbage-collection path) and cancelled loads. Each item's value is ``[origin, count,
payload]``; every write through a handle increments ``count`` and is logged inside its write
guard, so the log knows, for every handle, each value it ever held and the last one.

Checks: any value observed is one that was written through that handle (no stale or foreign
value); at the end, once background work drained, every live handle loads the last value
written through it, the cache holds exactly the referenced blobs, and nothing failed in the
background. A hang fails loudly: worker threads are joined with a deadline (their stacks are
reported) and pytest-timeout's thread method ends the run with every stack if teardown hangs.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.testing.faults import EIO, OPERATIONS, S3_CONNECTION, S3_SLOW_DOWN, FaultyStrategy
from tests.conftest import TIMEOUT
from tests.reliability import blob_keys_on_storage, drain, injected_op, join_all
from tests.stress_workload import ASYNC_OPS, MIN_ITEMS, SYNC_OPS, Value, World, astep

THREADS = 16
TASKS = 200
SECONDS = 3.0
STRESS_SECONDS = 30.0

# -- the runs ----------------------------------------------------------------------------------


def run_threads_and_tasks(world: World, seconds: float, seed: int) -> None:
    """Run THREADS threads and TASKS asyncio tasks on ``world`` for ``seconds``."""
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    failures: list[BaseException] = []

    def thread_main(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        try:
            while time.monotonic() < deadline and not stop.is_set():
                world.step(rng)
        except BaseException as exc:
            failures.append(exc)
            stop.set()

    async def task_main(number: int) -> None:
        rng = random.Random(seed * 1000 + THREADS + number)
        while time.monotonic() < deadline and not stop.is_set():
            await astep(world, rng)

    async def tasks_main() -> None:
        tasks = [asyncio.create_task(task_main(n)) for n in range(TASKS)]
        done, pending = await asyncio.wait(tasks, timeout=seconds + 2 * TIMEOUT)
        assert not pending, f"deadlock: {len(pending)} asyncio tasks never finished"
        for task in done:
            task.result()

    threads = [
        threading.Thread(target=thread_main, args=(n,), name=f"stress-{n}", daemon=True)
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        asyncio.run(tasks_main())
    finally:
        stop.set()
        join_all(threads, seconds + 2 * TIMEOUT)
    if failures:
        raise failures[0]


def check_final_state(world: World, cache: PreparedPath, leaked: frozenset[UUID]) -> None:
    """After the storm: every handle loads its last written value; storage matches.

    ``leaked``: blobs whose delete failed (injected), which may stay on storage.
    """
    store = world.pool.store
    store.finished()  # raises any background error: none is expected
    for item in world.items:
        with item.handle.load() as value:
            assert world.check(item, value) == item.last, f"{item.handle!r} lost a write"
    store.finished()
    stats = world.pool.statistics()
    assert (stats.pending_writes, stats.pending_bytes, stats.background_errors) == (0, 0, 0)
    assert stats.items == len(world.items)
    if world.pool.max_items is not None:
        assert stats.resident_items <= world.pool.max_items
    referenced = store.blob_keys()
    stored = blob_keys_on_storage(cache)
    assert referenced <= stored
    assert stored - referenced <= leaked
    assert referenced <= {item.handle.key for item in world.items}
    for item in world.items:
        item.handle.close()
    store.finished()
    assert blob_keys_on_storage(cache) <= leaked


def stress(tmp_path: Path, seconds: float, seed: int, faults: float = 0.0) -> Counter[str]:
    """Run the storm; with ``faults``, every backend operation fails with that probability."""
    cache = PreparedPath(tmp_path / "cache")
    (tmp_path / "persist").mkdir()
    faulty: FaultyStrategy[Value] = FaultyStrategy(FBStore(PickleCodec(), cache), seed=seed)
    store: BackingStore[Value] = BackingStore(faulty, max_workers=4)
    try:
        pool: FBPool[Value] = FBPool(store, max_items=16, max_bytes=12_000)
        world = World(pool, store.track_path(tmp_path / "persist"), faulty=faults > 0)
        rng = random.Random(seed)
        for _ in range(MIN_ITEMS * 3):
            value = world.new_value(rng)
            world.adopt(pool.insert(value), (value[0], value[1], value[2]))
        for number, op in enumerate(sorted(OPERATIONS - {"scan"})):
            faulty.fail(op, (EIO, S3_SLOW_DOWN, S3_CONNECTION)[number % 3], probability=faults)
        run_threads_and_tasks(world, seconds, seed)
        faulty.heal()
        collected = drain(store.finished)
        pool.retry_writes()
        collected += drain(store.finished)
        ops = [injected_op(exc) for exc in collected]
        assert None not in ops, f"a background error that was not injected: {collected}"
        leaked = frozenset(
            UUID(hex=str(exc.filename))
            for exc in collected
            if isinstance(exc, OSError) and injected_op(exc) == "delete"
        )
        check_final_state(world, cache, leaked)
        # Nothing swallowed: each injected fault reached a caller or finished(), once.
        assert faulty.injected == world.raised + Counter(str(op) for op in ops)
        pool.close()
    finally:
        faulty.heal()
        store.close()
    return world.ops


@pytest.mark.timeout(120, method="thread")
def test_threads_and_tasks_mixing_every_operation(tmp_path: Path) -> None:
    """16 threads and 200 tasks for a few seconds: no deadlock, no lost or stale value."""
    ops = stress(tmp_path, SECONDS, seed=1)
    assert set(ops) >= {name for name, _ in SYNC_OPS} | set(ASYNC_OPS)


@pytest.mark.timeout(120, method="thread")
def test_threads_and_tasks_while_storage_fails_at_random(tmp_path: Path) -> None:
    """The storm with 5% of backend calls failing: every fault surfaces once, no value is lost."""
    ops = stress(tmp_path, SECONDS, seed=2, faults=0.05)
    assert sum(ops.values()) > 0


@pytest.mark.stress
@pytest.mark.timeout(600, method="thread")
@pytest.mark.parametrize("seed", range(3))
def test_threads_and_tasks_with_faults_stress(tmp_path: Path, seed: int) -> None:
    """The faulty storm for thirty seconds, three seeds."""
    stress(tmp_path, STRESS_SECONDS, seed=200 + seed, faults=0.05)


@pytest.mark.stress
@pytest.mark.timeout(600, method="thread")
@pytest.mark.parametrize("seed", range(3))
def test_threads_and_tasks_stress(tmp_path: Path, seed: int) -> None:
    """The same storm for thirty seconds, three seeds."""
    stress(tmp_path, STRESS_SECONDS, seed=100 + seed)


# -- the crate's lesson: one worker, saturated -------------------------------------------------


def saturate_one_worker(tmp_path: Path, seconds: float) -> Counter[str]:
    """Evictions, async loads, spawn_write_now and spawn_persist on a store with one worker."""
    cache = PreparedPath(tmp_path / "cache")
    (tmp_path / "persist").mkdir()
    store: BackingStore[bytes] = BackingStore(FBStore(PickleCodec(), cache), max_workers=1)
    done: Counter[str] = Counter()
    try:
        pool: FBPool[bytes] = FBPool(store, max_items=2)
        tracked = store.track_path(tmp_path / "persist")
        values = [bytes([i]) * 2000 for i in range(40)]
        handles = [pool.insert(value) for value in values]
        deadline = time.monotonic() + seconds

        def spawner(number: int) -> None:
            rng = random.Random(number)
            while time.monotonic() < deadline:
                index = rng.randrange(len(handles))
                futures: list[Future[Any]] = [
                    handles[index].spawn_write_now(),
                    handles[rng.randrange(len(handles))].spawn_persist(tracked),
                    pool.prefetch([handles[rng.randrange(len(handles))]]),
                ]
                extra = pool.insert(b"x" * 2000)  # an eviction each time
                for future in futures:
                    future.result(TIMEOUT)
                extra.close()
                done["spawned"] += 3

        async def loader(number: int) -> None:
            rng = random.Random(1000 + number)
            while time.monotonic() < deadline:
                index = rng.randrange(len(handles))
                async with handles[index].aload() as value:
                    assert value == values[index]
                await handles[rng.randrange(len(handles))].awrite_now()
                done["aloads"] += 1

        async def loaders() -> None:
            tasks = [asyncio.create_task(loader(n)) for n in range(20)]
            finished, pending = await asyncio.wait(tasks, timeout=seconds + 2 * TIMEOUT)
            assert not pending, "deadlock: async loads never finished on a one-worker store"
            for task in finished:
                task.result()

        threads = [
            threading.Thread(target=spawner, args=(n,), name=f"spawner-{n}", daemon=True)
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        try:
            asyncio.run(loaders())
        finally:
            join_all(threads, seconds + 2 * TIMEOUT)
        store.finished()
        for handle, value in zip(handles, values, strict=True):
            with handle.load() as loaded:
                assert loaded == value
        pool.close()
        store.finished()
    finally:
        store.close()
    return done


@pytest.mark.timeout(120, method="thread")
def test_a_saturated_single_worker_never_deadlocks(tmp_path: Path) -> None:
    """One worker thread, saturated by evictions, async loads, spawn_write_now, spawn_persist."""
    done = saturate_one_worker(tmp_path, 2.0)
    assert done["aloads"] > 0
    assert done["spawned"] > 0


@pytest.mark.stress
@pytest.mark.timeout(600, method="thread")
def test_a_saturated_single_worker_stress(tmp_path: Path) -> None:
    """The one-worker saturation for thirty seconds."""
    saturate_one_worker(tmp_path, STRESS_SECONDS)
