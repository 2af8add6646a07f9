"""The systems that ``fb bench`` measures, and how it times them.

The workloads and their values; the systems under test (``fb``, ``raw-wt``, ``zict``,
``diskcache``) and the ``physical`` rows; the timing of a phase, with its garbage collection
and pre-touch of fresh memory; the hit path and fb's scaling. `fb._bench` runs them, sums
them up and reports; its module docstring describes the benchmark as a whole.
"""

from __future__ import annotations

import gc
import itertools
import os
import pickle
import random
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import click

from ._handle import Fb
from ._pool import FBPool
from ._store import BackingStore
from .backends import FBStore, PreparedPath
from .codecs import PickleCodec

__all__ = [
    "FACTORIES",
    "KIB",
    "MB",
    "MIB",
    "QUICK",
    "SCALE_LOADS",
    "SPILL_RESIDENT",
    "TRACE_MAX_ITEMS",
    "WORKLOADS",
    "Workload",
    "_System",
    "_Values",
    "_hit_path",
    "_insert_all",
    "_orders",
    "_pretouch",
    "_run_physical",
    "_run_system",
    "_scale_one",
]

KIB, MIB, MB = 1 << 10, 1 << 20, 10**6
BUDGET = 0.25
ZIPF_S = 1.1
SPILL_RESIDENT = 0.9  # the spilling scaling rows keep 90% of the items in memory
SCALE_LOADS = 20_000  # the scaling rows load this many random distinct items at most
TRACE_MAX_ITEMS = 10_000  # memory per handle: traced up to this many items, else the RSS


@attrs.frozen(kw_only=True)
class Workload:
    """N items of one size and kind, and the in-memory budget (25% of the data)."""

    name: str
    count: int
    item_bytes: int
    kind: str  # "bytes" or "ndarray"

    @property
    def total_bytes(self) -> int:
        """The bytes of all items."""
        return self.count * self.item_bytes

    @property
    def budget(self) -> int:
        """The in-memory budget of every system, in bytes."""
        return int(self.total_bytes * BUDGET)


WORKLOADS = {
    "small": Workload(name="small", count=2000, item_bytes=64 * KIB, kind="bytes"),
    "large": Workload(name="large", count=200, item_bytes=4 * MIB, kind="ndarray"),
}
QUICK = {
    "small": Workload(name="small", count=128, item_bytes=64 * KIB, kind="bytes"),
    "large": Workload(name="large", count=8, item_bytes=4 * MIB, kind="ndarray"),
}


