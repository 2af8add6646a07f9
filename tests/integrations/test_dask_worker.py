"""FbSpillBuffer under distributed's memory manager, in-process and on a process cluster.

The in-process tests fake the process memory the worker's memory monitor sees (as
distributed's own tests do), so that spilling, hysteresis and pausing happen on cue; the
process cluster runs a real workload in workers with a small memory limit.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, Scheduler, Worker, wait
from distributed.core import Status

from fb.integrations.dask import FbSpillBuffer, FbSpillPlugin
from fb.testing.faults import FaultyStrategy
from tests.conftest import TIMEOUT

MB = 10**6

MONITOR = {
    "distributed.worker.memory.monitor-interval": "10ms",
    "distributed.worker.memory.terminate": False,
}


class Fake:
    """A task result that Dask's sizeof takes for 100 MB (it holds a few bytes)."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __sizeof__(self) -> int:
        return 100 * MB


def fast_bytes(data: FbSpillBuffer) -> int:
    """The ``sizeof`` total of the values in memory: the process memory the tests fake."""
    return sum(data._sizes.get(key, 0) for key in data.fast)


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until ``predicate()`` holds (fail after TIMEOUT seconds)."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def run_worker(
    tmp_path: Path,
    config: dict[str, Any],
    body: Callable[[Client, Worker], Coroutine[Any, Any, None]],
) -> None:
    """Run ``body`` against a scheduler and one worker whose data is an FbSpillBuffer."""

    async def main() -> None:
        data = (FbSpillBuffer, {"url": str(tmp_path), "max_bytes": 2**40})
        with dask.config.set({**MONITOR, **config}):
            async with (
                Scheduler(dashboard_address=":0", host="127.0.0.1") as scheduler,
                Worker(
                    scheduler.address,
                    nthreads=1,
                    memory_limit="1000 MB",
                    data=data,
                    plugins=(FbSpillPlugin(),),
                    host="127.0.0.1",
                ) as worker,
                Client(scheduler.address, asynchronous=True) as client,
            ):
                worker.monitor.get_process_memory = lambda: 0
                await body(client, worker)

    asyncio.run(asyncio.wait_for(main(), 6 * TIMEOUT))


