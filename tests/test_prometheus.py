"""fb.prometheus: a pool's statistics as Prometheus counters and gauges, on a real pool."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fb import BackingStore, FBPool, PoolStatistics
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.prometheus import COUNTERS, GAUGES, Collector


@pytest.fixture(name="backing")
def fixture_backing(tmp_path: Path) -> Iterator[BackingStore[Any]]:
    store: BackingStore[Any] = BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "c")))
    yield store
    store.close()


@pytest.fixture(name="busy_pool")
def fixture_busy_pool(backing: BackingStore[Any]) -> Iterator[FBPool[bytes]]:
    """A pool that has written, evicted and loaded back some values."""
    pool: FBPool[bytes] = FBPool(backing, max_items=2)
    handles = [pool.insert(bytes([i]) * 1000) for i in range(6)]
    backing.finished()
    for handle in handles[:3]:
        with handle.load() as value:
            assert len(value) == 1000
    backing.finished()  # the loads evicted values: let their writes end before sampling
    yield pool
    pool.close()
    backing.finished()


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the registry's text exposition into {(name, sorted labels): value}."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_and_gauges_match_the_statistics(busy_pool: FBPool[bytes]) -> None:
    """Each exposed sample equals the field of the pool's statistics it stands for."""
    registry = CollectorRegistry()
    registry.register(Collector(busy_pool))
    got = samples(registry)
    stats = busy_pool.statistics()
    assert stats.stores > 0
    assert stats.loads > 0
    for name, (_, parts) in COUNTERS.items():
        for kind, field in parts:
            labels = (("kind", kind),) if kind else ()
            value = got[(f"fb_{name}_total", labels)]
            if field.endswith("seconds"):
                assert 0 <= value <= getattr(stats, field)
            else:
                assert value == getattr(stats, field), field
    for name, (_, field) in GAUGES.items():
        assert got[(f"fb_{name}", ())] == getattr(stats, field), field
    assert got[("fb_evictions_total", (("kind", "dirty"),))] == stats.evictions_dirty


def test_every_statistic_is_exported() -> None:
    """Every field of PoolStatistics is a counter or a gauge (a new field needs a metric)."""
    exported = {field for _, parts in COUNTERS.values() for _, field in parts}
    exported |= {field for _, field in GAUGES.values()}
    assert exported == {field.name for field in attrs.fields(PoolStatistics)}


def test_several_pools_and_constant_labels(
    busy_pool: FBPool[bytes], backing: BackingStore[Any]
) -> None:
    """A mapping of pools labels each sample with its pool's name, next to constant labels."""
    idle: FBPool[bytes] = FBPool(backing, max_items=10)
    try:
        registry = CollectorRegistry()
        registry.register(Collector({"busy": busy_pool, "idle": idle}, labels={"host": "h1"}))
        got = samples(registry)
        busy = (("host", "h1"), ("pool", "busy"))
        quiet = (("host", "h1"), ("pool", "idle"))
        assert got[("fb_stores_total", busy)] == busy_pool.statistics().stores
        assert got[("fb_stores_total", quiet)] == 0
        assert got[("fb_items", quiet)] == 0
        assert got[("fb_errors_total", (("host", "h1"), ("kind", "write"), ("pool", "busy")))] == 0
    finally:
        idle.close()


def test_describe_lets_the_registry_refuse_a_duplicate(busy_pool: FBPool[bytes]) -> None:
    """Registering two collectors with the same metric names fails; another namespace works."""
    registry = CollectorRegistry()
    registry.register(Collector(busy_pool))
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(Collector(busy_pool))
    registry.register(Collector(busy_pool, namespace="other"))
    assert ("other_items", ()) in samples(registry)
    assert all(not family.samples for family in Collector(busy_pool).describe())


def test_collector_arguments_are_checked(busy_pool: FBPool[bytes]) -> None:
    """An empty mapping, a value that is not a pool, or a reserved label name are refused."""
    with pytest.raises(ValueError, match="at least one"):
        Collector({})
    with pytest.raises(TypeError, match="FBPool"):
        Collector({"a": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="fb's own"):
        Collector(busy_pool, labels={"pool": "x"})
    assert "fb_*" in repr(Collector(busy_pool))


def test_prometheus_client_is_imported_only_by_fb_prometheus() -> None:
    """Importing fb and its command line does not import prometheus_client."""
    code = (
        "import sys, fb, fb.cli, fb.backends, fb.codecs; "
        "assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
