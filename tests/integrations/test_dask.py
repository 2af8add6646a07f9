"""FbSpillBuffer: the mapping under Dask's access patterns, then real LocalClusters.

The unit tests drive the mapping as a worker does (set, get, ``del`` without loading,
``evict`` from the memory monitor, several threads); the cluster tests run a dask.array
workload several times larger than the pool's budget on local disk and on moto's S3 server.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster, Worker
from distributed.sizeof import safe_sizeof

from fb._inspect import StoredFile, list_location
from fb.backends import PreparedPath
from fb.exceptions import StoreClosedError
from fb.integrations.dask import FbSpillBuffer, FbSpillPlugin, SpilledSize
from tests.conftest import TIMEOUT
from tests.s3.moto_fixtures import S3Bucket

ITEM = 100_000
"""Bytes of one test value (a float64 array of 12,500 elements)."""

BUDGET = 470_000
"""The buffers' ``max_bytes`` in the unit tests: the pool's share (three quarters) holds
three values, the fourth pushes one out; a quarter may wait for write-back."""

LOGGER = "distributed.spill"

Steps = dict[tuple[int, int], int]
"""The last step that wrote each key of a thread in the concurrency test."""


def array(i: int, nbytes: int = ITEM) -> np.ndarray[Any, Any]:
    """Return a float64 array of ``nbytes`` bytes filled with ``i``."""
    return np.full(nbytes // 8, i, dtype="f8")


def blob_files(buffer: FbSpillBuffer) -> list[StoredFile]:
    """Return the blobs in the buffer's local cache directory (in segment files or not)."""
    cache = Path(buffer.location.root, "cache")
    return list(list_location(PreparedPath(cache)).blobs) if cache.is_dir() else []


def blob_size(buffer: FbSpillBuffer, key: object) -> int:
    """Return the size of the blob of ``key`` in the buffer's local cache directory."""
    handle = buffer._handle(key)
    assert handle is not None
    (blob,) = [blob for blob in blob_files(buffer) if blob.key == handle.key.hex]
    return blob.size


def pickle_errors(caplog: pytest.LogCaptureFixture, key: object) -> list[logging.LogRecord]:
    """Return the buffer's "failed to pickle" records about ``key``."""
    return [
        record
        for record in caplog.records
        if record.name == LOGGER and record.getMessage().startswith(f"Failed to pickle {key!r}")
    ]


@pytest.fixture(name="spill_dir")
def fixture_spill_dir(tmp_path: Path) -> Path:
    """The base directory buffers create their session directories in."""
    return tmp_path / "spill"


@pytest.fixture(name="buffer")
def fixture_buffer(spill_dir: Path) -> Iterator[FbSpillBuffer]:
    """A buffer on local disk with a budget of three values."""
    buffer = FbSpillBuffer(url=spill_dir, max_bytes=BUDGET)
    yield buffer
    buffer.close()


@pytest.fixture(name="roomy")
def fixture_roomy(spill_dir: Path) -> Iterator[FbSpillBuffer]:
    """A buffer whose budget never spills: only `evict` moves values out of memory."""
    buffer = FbSpillBuffer(url=spill_dir, max_bytes=100 * ITEM)
    yield buffer
    buffer.close()


# -- the mapping ---------------------------------------------------------------------------


def test_is_a_mutable_mapping_with_manual_eviction(buffer: FbSpillBuffer) -> None:
    """The buffer is a MutableMapping with distributed's ``fast`` and ``evict``."""
    assert isinstance(buffer, MutableMapping)
    assert not buffer.fast
    assert buffer.evict() == -1


def test_roundtrip_with_str_and_tuple_keys(buffer: FbSpillBuffer) -> None:
    """Values set under Dask's str and tuple keys come back; len, iter and in agree."""
    first, second = array(1), array(2)
    buffer["x"] = first
    buffer[("y", 0, 1)] = second
    assert buffer["x"] is first
    assert buffer[("y", 0, 1)] is second
    assert len(buffer) == 2
    assert sorted(map(str, buffer)) == sorted(map(str, ["x", ("y", 0, 1)]))
    assert "x" in buffer
    assert ("y", 0, 1) in buffer
    assert ("y", 0, 2) not in buffer


