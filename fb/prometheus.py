"""Prometheus metrics for fb pools: a collector to register on a ``prometheus_client`` registry.

Needs the ``prometheus`` extra (``pip install 'file-backed[prometheus]'``)::

    from prometheus_client import REGISTRY, start_http_server
    from fb.prometheus import Collector

    REGISTRY.register(Collector(pool))           # or Collector({"images": a, "tables": b})
    start_http_server(9100)

Each scrape takes one `FBPool.statistics` snapshot per pool (a lock held for a few
microseconds, no I/O). Counters carry the ``_total`` suffix in the exposition:

| metric | from `fb.PoolStatistics` |
| --- | --- |
| `fb_hits_total` | `hits` |
| `fb_misses_total` | `misses` |
| `fb_loads_total` | `loads` |
| `fb_stores_total` | `stores` |
| `fb_evictions_total{kind}` | `evictions_clean` (kind="clean"), `evictions_dirty` |
| `fb_written_bytes_total` | `bytes_written` (encoded bytes) |
| `fb_loaded_bytes_total` | `bytes_loaded` (`sizeof` of the values loaded) |
| `fb_load_seconds_total` | `load_seconds` |
| `fb_store_seconds_total` | `store_seconds` |
| `fb_errors_total{kind}` | `write_errors` (kind="write"), `load_errors` |
| `fb_insert_waits_total` | `insert_waits` |
| `fb_items` | `items` |
| `fb_resident_items` | `resident_items` |
| `fb_resident_bytes` | `resident_bytes` |
| `fb_pending_writes` | `pending_writes` |
| `fb_pending_bytes` | `pending_bytes` |
| `fb_background_errors` | `background_errors` |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._pool import FBPool
from ._stats import PoolStatistics

__all__ = ["COUNTERS", "GAUGES", "Collector"]

COUNTERS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "hits": ("Loads served from memory.", (("", "hits"),)),
    "misses": ("Loads that waited for storage.", (("", "misses"),)),
    "loads": ("Values read back from storage.", (("", "loads"),)),
    "stores": ("Blobs written to storage.", (("", "stores"),)),
    "evictions": (
        "Values dropped from memory: clean (a blob existed) or dirty (after a write-back).",
        (("clean", "evictions_clean"), ("dirty", "evictions_dirty")),
    ),
    "written_bytes": ("Encoded bytes written to storage.", (("", "bytes_written"),)),
    "loaded_bytes": ("Size (sizeof) of the values read back.", (("", "bytes_loaded"),)),
    "load_seconds": ("Time spent reading values back.", (("", "load_seconds"),)),
    "store_seconds": ("Time spent writing blobs.", (("", "store_seconds"),)),
    "errors": (
        "Failed writes (the value stayed in memory) and failed loads.",
        (("write", "write_errors"), ("load", "load_errors")),
    ),
    "insert_waits": ("Inserts that waited for write-back (backpressure).", (("", "insert_waits"),)),
}
"""Counter name (without ``fb_`` and ``_total``) -> help, and (kind label, statistic) pairs."""

GAUGES: dict[str, tuple[str, str]] = {
    "items": ("Live handles in the pool.", "items"),
    "resident_items": ("Values in memory now.", "resident_items"),
    "resident_bytes": ("Size (sizeof) of the values in memory now.", "resident_bytes"),
    "pending_writes": ("Writes in flight now.", "pending_writes"),
    "pending_bytes": ("Size (sizeof) of the values waiting for write-back.", "pending_bytes"),
    "background_errors": (
        "Errors collected by the store and not yet raised by finished().",
        "background_errors",
    ),
}
"""Gauge name (without ``fb_``) -> help and statistic."""


class Collector:
    """Exposes the statistics of one pool, or of several pools labelled by name.

    Args:
        pools: a pool, or a mapping of names to pools (each sample then carries
            ``pool="<name>"``).
        namespace: the prefix of every metric name.
        labels: constant labels added to every sample (``{"host": "a"}``).

    Notes:
        Thread-safe: ``collect`` may run on a scrape thread while the pools are in use.
        It never blocks on I/O. The collector keeps the pools alive: unregister it when
        the pools are closed. A statistic an older fb does not have is left out.
    """

    def __init__(
        self,
        pools: FBPool[Any] | Mapping[str, FBPool[Any]],
        *,
        namespace: str = "fb",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._pools: dict[str | None, FBPool[Any]] = {}
        if isinstance(pools, FBPool):
            self._pools[None] = pools
        else:
            for name, pool in pools.items():
                self._pools[name] = pool
            if not self._pools:
                raise ValueError("give at least one pool")
            if not all(isinstance(pool, FBPool) for pool in self._pools.values()):
                raise TypeError("every value of the mapping must be an FBPool")
        self._namespace = namespace
        self._labels = dict(labels or {})
        if "pool" in self._labels or "kind" in self._labels:
            raise ValueError("the labels 'pool' and 'kind' are fb's own")

    def __repr__(self) -> str:
        names = ", ".join(repr(name) for name in self._pools if name is not None)
        return f"<fb.prometheus.Collector {self._namespace}_* pools=[{names or 'one'}]>"

    def describe(self) -> Iterable[Metric]:
        """Return the metric families without samples (lets a registry check for clashes)."""
        return list(self._families([]))

    def collect(self) -> Iterable[Metric]:
        """Return the metric families with one snapshot of every pool."""
        snapshots = [(name, pool.statistics()) for name, pool in self._pools.items()]
        return list(self._families(snapshots))

    def _families(self, snapshots: list[tuple[str | None, PoolStatistics]]) -> Iterator[Metric]:
        prefix = f"{self._namespace}_" if self._namespace else ""
        base = list(self._labels)
        pool_label = [] if None in self._pools else ["pool"]
        for name, (text, parts) in COUNTERS.items():
            kinds = [] if parts[0][0] == "" else ["kind"]
            counter = CounterMetricFamily(prefix + name, text, labels=base + pool_label + kinds)
            for pool, stats in snapshots:
                for kind, field in parts:
                    if hasattr(stats, field):
                        values = self._values(pool) + ([kind] if kinds else [])
                        counter.add_metric(values, float(getattr(stats, field)))
            yield counter
        for name, (text, field) in GAUGES.items():
            gauge = GaugeMetricFamily(prefix + name, text, labels=base + pool_label)
            for pool, stats in snapshots:
                if hasattr(stats, field):
                    gauge.add_metric(self._values(pool), float(getattr(stats, field)))
            yield gauge

    def _values(self, pool: str | None) -> list[str]:
        return list(self._labels.values()) + ([] if pool is None else [pool])
