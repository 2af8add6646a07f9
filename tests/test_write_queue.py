"""Write-backs queue for a few draining workers: all written, in order, a worker left free."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.conftest import TIMEOUT, CountingStore


def test_write_backs_leave_a_worker_for_loads(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """While every write-back worker is stuck on slow storage, a prefetch still runs."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    stored = pool.insert("stored")
    stored.write_now()
    pool.insert("pushes the stored item out")
    assert not stored.resident
    counting.store_gate = gate = threading.Event()
    handles = [pool.insert(f"value {index}") for index in range(8)]
    assert counting.store_started.wait(TIMEOUT)
    assert store.max_workers == 4
    prefetched = pool.prefetch([stored])
    prefetched.result(TIMEOUT)  # a queue of slow writes must not hold the load back
    gate.set()
    store.finished(TIMEOUT)
    assert set(counting.stored) >= {handle.key for handle in handles[:-1]}
    with stored.load() as value:
        assert value == "stored"


def test_one_worker_writes_in_eviction_order(tmp_path: Path) -> None:
    """With one worker, queued write-backs reach storage in the order they were evicted."""
    counting = CountingStore(FBStore(PickleCodec(), PreparedPath(tmp_path)))
    with BackingStore(counting, max_workers=1) as store:
        pool: FBPool[int] = FBPool(store, max_items=2)
        handles = [pool.insert(index) for index in range(50)]
        store.finished(TIMEOUT)
        assert counting.stored == [handle.key for handle in handles[:48]]
        for index, handle in enumerate(handles):
            with handle.load() as value:
                assert value == index


def test_a_burst_of_evictions_is_written_whole(tmp_path: Path) -> None:
    """Thousands of evictions from several threads: every value is written and loads back."""
    with BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path))) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=16, write="on_evict")
        results: dict[int, list[Any]] = {}

        def produce(thread: int) -> None:
            results[thread] = [pool.insert(b"%d-%d" % (thread, i)) for i in range(500)]

        threads = [threading.Thread(target=produce, args=(number,)) for number in range(4)]
        for worker in threads:
            worker.start()
        for worker in threads:
            worker.join(TIMEOUT)
        store.finished(TIMEOUT)
        assert pool.statistics().stores == 2000 - 16
        assert pool.statistics().pending_writes == 0
        for number, handles in results.items():
            for index, handle in enumerate(handles):
                with handle.load() as value:
                    assert value == b"%d-%d" % (number, index)
