"""FbSpillBuffer keeps a worker inside its memory limit: what counts against ``max_bytes``.

Storage is slowed down or gated with `fb.testing.faults.FaultyStrategy` (swapped in under
the buffer's store) so that the tests can look at memory while writes wait.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fb.integrations.dask import FbSpillBuffer
from fb.testing.faults import ENOSPC, FaultyStrategy
from tests.conftest import TIMEOUT

ITEM = 100_000
"""Bytes of one test value."""

MAX_BYTES = 10 * ITEM
"""The buffers' bound: by default 7.5 values resident, 2.5 values' worth pending."""

BLOCKED = 0.3
"""How long a test lets a call that must wait for storage show that it does wait."""


def array(i: int, nbytes: int = ITEM) -> np.ndarray[Any, Any]:
    """Return a float64 array of ``nbytes`` bytes filled with ``i``."""
    return np.full(nbytes // 8, i, dtype="f8")


def held(buffer: FbSpillBuffer) -> int:
    """Bytes of the values the buffer's pool holds in memory (resident and pending)."""
    return buffer.statistics().resident_bytes


def gate_writes(buffer: FbSpillBuffer) -> threading.Event:
    """Make every write of ``buffer`` wait until the returned event is set."""
    faulty: FaultyStrategy[Any] = FaultyStrategy(buffer._store.strategy)
    buffer._store.strategy = faulty
    gate = threading.Event()
    faulty.block("store", gate)
    return gate


@pytest.fixture(name="buffer")
def fixture_buffer(tmp_path: Path) -> Iterator[FbSpillBuffer]:
    """A buffer on local disk with the default pending share."""
    buffer = FbSpillBuffer(url=tmp_path, max_bytes=MAX_BYTES)
    yield buffer
    buffer.close()


def test_pending_writes_are_a_share_of_max_bytes_by_default(buffer: FbSpillBuffer) -> None:
    """By default a quarter of max_bytes may be pending; the pool keeps the rest resident."""
    assert buffer.max_bytes == MAX_BYTES
    assert buffer.max_pending_bytes == MAX_BYTES // 4
    assert buffer.pool.max_bytes == MAX_BYTES - MAX_BYTES // 4


def test_an_explicit_pending_bound_is_taken_from_max_bytes(tmp_path: Path) -> None:
    """An explicit max_pending_bytes is part of max_bytes, and cannot exceed it."""
    with FbSpillBuffer(url=tmp_path, max_bytes=MAX_BYTES, max_pending_bytes=0) as buffer:
        assert (buffer.pool.max_bytes, buffer.max_pending_bytes) == (MAX_BYTES, 0)
    with pytest.raises(ValueError, match="max_pending_bytes"):
        FbSpillBuffer(url=tmp_path, max_bytes=MAX_BYTES, max_pending_bytes=MAX_BYTES + 1)
    with pytest.raises(TypeError, match="max_bytes"):
        FbSpillBuffer(url=tmp_path, max_bytes=None)  # type: ignore[arg-type]


def test_stores_stay_within_max_bytes_while_storage_is_stuck(buffer: FbSpillBuffer) -> None:
    """With writes stuck, resident plus pending values stay within max_bytes + one value."""
    gate = gate_writes(buffer)
    stored = 0
    try:
        while buffer.statistics().pending_bytes <= buffer.pool.max_pending_bytes:
            assert stored < 30, "the pending bound was never reached"
            buffer[stored] = array(stored)
            stored += 1
            assert held(buffer) <= MAX_BYTES + ITEM
        # The next store waits for storage instead of growing memory.
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(buffer.__setitem__, "next", array(99))
            with pytest.raises(FutureTimeout):
                job.result(timeout=BLOCKED)
            assert held(buffer) <= MAX_BYTES + ITEM
            gate.set()
            job.result(timeout=TIMEOUT)
    finally:
        gate.set()
    buffer.finished()
    assert held(buffer) <= MAX_BYTES - MAX_BYTES // 4
    assert np.array_equal(buffer["next"], array(99))  # type: ignore[arg-type]
    for i in range(stored):
        assert np.array_equal(buffer[i], array(i))  # type: ignore[arg-type]


