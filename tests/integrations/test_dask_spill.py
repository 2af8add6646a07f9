"""FbSpillBuffer speaks Dask: its serialization, its spill logger, its spill metrics."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed.metrics import context_meter
from distributed.utils import RateLimiterFilter

from fb.codecs import DaskCodec
from fb.integrations.dask import FbSpillBuffer
from fb.testing.faults import ENOSPC, FaultyStrategy

ITEM = 100_000
"""Bytes of one test value."""

LOGGER = "distributed.spill"

Digests = list[tuple[Hashable, float, str]]


def array(i: int) -> np.ndarray[Any, Any]:
    """Return a float64 array of ITEM bytes filled with ``i``."""
    return np.full(ITEM // 8, i, dtype="f8")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return what was logged to distributed's spill logger."""
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def faulty(buffer: FbSpillBuffer) -> FaultyStrategy[Any]:
    """Swap a fault-injecting wrapper in under the buffer's store."""
    wrapper: FaultyStrategy[Any] = FaultyStrategy(buffer._store.strategy)
    buffer._store.strategy = wrapper
    return wrapper


@pytest.fixture(name="roomy")
def fixture_roomy(tmp_path: Path) -> Iterator[FbSpillBuffer]:
    """A buffer whose budget never spills: only `evict` moves values out of memory."""
    buffer = FbSpillBuffer(url=tmp_path, max_bytes=100 * ITEM)
    yield buffer
    buffer.close()


@pytest.fixture(name="rate_limits", autouse=True)
def fixture_rate_limits() -> None:
    """Forget the spill logger's rate limits, so each test sees its first message."""
    RateLimiterFilter.reset_timer(LOGGER)


# -- serialization -------------------------------------------------------------------------


def test_spills_with_dask_serialization_by_default(roomy: FbSpillBuffer) -> None:
    """The default codec is distributed's serialization (`DaskCodec`)."""
    assert roomy._store.strategy.codec == DaskCodec()  # type: ignore[attr-defined]


def test_a_class_plain_pickle_refuses_is_spilled(tmp_path: Path) -> None:
    """Values of a class defined in a script or notebook spill through cloudpickle."""

    class Result:  # local: plain pickle cannot find it by name, like one in __main__
        def __init__(self, i: int) -> None:
            self.data = array(i)

        def __sizeof__(self) -> int:
            return ITEM

    with FbSpillBuffer(url=tmp_path, max_bytes=4 * ITEM) as buffer:
        for i in range(10):
            buffer[i] = Result(i)
        buffer.finished()
        assert buffer.unspillable == frozenset()
        assert len(buffer.slow) >= 7
        assert all(np.array_equal(buffer[i].data, array(i)) for i in range(10))  # type: ignore[attr-defined]


# -- logging -------------------------------------------------------------------------------


def test_a_value_that_fails_to_pickle_is_logged_to_distributed_spill(
    roomy: FbSpillBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """An unpicklable value that evict meets is kept, and logged where Dask users look."""
    lock = threading.Lock()
    roomy["lock"] = lock
    assert roomy.evict() == -1
    assert roomy["lock"] is lock
    assert roomy.unspillable == {"lock"}
    assert [m for m in messages(caplog) if m.startswith("Failed to pickle 'lock'")]


def test_a_full_disk_keeps_the_value_and_is_logged(
    roomy: FbSpillBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC during evict: -1, the value stays in memory, 'Spill to disk failed' logged."""
    store = faulty(roomy)
    store.fail("store", ENOSPC, times=1)
    roomy["a"] = array(1)
    assert roomy.evict() == -1
    assert "a" in roomy.fast
    assert [m for m in messages(caplog) if m.startswith("Spill to disk failed")]
    assert roomy.evict() >= ITEM  # the disk has room again
    assert "a" in roomy.slow


def test_a_failed_background_write_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write-back that fails in fb's threads is logged to distributed.spill, then retried."""
    with FbSpillBuffer(url=tmp_path, max_bytes=4 * ITEM) as buffer:
        store = faulty(buffer)
        store.fail("store", ENOSPC, times=1)
        for i in range(5):
            buffer[i] = array(i)
        with pytest.raises(OSError, match="No space"):
            buffer.finished()
        assert [m for m in messages(caplog) if m.startswith("Spill to disk failed")]
        assert buffer.pool.retry_writes() == 1
        buffer.finished()
        assert 0 in buffer.slow


# -- metrics -------------------------------------------------------------------------------


def metered(digests: Digests) -> Any:
    """Collect what Dask's context meter receives in this thread into ``digests``."""

    def callback(label: Hashable, value: float, unit: str) -> None:
        digests.append((label, value, unit))

    return context_meter.add_callback(callback)


def labels(digests: Digests) -> list[tuple[Hashable, str]]:
    """Return the (label, unit) of each digest, in order."""
    return [(label, unit) for label, _, unit in digests]


def test_manual_eviction_reports_serialize_and_disk_write(roomy: FbSpillBuffer) -> None:
    """evict reports serialize, then disk-write seconds, count and bytes (the blob's size)."""
    roomy["a"] = array(1)
    digests: Digests = []
    with metered(digests):
        assert roomy.evict() > 0
    assert ("serialize", "seconds") in labels(digests)
    assert labels(digests)[-3:] == [
        ("disk-write", "seconds"),
        ("disk-write", "count"),
        ("disk-write", "bytes"),
    ]
    handle = roomy._handle("a")
    assert handle is not None
    assert digests[-2][1] == 1
    assert digests[-1][1] == handle.stored_nbytes


def test_reads_report_disk_read_or_memory_read(roomy: FbSpillBuffer) -> None:
    """A read from storage reports disk-read (and deserialize); a resident one memory-read."""
    roomy["a"] = np.full(ITEM // 8, 1, dtype="f8")
    roomy["b"] = array(2)
    assert roomy.evict() > 0
    digests: Digests = []
    with metered(digests):
        roomy["a"]
    assert ("deserialize", "seconds") in labels(digests)
    assert [d[:2] for d in digests if d[0] == "disk-read" and d[2] != "seconds"] == [
        ("disk-read", 1),
        ("disk-read", roomy._handle("a").stored_nbytes),  # type: ignore[union-attr]
    ]
    digests.clear()
    with metered(digests):
        roomy["b"]
    assert labels(digests) == [("memory-read", "count"), ("memory-read", "bytes")]


def test_cumulative_metrics_count_background_writes(tmp_path: Path) -> None:
    """cumulative_metrics, what Prometheus publishes, counts fb's background write-backs."""
    with FbSpillBuffer(url=tmp_path, max_bytes=4 * ITEM) as buffer:
        for i in range(6):
            buffer[i] = array(i)
        buffer.finished()
        stats = buffer.statistics()
        assert stats.stores >= 3
        metrics = buffer.cumulative_metrics
        assert metrics["disk-write", "count"] == stats.stores
        assert metrics["disk-write", "bytes"] == stats.bytes_written
        assert metrics["disk-write", "seconds"] > 0
        assert all(unit in {"bytes", "count", "seconds"} for _, unit in metrics)
        buffer[0]  # read back from storage
        assert buffer.cumulative_metrics["disk-read", "count"] == 1


def test_keys_equal_as_strings_stay_apart_on_storage(roomy: FbSpillBuffer) -> None:
    """Dask keys 1 and "1" are two keys, in memory and once both are spilled."""
    roomy[1] = [10]
    roomy["1"] = [20]
    assert roomy.evict() > 0
    assert roomy.evict() > 0
    assert not roomy.fast
    assert set(roomy) == {1, "1"}
    assert (roomy[1], roomy["1"]) == ([10], [20])