def test_memory_monitor_spills_and_reports_it(tmp_path: Path) -> None:
    """Over the spill threshold the monitor evicts through fb, metered as memory-monitor."""

    async def body(client: Client, worker: Worker) -> None:
        data = worker.data
        assert isinstance(data, FbSpillBuffer)
        x = client.submit(Fake, 1, key="x")  # held: a released key leaves the worker
        await wait(x)
        worker.monitor.get_process_memory = lambda: 800 * MB if data.fast else 0  # type: ignore[method-assign]
        await until(lambda: "x" in data.slow, "x to be spilled")
        digests = worker.digests_total
        assert digests["memory-monitor", "disk-write", "count"] == 1
        assert digests["memory-monitor", "disk-write", "bytes"] > 0
        assert digests["memory-monitor", "serialize", "seconds"] > 0
        assert data.manual_evictions == 1
        assert (await x).i == 1

    run_worker(
        tmp_path,
        {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": 0.7},
        body,
    )


def test_memory_monitor_spills_down_to_the_target_only(tmp_path: Path) -> None:
    """Hysteresis: spilling starts over the spill threshold and stops at the target."""

    async def body(client: Client, worker: Worker) -> None:
        data = worker.data
        assert isinstance(data, FbSpillBuffer)
        futures = client.map(Fake, range(9), key=[f"x-{i}" for i in range(9)])
        await wait(futures)
        assert len(data.fast) == 9
        seen = asyncio.Event()
        calls = [0]

        def memory() -> int:
            if not data.slow:
                calls[0] = 0
            calls[0] += 1
            if calls[0] > 20:  # the monitor kept looking well after spilling stopped
                seen.set()
            return fast_bytes(data)

        worker.monitor.get_process_memory = memory  # type: ignore[method-assign]
        await asyncio.wait_for(seen.wait(), TIMEOUT)
        # 900 MB > 800 MB: spill until at most 450 MB remain, i.e. five of nine.
        assert (len(data.slow), len(data.fast)) == (5, 4)

    run_worker(
        tmp_path,
        {"distributed.worker.memory.target": 0.45, "distributed.worker.memory.spill": 0.8},
        body,
    )


def test_worker_pauses_while_fb_is_still_spilling(tmp_path: Path) -> None:
    """Slow writes: the worker pauses mid-spill, then resumes once all is on storage."""

    async def body(client: Client, worker: Worker) -> None:
        data = worker.data
        assert isinstance(data, FbSpillBuffer)
        futures = client.map(Fake, range(6), key=[f"x-{i}" for i in range(6)])
        await wait(futures)
        faulty: FaultyStrategy[Any] = FaultyStrategy(data._store.strategy)
        faulty.slow("store", 0.05)
        data._store.strategy = faulty
        seen: list[tuple[int, Status]] = []

        def memory() -> int:
            seen.append((len(data.fast), worker.status))
            return 900 * MB if data.fast else 0

        worker.monitor.get_process_memory = memory  # type: ignore[method-assign]
        await until(lambda: not data.fast and worker.status == Status.running, "resume")
        assert any(fast and status == Status.paused for fast, status in seen)
        assert len(data.slow) == 6
        assert [x.i for x in await client.gather(futures)] == list(range(6))

    run_worker(
        tmp_path,
        {
            "distributed.worker.memory.target": False,
            "distributed.worker.memory.spill": 0.7,
            "distributed.worker.memory.pause": 0.8,
        },
        body,
    )


# -- a process cluster ---------------------------------------------------------------------

CLUSTER_LIMIT = 300 * MB
"""Each worker process's memory limit: distributed restarts a worker past 95 % of it."""

CHUNKS = 60
"""How many 20 MB results the cluster test computes: 1.2 GB on two 300 MB workers."""

CLUSTER_MAX_BYTES = int(0.6 * CLUSTER_LIMIT) - 100 * MB
"""The buffers' bound by docs/dask.md's rule: 60 % of the limit less 100 MB (80 MB)."""


def scheduler_view(dask_scheduler: Scheduler) -> dict[str, Any]:
    """What the scheduler knows of its workers (run on it through ``run_on_scheduler``)."""
    events = [
        msg
        for topic in ("all", *dask_scheduler.workers)
        for _, msg in dask_scheduler.get_events(topic)
        if isinstance(msg, dict)
    ]
    removed = [msg for msg in events if msg.get("action") == "remove-worker"]
    paused = [msg for msg in events if msg.get("status") == "paused"]
    spilled = {addr: ws.memory.spilled for addr, ws in dask_scheduler.workers.items()}
    return {"removed": removed, "paused": paused, "spilled": spilled}


def test_process_cluster_spills_through_fb_without_restarts(tmp_path: Path) -> None:
    """Workers holding four times their limit in results spill through fb; none restarts.

    Checked from the scheduler: no worker was removed or paused, each reported spilled
    bytes in its heartbeats, and the results read back from storage add up.
    """
    data = (FbSpillBuffer, {"url": str(tmp_path), "max_bytes": CLUSTER_MAX_BYTES})
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=CLUSTER_LIMIT,
            dashboard_address=None,
            host="127.0.0.1",
            data=data,
            plugins={FbSpillPlugin()},
        ) as cluster,
        Client(cluster) as client,
    ):
        workers = set(client.scheduler_info()["workers"])
        # CHUNKS chunks of 20 MB on two workers limited to 300 MB each.
        x = da.random.RandomState(0).random_sample((CHUNKS * 2500, 1000), chunks=(2500, 1000))
        x = x.persist()
        wait(x, timeout=20 * TIMEOUT)
        total = float(x.sum().compute())
        assert np.isclose(total, float(x.sum().compute()))  # read back again, same result
        deadline = time.monotonic() + 2 * TIMEOUT
        view = client.run_on_scheduler(scheduler_view)
        while not all(view["spilled"].values()):  # spilled bytes come with heartbeats
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
            view = client.run_on_scheduler(scheduler_view)
        assert view["removed"] == []
        assert view["paused"] == []
        assert set(view["spilled"]) == workers
        assert sum(view["spilled"].values()) >= CHUNKS * 20 * MB - 2 * CLUSTER_MAX_BYTES
    assert list(tmp_path.iterdir()) == []  # the plugin closed both buffers


# -- threads -------------------------------------------------------------------------------

LEAK_CHECK = """
import tempfile
from distributed.utils_test import check_thread_leak
from fb.integrations.dask import FbSpillBuffer

with tempfile.TemporaryDirectory() as tmp, check_thread_leak():
    with FbSpillBuffer(url=tmp, max_bytes=1000) as buffer:
        for i in range(5):
            buffer[i] = bytes(600)
        assert buffer.evict() > 0
        assert buffer[0] == bytes(600)
print("no leak")
"""


def test_a_buffer_passes_distributeds_thread_leak_check(tmp_path: Path) -> None:
    """fb's janitor thread predates what the integration runs: no thread leak is reported."""
    done = subprocess.run(
        [sys.executable, "-c", LEAK_CHECK],
        capture_output=True,
        text=True,
        timeout=6 * TIMEOUT,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "no leak"
