"""``fb bench``: fb against raw files, zict, diskcache and the machine's physical limits.

Two workloads, each with an in-memory budget of 25% of its data: *small* (2000 x 64 KiB
``bytes``) and *large* (200 x 4 MiB float64 numpy arrays). Each runs three timed phases: N
inserts, N uniform random reads, N Zipf reads (s = 1.1 over a random permutation of the keys).
Every read checks the value it got: its length (shape and dtype for arrays), its first 8
bytes or element (the item's index) and its last ones (content at the item's own offset).

The systems run in the same process and directory tree, interleaved (A B C A B C ...):

- ``fb``: `FBPool` (``max_bytes`` = budget) over `FBStore` with the pickle codec;
- ``raw-wt``: one ``pickle.dump`` file per key written on insert, behind an OrderedDict LRU
  front of the same byte budget; every ratio is taken against it;
- ``zict``: ``Buffer(dict, Func(pickle.dumps, pickle.loads, File(dir)), n=budget)``;
- ``diskcache``: a ``diskcache.Cache`` written through on insert, behind a cachetools
  ``LRUCache(getsizeof=nbytes)``;
- ``physical``: one file written sequentially (with and without fsync), read back warm,
  and memcpy: what the machine can do at best.

Then the hit path (ns per resident load) and fb's scaling with the number of items.

The machine may be a noisy VM: each timed phase is preceded by a garbage collection and by
faulting in (then freeing) as much fresh memory as the phase will need, because freed memory
may be handed back to the host and cost ~1 GiB/s to touch again. Every system-run writes to
a fresh directory and nothing is deleted until the end, because on some filesystems (ext4
with online discard) a create after many deletions is slow.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import operator
import os
import pickle
import platform
import random
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import click

from . import __version__
from ._handle import Fb
from ._pool import FBPool
from ._store import BackingStore
from .backends import FBStore, PreparedPath
from .codecs import PickleCodec

__all__ = ["bench"]

KIB, MIB, MB = 1 << 10, 1 << 20, 10**6
PEERS = ("numpy", "zict", "diskcache", "cachetools")
INSTALL = "pip install 'file-backed[bench]'"
SYSTEMS = ("fb", "raw-wt", "zict", "diskcache")
REFERENCE = "raw-wt"
PHASES = ("insert", "uniform", "zipf")
PHYSICAL = ("write", "write_fsync", "read_warm", "memcpy")
LABELS = {
    "insert": "insert",
    "uniform": "uniform reads",
    "zipf": "zipf reads",
    "write": "one-file write",
    "write_fsync": "one-file write+fsync",
    "read_warm": "one-file warm read",
    "memcpy": "memcpy",
}
BUDGET = 0.25
ZIPF_S = 1.1
INSERT_CEILING_GOAL = 0.70
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


class _MissingPeerError(click.ClickException):
    exit_code = 2


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


# -- summaries -----------------------------------------------------------------------------


def _summary(
    runs: list[tuple[float, float | None]], workload: Workload, reference: list[float] | None
) -> Any:
    seconds = [one for one, _ in runs]
    misses = [miss for _, miss in runs if miss is not None]
    median = statistics.median(seconds)
    summary: dict[str, Any] = {
        "seconds": seconds,
        "median_s": median,
        "mb_s": workload.total_bytes / MB / median,
        "ops_s": workload.count / median,
        "spread": (max(seconds) - min(seconds)) / median,
        "miss_ratio": statistics.median(misses) if misses else None,
        "ratio_vs_raw_wt": None,
    }
    if reference is not None:
        # Per run, then the median: drift of a noisy machine hits both sides of a ratio.
        ratios = [ref / own for ref, own in zip(reference, seconds, strict=True)]
        summary["ratio_vs_raw_wt"] = statistics.median(ratios)
    return summary


def _target(name: str, value: float, goal: float, *, at_least: bool) -> dict[str, Any]:
    met = value >= goal if at_least else value <= goal
    sign = ">=" if at_least else "<="
    return {"target": name, "value": value, "goal": f"{sign} {goal:.2f}", "met": met}


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for name, workload in report["workloads"].items():
        fb = workload["systems"]["fb"]
        for phase in PHASES:
            ratio = fb[phase]["ratio_vs_raw_wt"]
            targets.append(_target(f"{name} {phase}: fb vs raw-wt", ratio, 1.0, at_least=True))
        if name == "large":
            write_s = workload["systems"]["physical"]["write"]["seconds"]
            pairs = zip(write_s, fb["insert"]["seconds"], strict=True)
            share = statistics.median(write / own for write, own in pairs)
            label = "large insert: fb / one-file page-cache write"
            targets.append(_target(label, share, INSERT_CEILING_GOAL, at_least=True))
    hits = report["hit_path"]
    pairs = zip(hits["fb"]["ns"], hits["cachetools"]["ns"], strict=True)
    ratio = statistics.median(own / other for own, other in pairs)
    label = "hit path: fb load / cachetools LRUCache.__getitem__"
    targets.append(_target(label, ratio, 1.0, at_least=False))
    return targets


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"fb bench (fb {report['fb_version']}, Python {report['machine']['python']}, "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['loadavg']}); "
        f"median of {report['runs']} interleaved runs.",
        "MB = 10^6 bytes; vs raw-wt = median over runs of raw-wt's time / this time "
        "(> 1 is faster); spread = (max - min) / median of the times; misses = share of "
        "the reads that went to storage.",
    ]
    header = (
        f"  {'phase':<22}{'system':<11}{'MB/s':>9}{'ops/s':>10}{'vs raw-wt':>11}{'spread':>8}"
        f"{'misses':>8}"
    )
    for name, workload in report["workloads"].items():
        lines += [
            "",
            f"{name}: {workload['count']} x {workload['item_bytes'] // KIB} KiB "
            f"{workload['kind']} = {workload['total_bytes'] / MIB:.0f} MiB, budget "
            f"{workload['budget_bytes'] / MIB:.0f} MiB (25%)",
            header,
        ]
        rows = [(phase, system) for phase in PHASES for system in SYSTEMS]
        rows += [(phase, "physical") for phase in PHYSICAL]
        for phase, system in rows:
            s = workload["systems"][system][phase]
            ratio, misses = s["ratio_vs_raw_wt"], s["miss_ratio"]
            lines.append(
                f"  {LABELS[phase]:<22}{system:<11}{s['mb_s']:9.1f}{s['ops_s']:10.0f}"
                f"{'' if ratio is None else f'{ratio:.2f}x':>11}{s['spread']:8.0%}"
                f"{'' if misses is None else f'{misses:.0%}':>8}"
            )
    hits = report["hit_path"]
    lines += ["", "hit path (resident item, ns per op including the loop; spread as above)"]
    for name, label in (
        ("fb", "fb: with handle.load()"),
        ("cachetools", "cachetools LRUCache[key]"),
        ("ordereddict", "OrderedDict move_to_end + [key]"),
        ("loop", "the bare loop"),
    ):
        h = hits[name]
        lines.append(f"  {label:<34}{h['median_ns']:8.0f} ns{h['spread']:8.0%}")
    lines += [
        "",
        f"scaling of fb (16-byte values; spilling keeps {SPILL_RESIDENT:.0%} of the items in "
        f"memory; loads of min(items, {SCALE_LOADS}) random distinct items; memory per handle "
        f"traced up to {TRACE_MAX_ITEMS} items, else the growth of the resident set)",
        f"  {'items':>9} {'mode':<9}{'insert us/op':>14}{'load us/op':>12}{'B/handle':>10}",
    ]
    for row in report["scaling"]:
        lines.append(
            f"  {row['items']:>9} {row['mode']:<9}{row['insert_us']:14.2f}{row['load_us']:12.2f}"
            f"{row['bytes_per_handle']:10.0f} ({row['memory_method']})"
        )
    lines += ["", "targets"]
    for target in report["targets"]:
        mark = "met " if target["met"] else "MISS"
        lines.append(f"  {mark} {target['target']}: {target['value']:.2f} (goal {target['goal']})")
    return "\n".join(line.rstrip() for line in lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    workloads = report["workloads"]
    figure = Figure(figsize=(9, 3.4 * (len(workloads) + 1)), layout="constrained")
    axes = figure.subplots(len(workloads) + 1, 1, squeeze=False)[:, 0]
    width = 0.8 / len(SYSTEMS)
    for axis, (name, workload) in zip(axes, workloads.items(), strict=False):
        for i, system in enumerate(SYSTEMS):
            rows = [workload["systems"][system][phase] for phase in PHASES]
            mbs = [row["mb_s"] for row in rows]
            low = [
                m - workload["total_bytes"] / MB / max(row["seconds"])
                for m, row in zip(mbs, rows, strict=True)
            ]
            high = [
                workload["total_bytes"] / MB / min(row["seconds"]) - m
                for m, row in zip(mbs, rows, strict=True)
            ]
            xs = [p + (i - (len(SYSTEMS) - 1) / 2) * width for p in range(len(PHASES))]
            axis.bar(xs, mbs, width, yerr=[low, high], capsize=2, label=system)
        for style, phase in zip(
            ("--", ":", "-."), ("write", "write_fsync", "read_warm"), strict=True
        ):
            mbs = workload["systems"]["physical"][phase]["mb_s"]
            axis.axhline(
                mbs, color="grey", linestyle=style, linewidth=1, label=f"{LABELS[phase]} {mbs:.0f}"
            )
        axis.set_xticks(range(len(PHASES)), [LABELS[phase] for phase in PHASES])
        axis.set_yscale("log")
        axis.set_ylabel("MB/s (log)")
        axis.set_title(
            f"{name}: {workload['count']} x {workload['item_bytes'] // KIB} KiB "
            f"{workload['kind']}, budget 25%"
        )
        axis.legend(fontsize="small", ncols=2)
    hits = report["hit_path"]
    names = ["fb", "cachetools", "ordereddict", "loop"]
    axes[-1].barh(names, [hits[name]["median_ns"] for name in names])
    axes[-1].invert_yaxis()
    axes[-1].set_xlabel("ns per hit (lower is better)")
    axes[-1].set_title("hit path: a resident item")
    figure.savefig(path, dpi=120)


# -- the command ---------------------------------------------------------------------------


_START = [time.perf_counter()]


def _progress(message: str) -> None:
    click.echo(f"[{time.perf_counter() - _START[0]:6.1f} s] {message}", err=True)


def _cleanup(root: Path, systems: list[_System]) -> None:
    """Close every system and remove ``root``; unlinks release the GIL, so threads help."""
    # A directory serialises its own unlinks: remove each system's directory in parallel.
    with ThreadPoolExecutor(8) as executor:
        list(executor.map(operator.methodcaller("close"), systems))
        leaves = [sub for top in root.iterdir() if top.is_dir() for sub in top.iterdir()]
        list(executor.map(partial(shutil.rmtree, ignore_errors=True), leaves))
    shutil.rmtree(root, ignore_errors=True)


def _require_peers(plot: bool) -> None:
    needed = [*PEERS, "matplotlib"] if plot else list(PEERS)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise _MissingPeerError(
            f"fb bench compares fb with other packages; missing: {', '.join(missing)}. "
            f"Install them with: {INSTALL}"
        )


def _bench_workload(
    workload: Workload, runs: int, root: Path, seed: int, graveyard: list[_System]
) -> dict[str, Any]:
    values = _Values(workload, seed)
    times: dict[str, list[list[tuple[float, float | None]]]] = {
        name: [] for name in (*SYSTEMS, "physical")
    }
    for run in range(runs):
        orders = _orders(workload.count, seed + run)
        for name in (*SYSTEMS, "physical"):
            directory = root / workload.name / f"{name}-{run}"
            _progress(f"{workload.name}, run {run + 1} of {runs}: {name}")
            if name == "physical":
                times[name].append(_run_physical(directory, values))
                continue
            system = FACTORIES[name](directory, workload.budget)
            graveyard.append(system)
            times[name].append(_run_system(system, values, orders))
            system.park()
    systems: dict[str, dict[str, Any]] = {}
    for name, per_run in times.items():
        phases = PHYSICAL if name == "physical" else PHASES
        systems[name] = {}
        for i, phase in enumerate(phases):
            reference = None if name == "physical" else [r[i][0] for r in times[REFERENCE]]
            systems[name][phase] = _summary([run[i] for run in per_run], workload, reference)
    return {
        **attrs.asdict(workload),
        "total_bytes": workload.total_bytes,
        "budget_bytes": workload.budget,
        "verify": "length, kind, first and last 8 bytes (arrays: shape, dtype, first and "
        "last element) of every value read",
        "systems": systems,
    }


@click.command()
@click.option(
    "--workload",
    type=click.Choice(["small", "large", "all"]),
    default="all",
    show_default=True,
    help="small: 2000 x 64 KiB bytes; large: 200 x 4 MiB float64 arrays.",
)
@click.option(
    "--runs",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Interleaved runs of every system; the tables show medians.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: the temporary directory); a fresh subdirectory is "
    "made there and removed at the end.",
)
@click.option("--quick", is_flag=True, help="Small sizes, for a smoke test (seconds).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG bar chart of the results here (needs matplotlib).",
)
def bench(
    workload: str,
    runs: int,
    directory: Path | None,
    quick: bool,
    seed: int,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Measure fb against raw files, zict, diskcache and the machine's physical limits.

    Two workloads, each with a memory budget of 25% of its data: small (2000 x 64 KiB
    bytes) and large (200 x 4 MiB numpy arrays). Each system inserts every item, then
    reads N uniformly random items and N Zipf-distributed ones (s = 1.1), checking every
    value read. Systems: fb (FBPool over FBStore); raw-wt (a pickle file per key written
    on insert, an OrderedDict LRU in front: the reference of every ratio); zict (Buffer
    over Func(pickle) over File); diskcache (written through, a cachetools LRUCache in
    front); physical (one file written with and without fsync, read back warm; memcpy).
    Runs are interleaved; medians and spreads are shown. Then the hit path (ns per load
    of a resident item) and fb's cost per item at 10k, 100k and 1M items.

    Needs the peers to compare with: pip install 'file-backed[bench]'. A full run takes
    a few minutes, writes about 20 GB and keeps up to 15 GB on disk until it ends (all of
    it removed then); progress goes to standard error.
    """
    _require_peers(plot is not None)
    _START[0] = time.perf_counter()
    table = QUICK if quick else WORKLOADS
    chosen = list(table) if workload == "all" else [workload]
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fb-bench-", dir=directory))
    graveyard: list[_System] = []
    report: dict[str, Any] = {
        "fb_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
        "runs": runs,
        "quick": quick,
        "seed": seed,
        "directory": str(root),
    }
    try:
        report["workloads"] = {
            name: _bench_workload(table[name], runs, root, seed, graveyard) for name in chosen
        }
        _progress("hit path")
        hits = _hit_path(20_000 if quick else 100_000, max(runs, 5))
        report["hit_path"] = {
            name: {
                "ns": ns,
                "median_ns": statistics.median(ns),
                "spread": (max(ns) - min(ns)) / statistics.median(ns),
            }
            for name, ns in hits.items()
        }
        sizes, spill = (
            ((1_000, 10_000), (1_000,)) if quick else ((10**4, 10**5, 10**6), (10**4, 10**5))
        )
        report["scaling"] = []
        for count in sizes:
            for spilling in (False, True) if count in spill else (False,):
                _progress(f"scaling: {count} items, {'spilling' if spilling else 'resident'}")
                report["scaling"].append(_scale_one(root, count, spilling, graveyard))
    finally:
        _progress("removing what the benchmark wrote")
        _cleanup(root, graveyard)
    report["machine"]["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    report["targets"] = _targets(report)
    if plot is not None:
        _plot(report, plot)
    click.echo(json.dumps(report, indent=2) if as_json else _table(report))
