"""Spill metrics of an FbSpillBuffer under distributed's labels (``disk-write``, ``disk-read``)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

from distributed.metrics import context_meter

from .._stats import PoolStatistics

__all__ = ["SpillMetrics", "metered_io"]

_UNITS = frozenset({"bytes", "count", "seconds"})
"""The units distributed's Prometheus collector files ``cumulative_metrics`` under."""


@contextmanager
def metered_io(label: str) -> Iterator[list[int]]:
    """Report the spill I/O of the block (``disk-write`` or ``disk-read``) to Dask's meter.

    The block appends the bytes it moved to the yielded list; a block that moved nothing
    (the value had a blob already, or was in memory) reports nothing. The seconds exclude
    what was metered inside the block (``serialize``, ``compress``…), as
    ``context_meter.meter`` does, so the labels add up to the elapsed time.
    """
    inner: list[float] = []

    def _inner(_label: Hashable, value: float, unit: str) -> None:
        if unit == "seconds":
            inner.append(value)  # list.append: safe from distributed's offload threads

    moved: list[int] = []
    start = time.perf_counter()
    with context_meter.add_callback(_inner):
        yield moved
    if moved:
        seconds = max(0.0, time.perf_counter() - start - sum(inner))
        context_meter.digest_metric(label, seconds, "seconds")
        context_meter.digest_metric(label, len(moved), "count")
        context_meter.digest_metric(label, sum(moved), "bytes")


class SpillMetrics:
    """The cumulative spill metrics of one buffer (what distributed's SpillBuffer keeps).

    Metrics digested to Dask's context meter while `capture` is active (by the buffer's
    own reads and manual evictions, and by ``distributed.protocol`` when the ``dask`` codec
    runs in that thread) are added up by ``(label, unit)``. Write-backs that fb runs in its
    own threads have no Dask context: `totals` takes their ``disk-write`` count, bytes and
    seconds from the pool's counters instead.

    Notes:
        Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: defaultdict[tuple[str, str], float] = defaultdict(float)

    def _add(self, label: Hashable, value: float, unit: str) -> None:
        if isinstance(label, str) and unit in _UNITS:
            with self._lock:
                self._totals[label, unit] += value

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Add up every metric digested in this thread while the block runs."""
        with context_meter.add_callback(self._add):
            yield

    def totals(self, stats: PoolStatistics) -> dict[tuple[str, str], float]:
        """Return ``(label, unit) -> total``, with every write-back counted from ``stats``."""
        with self._lock:
            totals = dict(self._totals)
        totals["disk-write", "count"] = stats.stores
        totals["disk-write", "bytes"] = stats.bytes_written
        totals["disk-write", "seconds"] = stats.store_seconds
        return totals