def test_reading_a_spilled_value_waits_for_pending_writes(buffer: FbSpillBuffer) -> None:
    """A read from storage pushes values out, so it waits while too many are pending."""
    for i in range(10):
        buffer[i] = np.full(ITEM // 8, i, dtype="f8")  # not referenced here: read back
    buffer.finished()
    assert 0 in buffer.slow
    gate = gate_writes(buffer)
    i = 10
    try:
        while buffer.statistics().pending_bytes <= buffer.pool.max_pending_bytes:
            assert i < 40, "the pending bound was never reached"
            buffer[i] = array(i)
            i += 1
        loads = buffer.statistics().loads
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(buffer.__getitem__, 0)
            with pytest.raises(FutureTimeout):
                job.result(timeout=BLOCKED)
            assert buffer.statistics().loads == loads
            assert held(buffer) <= MAX_BYTES + ITEM
            gate.set()
            assert np.array_equal(job.result(timeout=TIMEOUT), array(0))  # type: ignore[arg-type]
    finally:
        gate.set()


def test_a_value_larger_than_the_budget_leaves_the_others_in_memory(tmp_path: Path) -> None:
    """Eight small values and one larger than max_bytes: only the large one is spilled."""
    with FbSpillBuffer(url=tmp_path, max_bytes=20 * ITEM) as buffer:
        for i in range(8):
            buffer[f"small-{i}"] = array(i)
        buffer["large"] = array(9, 25 * ITEM)
        buffer.finished()
        assert set(buffer.fast) == {f"small-{i}" for i in range(8)}
        assert set(buffer.slow) == {"large"}
        assert held(buffer) == 8 * ITEM
        assert buffer.statistics().stores == 1


class SupportsWeakRef:
    """A value that takes weak references."""

    def __init__(self, nbytes: int) -> None:
        self.data = bytes(nbytes)

    def __sizeof__(self) -> int:
        return len(self.data)


class NoWeakRef:
    """A value that takes no weak references (``__slots__`` without ``__weakref__``)."""

    __slots__ = ("data",)

    def __init__(self, nbytes: int) -> None:
        self.data = bytes(nbytes)

    def __sizeof__(self) -> int:
        return len(self.data)


@pytest.mark.parametrize(("cls", "cached"), [(SupportsWeakRef, True), (NoWeakRef, False)])
@pytest.mark.parametrize("nbytes", [4 * ITEM, 20 * ITEM], ids=["pushed-out", "oversize"])
def test_a_spilled_value_still_referenced_is_returned_without_a_load(
    tmp_path: Path, cls: type[SupportsWeakRef | NoWeakRef], cached: bool, nbytes: int
) -> None:
    """A read returns the live object of a spilled key while one is referenced elsewhere."""
    with FbSpillBuffer(url=tmp_path, max_bytes=10 * ITEM) as buffer:
        x = cls(nbytes)
        buffer["x"] = x
        buffer["y"] = cls(4 * ITEM)  # pushes x out (an oversize x is out already)
        buffer.finished()
        assert "x" in buffer.slow
        assert (buffer["x"] is x) is cached
        assert buffer.statistics().loads == (0 if cached else 1)
        ref = weakref.ref(x) if cached else None
        del x
        assert ref is None or ref() is None  # the buffer's weak reference kept it not alive
        buffer["y"]  # x out again, if it was read back
        buffer.finished()
        assert "x" in buffer.slow
        loads = buffer.statistics().loads
        x2 = buffer["x"]
        assert buffer.statistics().loads == loads + 1  # a fresh copy: the original is gone
        buffer.finished()  # y, pushed out by x2, written
        buffer["y"]
        buffer.finished()
        assert "x" in buffer.slow
        assert (buffer["x"] is x2) is cached  # the copy read back is cached in turn


def test_reads_and_stores_do_not_wait_for_writes_that_keep_failing(
    buffer: FbSpillBuffer,
) -> None:
    """While storage fails (a full disk), reads and stores go ahead all the same."""
    for i in range(10):
        buffer[i] = np.full(ITEM // 8, i, dtype="f8")  # not referenced here: read back
    buffer.finished()
    assert 0 in buffer.slow
    faulty: FaultyStrategy[Any] = FaultyStrategy(buffer._store.strategy)
    buffer._store.strategy = faulty
    faulty.fail("store", ENOSPC)
    i = 10
    while buffer.statistics().pending_bytes <= buffer.pool.max_pending_bytes:
        assert i < 40, "the pending bound was never reached"
        buffer[i] = array(i)
        i += 1
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(buffer.__getitem__, 0)
        more = pool.submit(buffer.__setitem__, "more", array(99))
        try:
            value = job.result(timeout=TIMEOUT)
            more.result(timeout=TIMEOUT)
        finally:
            faulty.heal()  # a read that waits for the writes ends once they succeed
            buffer.pool.retry_writes()
    assert np.array_equal(value, array(0))  # type: ignore[arg-type]
    with pytest.raises((OSError, ExceptionGroup)):
        buffer.finished()  # the failures from before the disk had room again