def test_missing_keys_raise_key_error(buffer: FbSpillBuffer) -> None:
    """Reading or deleting an unknown key raises KeyError."""
    with pytest.raises(KeyError):
        buffer["nope"]
    with pytest.raises(KeyError):
        del buffer["nope"]


def test_spills_past_the_budget_and_loads_back(buffer: FbSpillBuffer) -> None:
    """Values beyond the budget are written and dropped; reading them loads them back."""
    for i in range(8):
        buffer[("x", i)] = array(i)
    buffer.finished()
    stats = buffer.statistics()
    assert stats.stores >= 5
    assert stats.evictions >= 5
    assert stats.resident_bytes <= BUDGET
    assert len(buffer.slow) >= 5
    assert len(buffer.fast) + len(buffer.slow) == 8
    for i in range(8):
        assert np.array_equal(buffer[("x", i)], array(i))  # type: ignore[arg-type]
    assert buffer.statistics().loads >= 5


def test_del_does_not_load_and_deletes_the_blob(buffer: FbSpillBuffer) -> None:
    """Deleting a spilled key reads nothing from storage and deletes its blob."""
    for i in range(6):
        buffer[i] = array(i)
    buffer.finished()
    spilled = sorted(buffer.slow)
    assert spilled
    blobs = len(blob_files(buffer))
    loads = buffer.statistics().loads
    for key in spilled:
        del buffer[key]
    buffer.finished()
    assert buffer.statistics().loads == loads
    assert len(blob_files(buffer)) == blobs - len(spilled)
    assert all(key not in buffer for key in spilled)
    assert len(buffer) == 6 - len(spilled)


def test_value_larger_than_the_budget_is_written_and_dropped(buffer: FbSpillBuffer) -> None:
    """A value larger than the budget is written through and never kept in memory."""
    buffer["big"] = array(7, 2 * BUDGET)
    buffer.finished()
    stats = buffer.statistics()
    assert (stats.stores, stats.evictions_dirty, stats.resident_bytes) == (1, 1, 0)
    assert "big" in buffer.slow
    assert "big" not in buffer.fast
    assert np.array_equal(buffer["big"], array(7, 2 * BUDGET))  # type: ignore[arg-type]
    stats = buffer.statistics()
    assert (stats.loads, stats.resident_bytes) == (1, 0)  # loaded, handed over, dropped


