"""How ``fb bench`` times the systems, and what it measures beyond them.

The timing of a phase, with its garbage collection and pre-touch of fresh memory; the three
phases of a system; the ``physical`` rows; the hit path and fb's scaling. The workloads and
the systems under test are in `fb._bench_systems`.
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click

from ._bench_systems import _FbSystem, _System, _Values
from ._pool import FBPool
from ._store import BackingStore
from .backends import FBStore, PreparedPath
from .codecs import PickleCodec

__all__ = [
    "SCALE_LOADS",
    "SPILL_RESIDENT",
    "TRACE_MAX_ITEMS",
    "_hit_path",
    "_insert_all",
    "_pretouch",
    "_run_physical",
    "_run_system",
    "_scale_one",
]

SPILL_RESIDENT = 0.9  # the spilling scaling rows keep 90% of the items in memory
SCALE_LOADS = 20_000  # the scaling rows load this many random distinct items at most
TRACE_MAX_ITEMS = 10_000  # memory per handle: traced up to this many items, else the RSS


# -- timing --------------------------------------------------------------------------------


def _pretouch(nbytes: int) -> None:
    """Fault in ``nbytes`` of fresh memory and free it, just before a timed phase.

    On a VM that hands freed memory back to the host, the first touch of a page costs a
    host fault; pages freed a moment ago are cheap to reuse (for the heap and the page
    cache alike), so the phase measures the system, not the hypervisor.
    """
    import numpy as np

    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = nbytes * 2
    nbytes = min(nbytes, available // 2)
    if nbytes > 0:
        buffer = np.empty(nbytes, dtype=np.uint8)
        buffer[::4096] = 1
        del buffer


def _timed(action: Callable[[], object], touch: int) -> float:
    gc.collect()
    _pretouch(touch)
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _insert_all(system: _System, items: list[Any]) -> None:
    for index, value in enumerate(items):
        system.insert(index, value)
    system.drain()


def _run_system(
    system: _System, values: _Values, orders: dict[str, list[int]]
) -> list[tuple[float, float | None]]:
    """Time the three phases of ``system``; return (seconds, share of reads that missed)."""
    workload = values.workload
    items = [values.make(index) for index in range(workload.count)]

    results: list[tuple[float, float | None]] = [
        (_timed(partial(_insert_all, system, items), workload.total_bytes), None)
    ]
    items.clear()  # from now on, only the system holds the values

    for phase in ("uniform", "zipf"):
        order = orders[phase]

        def read(order: list[int] = order) -> None:
            bad = [index for index in order if not system.read(index, values.check)]
            system.drain()
            if bad:
                raise click.ClickException(
                    f"{system.name} returned a wrong value for item {bad[0]} "
                    f"({len(bad)} wrong reads)"
                )

        misses = system.misses
        seconds = _timed(read, workload.total_bytes)
        results.append((seconds, (system.misses - misses) / len(order)))
    return results


def _write_file(path: Path, values: _Values, fsync: bool) -> None:
    with open(path, "wb", buffering=0) as file:
        for index in range(values.workload.count):
            view = values.raw(index)
            while view:
                view = view[file.write(view) or 0 :]
        if fsync:
            os.fsync(file.fileno())


def _read_file(path: Path, size: int) -> None:
    buffer = bytearray(size)
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


def _memcpy(values: _Values) -> None:
    target = memoryview(bytearray(values.workload.item_bytes))
    for index in range(values.workload.count):
        target[:] = values.raw(index)


def _run_physical(directory: Path, values: _Values) -> list[tuple[float, float | None]]:
    directory.mkdir(parents=True)
    total, size = values.workload.total_bytes, values.workload.item_bytes
    write = _timed(partial(_write_file, directory / "page-cache.bin", values, False), total)
    # On ext4 (data=ordered) a fsync commits the journal with every file's dirty data:
    # flush what the other systems wrote first, so the fsync row pays for its own bytes.
    os.sync()
    seconds = [
        write,
        _timed(partial(_write_file, directory / "fsync.bin", values, True), total),
        _timed(partial(_read_file, directory / "page-cache.bin", size), total),
        _timed(partial(_memcpy, values), 0),
    ]
    return [(one, None) for one in seconds]


# -- hit path and scaling -------------------------------------------------------------------


def _hit_path(ops: int, repeats: int) -> dict[str, list[float]]:
    """Time one hit in ns: fb's read guard, cachetools' LRUCache, a bare OrderedDict, the loop."""
    import cachetools

    items = 1024
    rng = random.Random(0)
    keys = [rng.randrange(items) for _ in range(ops)]
    value = b"x" * 16
    # No I/O happens (every item stays resident): an in-memory filesystem leaves no litter.
    path = PreparedPath(f"memory://fb-bench-{os.getpid()}-hit-path")
    with BackingStore(FBStore(PickleCodec(), path)) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=4 * items)  # all in the hot segment
        handles = [pool.insert(value) for _ in range(items)]
        sequence = [handles[key] for key in keys]
        lru: cachetools.LRUCache[int, bytes] = cachetools.LRUCache(maxsize=4 * items)
        ordered: OrderedDict[int, bytes] = OrderedDict()
        for key in range(items):
            lru[key] = ordered[key] = value

        def fb_load() -> None:
            for handle in sequence:
                with handle.load():
                    pass

        def cachetools_get() -> None:
            for key in keys:
                lru[key]

        def ordereddict_get() -> None:
            for key in keys:
                ordered.move_to_end(key)
                ordered[key]

        def loop() -> None:
            for _key in keys:
                pass

        loops = {
            "fb": fb_load,
            "cachetools": cachetools_get,
            "ordereddict": ordereddict_get,
            "loop": loop,
        }
        results: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(repeats):
            for name, action in loops.items():
                results[name].append(_timed(action, 0) / ops * 1e9)
        for handle in handles:
            handle.close()
    return results


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _traced_per_handle(count: int) -> float:
    """Bytes that Python allocates per inserted item, traced (an untimed pass of its own).

    For small counts the growth of the resident set says little: the process reuses memory
    that earlier phases freed. Tracing is exact, but slows the inserts down.
    """
    values = [index.to_bytes(16, "little") for index in range(count)]
    path = PreparedPath(f"memory://fb-bench-{os.getpid()}-traced-{count}")
    with BackingStore(FBStore(PickleCodec(), path)) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=count)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        handles = [pool.insert(value) for value in values]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        for handle in handles:
            handle.close()
    return (after - before) / count


def _scale_one(root: Path, count: int, spilling: bool, parked: list[_System]) -> dict[str, Any]:
    values = [index.to_bytes(16, "little") for index in range(count)]
    if spilling:
        path = PreparedPath(root / f"scaling-{count}")
    else:  # no I/O happens: an in-memory filesystem saves creating 256 shard directories
        path = PreparedPath(f"memory://fb-bench-{os.getpid()}-scaling-{count}")
    max_items = int(count * SPILL_RESIDENT) if spilling else count
    system = _FbSystem(path, max_items=max_items)
    handles = system.handles
    gc.collect()
    before = _rss()
    start = time.perf_counter()
    handles.extend(system.pool.insert(value) for value in values)
    system.store.finished()
    insert_s = time.perf_counter() - start
    after = _rss()
    order = random.Random(count).sample(range(count), min(count, SCALE_LOADS))

    def load() -> None:
        bad = 0
        for index in order:
            with handles[index].load() as value:
                bad += value != values[index]
        system.store.finished()
        if bad:
            raise click.ClickException(f"fb returned {bad} wrong values in the scaling test")

    load_s = _timed(load, 0)
    if spilling:
        parked.append(system)  # its blobs are deleted at the end, with everything else
    else:
        system.close()
    if count <= TRACE_MAX_ITEMS or before is None or after is None:
        per_handle, method = _traced_per_handle(count), "tracemalloc"
    else:
        per_handle, method = (after - before) / count, "rss"
    return {
        "items": count,
        "mode": "spilling" if spilling else "resident",
        "max_items": max_items,
        "loads": len(order),
        "insert_us": insert_s / count * 1e6,
        "load_us": load_s / len(order) * 1e6,
        "bytes_per_handle": per_handle,
        "memory_method": method,
    }