class _Values:
    """Distinct deterministic values of a workload, and a cheap check of a value read back.

    Each item is a slice of one random buffer at the item's own offset, with its index in
    the first 8 bytes (the first element of an array).
    """

    def __init__(self, workload: Workload, seed: int) -> None:
        import numpy as np

        self.workload = workload
        size = workload.item_bytes
        rng = np.random.default_rng(seed)
        # Floats in [0, 1): random bytes could make NaNs, which never compare equal.
        self._noise = rng.random((8 * MIB + size) // 8)
        self._bytes = self._noise.tobytes() if workload.kind == "bytes" else b""
        self._span = self._noise.nbytes - size

    def _offset(self, index: int) -> int:
        return (index * 7919 * 64) % self._span

    def raw(self, index: int) -> memoryview:
        """Item ``index``'s bytes, without a copy (the physical rows write these)."""
        offset = self._offset(index)
        return self._noise.data.cast("B")[offset : offset + self.workload.item_bytes]

    def make(self, index: int) -> Any:
        """Return a fresh copy of item ``index``."""
        offset, size = self._offset(index), self.workload.item_bytes
        if self.workload.kind == "bytes":
            return index.to_bytes(8, "little") + self._bytes[offset + 8 : offset + size]
        start = offset // 8
        value = self._noise[start : start + size // 8].copy()
        value[0] = index
        return value

    def check(self, index: int, value: Any) -> bool:
        """Length, kind, first 8 bytes (the index) and last 8 bytes of ``value``."""
        offset, size = self._offset(index), self.workload.item_bytes
        if self.workload.kind == "bytes":
            return (
                type(value) is bytes
                and len(value) == size
                and value[:8] == index.to_bytes(8, "little")
                and value[-8:] == self._bytes[offset + size - 8 : offset + size]
            )
        last = (offset + size) // 8 - 1
        return bool(
            value.shape == (size // 8,)
            and value.dtype == self._noise.dtype
            and value[0] == index
            and value[-1] == self._noise[last]
        )


def _nbytes(value: Any) -> int:
    return len(value) if type(value) is bytes else int(value.nbytes)


# -- the systems ---------------------------------------------------------------------------


class _System:
    """One system under test: insert, read (and check), drain, park, close."""

    name = ""
    misses = 0  # reads that went to storage

    def insert(self, index: int, value: Any) -> None:
        raise NotImplementedError

    def read(self, index: int, check: Callable[[int, Any], bool]) -> bool:
        raise NotImplementedError

    def drain(self) -> None:
        """Wait for background work (part of the phase's time)."""

    def park(self) -> None:
        """Free the memory held after a run; the files stay until `close`."""

    def close(self) -> None:
        """Release everything (at the end of the benchmark)."""


class _FbSystem(_System):
    name = "fb"

    def __init__(
        self, path: PreparedPath, *, max_bytes: int | None = None, max_items: int | None = None
    ) -> None:
        self.store: BackingStore[Any] = BackingStore(FBStore(PickleCodec(), path))
        self.pool: FBPool[Any] = FBPool(self.store, max_bytes=max_bytes, max_items=max_items)
        self.handles: list[Fb[Any]] = []

    def insert(self, index: int, value: Any) -> None:
        self.handles.append(self.pool.insert(value))

    def read(self, index: int, check: Callable[[int, Any], bool]) -> bool:
        with self.handles[index].load() as value:
            return check(index, value)

    def drain(self) -> None:
        self.store.finished()
        self.misses = self.pool.statistics().misses

    def close(self) -> None:
        # Kept until now: closing the handles deletes their blobs, and deletions slow the
        # creates of the runs that follow.
        for handle in self.handles:
            handle.close()
        self.store.close()


class _RawWT(_System):
    """The reference: write-through pickle files, an OrderedDict LRU front."""

    name = "raw-wt"

    def __init__(self, directory: Path, budget: int) -> None:
        directory.mkdir(parents=True)
        self.directory = str(directory)
        self.budget = budget
        self.front: OrderedDict[int, Any] = OrderedDict()
        self.nbytes = 0

    def _admit(self, index: int, value: Any) -> None:
        self.front[index] = value
        self.nbytes += _nbytes(value)
        while self.nbytes > self.budget:
            self.nbytes -= _nbytes(self.front.popitem(last=False)[1])

    def insert(self, index: int, value: Any) -> None:
        with open(f"{self.directory}/{index}.pkl", "wb") as file:
            pickle.dump(value, file, protocol=5)
        self._admit(index, value)

    def read(self, index: int, check: Callable[[int, Any], bool]) -> bool:
        value = self.front.get(index)
        if value is not None:
            self.front.move_to_end(index)
        else:
            with open(f"{self.directory}/{index}.pkl", "rb") as file:
                value = pickle.load(file)
            self._admit(index, value)
            self.misses += 1
        return check(index, value)

    def park(self) -> None:
        self.front.clear()


class _Zict(_System):
    name = "zict"

    def __init__(self, directory: Path, budget: int) -> None:
        import zict

        slow = zict.Func(partial(pickle.dumps, protocol=5), pickle.loads, zict.File(directory))
        self.buffer: Any = zict.Buffer(
            {}, slow, n=budget, weight=lambda k, v: _nbytes(v), slow_to_fast_callbacks=self._miss
        )

    def _miss(self, key: str, value: Any) -> None:
        self.misses += 1

    def insert(self, index: int, value: Any) -> None:
        self.buffer[str(index)] = value

    def read(self, index: int, check: Callable[[int, Any], bool]) -> bool:
        return check(index, self.buffer[str(index)])

    def park(self) -> None:
        self.buffer = None  # zict.File leaves its files behind


class _DiskCache(_System):
    """diskcache written through on insert (its natural use), a cachetools LRU front."""

    name = "diskcache"

    def __init__(self, directory: Path, budget: int) -> None:
        import cachetools
        import diskcache

        # No size limit and no eviction: diskcache must keep every item, like the others.
        self.disk = diskcache.Cache(str(directory), size_limit=2**62, eviction_policy="none")
        self.front: Any = cachetools.LRUCache(maxsize=budget, getsizeof=_nbytes)

    def insert(self, index: int, value: Any) -> None:
        self.disk[index] = value
        self.front[index] = value

    def read(self, index: int, check: Callable[[int, Any], bool]) -> bool:
        try:
            value = self.front[index]
        except KeyError:
            value = self.disk[index]
            self.front[index] = value
            self.misses += 1
        return check(index, value)

    def park(self) -> None:
        self.front.clear()
        self.disk.close()


FACTORIES: dict[str, Callable[[Path, int], _System]] = {
    "fb": lambda directory, budget: _FbSystem(PreparedPath(directory), max_bytes=budget),
    "raw-wt": _RawWT,
    "zict": _Zict,
    "diskcache": _DiskCache,
}


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


def _orders(count: int, seed: int) -> dict[str, list[int]]:
    """The uniform and Zipf read orders of one run (the same for every system)."""
    rng = random.Random(seed)
    uniform = [rng.randrange(count) for _ in range(count)]
    ranked = list(range(count))
    rng.shuffle(ranked)
    weights = list(itertools.accumulate(rank**-ZIPF_S for rank in range(1, count + 1)))
    zipf = [ranked[r] for r in rng.choices(range(count), cum_weights=weights, k=count)]
    return {"uniform": uniform, "zipf": zipf}


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