def test_unpicklable_value_stays_in_memory_and_readable(
    buffer: FbSpillBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """A value pushed out that fails to pickle stays readable in memory, logged once."""
    lock = threading.Lock()
    buffer["lock"] = lock
    for i in range(6):
        buffer[i] = array(i)
    buffer.finished()  # the encode error is handled: nothing to raise
    assert buffer.unspillable == {"lock"}
    assert buffer["lock"] is lock
    assert "lock" in buffer
    assert len(buffer) == 7
    assert len(pickle_errors(caplog, "lock")) == 1
    for i in range(8, 12):
        buffer[i] = array(i)
    buffer.finished()
    assert len(pickle_errors(caplog, "lock")) == 1  # out of the pool: never tried again
    del buffer["lock"]
    assert "lock" not in buffer
    assert buffer.unspillable == frozenset()


def test_unpicklable_value_larger_than_the_budget_is_kept(
    buffer: FbSpillBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """A value over the budget that fails to pickle is kept in memory, readable."""
    value = [threading.Lock(), array(3, 2 * BUDGET)]
    buffer["big"] = value
    buffer.finished()
    assert buffer.unspillable == {"big"}
    assert buffer["big"] is value
    assert len(pickle_errors(caplog, "big")) == 1
    assert buffer.statistics().write_errors == 1


def test_evict_spills_the_least_recently_used_value(roomy: FbSpillBuffer) -> None:
    """`evict` writes and drops the oldest value in memory and returns its sizeof."""
    values = {f"k{i}": array(i) for i in range(4)}
    for key, value in values.items():
        roomy[key] = value
    assert roomy.evict() == safe_sizeof(values["k0"])
    assert set(roomy.slow) == {"k0"}
    assert set(roomy.fast) == {"k1", "k2", "k3"}
    assert roomy.manual_evictions == 1
    assert roomy.spilled_total.memory == safe_sizeof(values["k0"])
    assert roomy.spilled_total.disk == blob_size(roomy, "k0")
    assert roomy["k0"] is values["k0"]  # still referenced here: the live object
    assert roomy.statistics().loads == 0
    del values["k0"]
    assert np.array_equal(roomy["k0"], array(0))
    assert roomy.statistics().loads == 1


def test_evict_until_nothing_is_left_in_memory(roomy: FbSpillBuffer) -> None:
    """Repeated `evict` empties ``fast``, then answers -1; every value still reads back."""
    for i in range(5):
        roomy[i] = array(i)
    freed = [roomy.evict() for _ in range(5)]
    assert freed == [safe_sizeof(array(0))] * 5
    assert not roomy.fast
    assert roomy.evict() == -1
    roomy.finished()
    assert len(blob_files(roomy)) == 5  # the persisted copies were deleted again
    assert not list(Path(roomy.location.root, "evicted").glob("??/*"))
    for i in range(5):
        assert np.array_equal(roomy[i], array(i))  # type: ignore[arg-type]


def test_evict_of_an_unpicklable_value_returns_minus_one(
    roomy: FbSpillBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """`evict` answers -1 for a value that fails to pickle, keeps it, and moves on next time."""
    lock = threading.Lock()
    roomy["lock"] = lock
    roomy["a"] = array(1)
    assert roomy.evict() == -1
    assert roomy.unspillable == {"lock"}
    assert roomy["lock"] is lock
    (record,) = pickle_errors(caplog, "lock")
    assert record.exc_info is not None  # raised here, not logged by fb before
    assert roomy.evict() == safe_sizeof(array(1))
    assert roomy.evict() == -1


def test_value_read_before_eviction_is_the_one_read_after(roomy: FbSpillBuffer) -> None:
    """A value Dask holds is what a read after its eviction returns, without a load."""
    roomy["a"] = array(5)
    held = roomy["a"]
    assert roomy.evict() > 0
    assert "a" in roomy.slow
    assert roomy["a"] is held
    assert roomy.statistics().loads == 0


def test_setitem_replaces_and_closes_the_old_handle(roomy: FbSpillBuffer) -> None:
    """Setting an existing key closes its old handle, whose blob is then deleted."""
    roomy["a"] = array(1)
    assert roomy.evict() > 0
    roomy.finished()
    assert len(blob_files(roomy)) == 1
    roomy["a"] = array(2)
    roomy.finished()
    assert blob_files(roomy) == []
    assert len(roomy) == 1
    assert len(roomy.pool) == 1
    assert np.array_equal(roomy["a"], array(2))  # type: ignore[arg-type]


def test_spilled_total_counts_values_on_storage_only(buffer: FbSpillBuffer) -> None:
    """``spilled_total``: the sizeof total of the keys in ``slow``, and their blobs' sizes."""
    for i in range(6):
        buffer[i] = array(i)
    buffer.finished()
    expected = sum(safe_sizeof(array(0)) for _ in buffer.slow)
    assert expected > 0
    on_disk = sum(blob_size(buffer, key) for key in buffer.slow)
    assert buffer.spilled_total == SpilledSize(expected, on_disk)


def test_concurrent_threads(buffer: FbSpillBuffer) -> None:
    """Threads setting, reading, deleting and evicting at once leave a consistent mapping."""
    start = threading.Barrier(5, timeout=TIMEOUT)
    evicted = threading.Event()
    stop = threading.Event()

    def steps(thread: int, rng: random.Random, last: Steps, numbers: range) -> None:
        for step in numbers:
            key = (thread, rng.randrange(8))
            action = rng.random()
            if action < 0.5:
                buffer[key] = array(step, 8_000 * (1 + step % 5))
                last[key] = step
            elif action < 0.8 and key in last:
                assert buffer[key][0] == last[key]  # type: ignore[index]
            elif key in last:
                del buffer[key]
                del last[key]

    def writer(thread: int) -> Steps:
        rng = random.Random(thread)
        last: Steps = {}
        start.wait()
        steps(thread, rng, last, range(100))
        buffer[(thread, 8)] = array(-1)  # something in memory for the evictor, whatever
        last[(thread, 8)] = -1  # the random steps left there
        assert evicted.wait(TIMEOUT)  # the second half runs while values are evicted
        steps(thread, rng, last, range(100, 200))
        return last

    def evictor() -> int:
        start.wait()
        count = 0
        while not stop.is_set():
            if buffer.evict() > 0:
                count += 1
                evicted.set()
            # Iterating and sizing while the writers change the mapping must not fail.
            assert len(list(buffer)) <= 36
            assert len(buffer.fast) + len(buffer.slow) <= 36
            assert buffer.spilled_total.memory >= 0
        return count

    with ThreadPoolExecutor(5) as pool:
        spiller = pool.submit(evictor)
        writers = [pool.submit(writer, thread) for thread in range(4)]
        try:
            finals = [job.result(timeout=3 * TIMEOUT) for job in writers]
        finally:
            stop.set()
        assert spiller.result(timeout=TIMEOUT) > 0
    buffer.finished()
    expected = {key: step for final in finals for key, step in final.items()}
    assert set(buffer) == set(expected)
    for key, step in expected.items():
        assert buffer[key][0] == step  # type: ignore[index]
    assert len(buffer.pool) == len(expected)


def test_close_deletes_blobs_and_the_session_directory(spill_dir: Path) -> None:
    """Closing deletes every blob and the session directory; it is idempotent."""
    buffer = FbSpillBuffer(url=spill_dir, max_bytes=BUDGET)
    for i in range(6):
        buffer[i] = array(i)
    assert buffer.evict() > 0
    buffer.finished()
    assert blob_files(buffer)
    buffer.close()
    buffer.close()
    assert list(spill_dir.iterdir()) == []
    with pytest.raises(StoreClosedError):
        buffer["again"] = array(0)
    assert buffer.evict() == -1


def test_two_buffers_share_one_url(spill_dir: Path) -> None:
    """Two workers' buffers on one URL get session directories of their own."""
    with (
        FbSpillBuffer(url=spill_dir, max_bytes=BUDGET) as first,
        FbSpillBuffer(url=spill_dir, max_bytes=BUDGET) as second,
    ):
        assert first.location != second.location
        first["a"], second["a"] = array(1), array(2)
        assert first.evict() > 0
        assert second.evict() > 0
        assert np.array_equal(first["a"], array(1))  # type: ignore[arg-type]
        assert np.array_equal(second["a"], array(2))  # type: ignore[arg-type]
    assert list(spill_dir.iterdir()) == []


def test_default_location_is_the_worker_directory(tmp_path: Path) -> None:
    """Without a URL the session directory goes below the worker's own directory."""
    with FbSpillBuffer(str(tmp_path), max_bytes=BUDGET) as buffer:
        assert Path(buffer.location.root).parent == tmp_path
        buffer["a"] = array(1)
        assert buffer.evict() > 0
        assert np.array_equal(buffer["a"], array(1))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_on_s3(s3: S3Bucket) -> None:
    """On S3 the buffer spills, evicts and reloads, and leaves the bucket empty at close."""
    with FbSpillBuffer(url=s3.url("spill"), max_bytes=BUDGET, storage_options=s3.options) as buffer:
        for i in range(6):
            buffer[i] = array(i)
        buffer.finished()
        assert buffer.evict() > 0
        stats = buffer.statistics()
        assert stats.stores >= 4
        assert s3.names("spill/")
        for i in range(6):
            assert np.array_equal(buffer[i], array(i))  # type: ignore[arg-type]
        assert buffer.statistics().loads >= 4
    assert s3.names() == []


# -- real clusters -------------------------------------------------------------------------

CLUSTER_BUDGET = 2 * 2**20
"""Each worker's pool budget: the two 18 MB arrays below are nine times both budgets."""


def worker_report(dask_worker: Worker) -> dict[str, Any]:
    """Return a worker's pool counters (run on the workers through ``Client.run``)."""
    data = dask_worker.data
    assert isinstance(data, FbSpillBuffer)
    return {**attrs.asdict(data.statistics()), "manual_evictions": data.manual_evictions}


def evict_all(dask_worker: Worker) -> int:
    """Spill every value a worker holds in memory, as its memory monitor would."""
    data = dask_worker.data
    assert isinstance(data, FbSpillBuffer)
    count = 0
    while data.evict() > 0:
        count += 1
    return count


def run_workload(
    data: tuple[type[FbSpillBuffer], dict[str, Any]], *, processes: bool
) -> dict[str, dict[str, Any]]:
    """Run a reduction over persisted arrays on a two-worker cluster; return worker stats."""
    config = {
        # Only fb's budget and `evict_all` move values out of memory. The memory monitor
        # would spill too once a process passes 60% of its limit, and in-process workers
        # measure the whole test process: late in a suite run it had spilled everything
        # before `evict_all` ran. Never pause or kill a worker in a test run either.
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": False,
    }
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=processes,
            memory_limit="1GiB",
            dashboard_address=None,
            data=data,
            plugins={FbSpillPlugin()},
        ) as cluster,
        Client(cluster) as client,
    ):
        x = da.random.RandomState(0).random_sample((1500, 1500), chunks=(250, 250))
        x = x.persist()
        expected = x.compute()
        y = (x + x.T).persist()
        assert np.isclose(y.sum().compute(), (expected + expected.T).sum())
        evicted = client.run(evict_all)
        assert sum(evicted.values()) > 0
        assert np.allclose(y[:250].compute(), (expected + expected.T)[:250])
        reports: dict[str, dict[str, Any]] = client.run(worker_report)
    return reports


def check_reports(reports: dict[str, dict[str, Any]]) -> None:
    """Every worker spilled (stores, evictions) and read back (loads), without errors.

    Manual evictions are counted over the cluster: a worker whose values all left memory
    through its budget before the forced eviction has nothing left to evict by hand.
    """
    assert len(reports) == 2
    for stats in reports.values():
        assert stats["stores"] > 0
        assert stats["evictions_dirty"] > 0
        assert stats["loads"] > 0
        assert stats["write_errors"] == stats["load_errors"] == 0
        assert stats["resident_bytes"] <= CLUSTER_BUDGET
    assert sum(stats["manual_evictions"] for stats in reports.values()) > 0


def test_cluster_spills_to_local_disk(spill_dir: Path) -> None:
    """A cluster computes a result far larger than its pools' budgets, spilling to disk."""
    data = (FbSpillBuffer, {"url": str(spill_dir), "max_bytes": CLUSTER_BUDGET})
    reports = run_workload(data, processes=True)
    check_reports(reports)
    assert list(spill_dir.iterdir()) == []  # the plugin closed both buffers


def test_cluster_spills_to_s3(s3: S3Bucket) -> None:
    """The same workload spills to moto's S3 server; the bucket is empty afterwards."""
    # In-process workers: the moto server shares this process's interpreter anyway, and
    # worker processes would only add their start-up time.
    options = {"url": s3.url("spill"), "max_bytes": CLUSTER_BUDGET, "storage_options": s3.options}
    check_reports(run_workload((FbSpillBuffer, options), processes=False))
    assert s3.names() == []


def test_in_process_cluster_uses_the_worker_directory() -> None:
    """Without a URL each in-process worker's buffer lives in that worker's directory."""

    def location(dask_worker: Worker) -> tuple[str, str]:
        data = dask_worker.data
        assert isinstance(data, FbSpillBuffer)
        return data.location.root, dask_worker.local_directory

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            data=(FbSpillBuffer, {"max_bytes": 2**20}),
            plugins={FbSpillPlugin()},
        ) as cluster,
        Client(cluster) as client,
    ):
        x = da.arange(1_000_000, chunks=10_000, dtype="f8").persist()
        assert x.sum().compute() == 999_999 * 1_000_000 / 2
        places = client.run(location)
        roots = [root for root, _ in places.values()]
        assert len(set(roots)) == 2
        for root, directory in places.values():
            assert Path(root).parent == Path(directory)
