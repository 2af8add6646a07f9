"""The workloads and the systems that ``fb bench`` measures.

The workloads, their values and read orders; the systems under test (``fb``,
``fb-diskcache`` (fb over its ``diskcache://`` backend), ``raw-wt``, ``zict``, ``diskcache``)
and their factories. How a phase is timed, the ``physical`` rows, the hit path and fb's
scaling are in `fb._bench_timing`. `fb._bench` runs them, sums them up and reports; its
module docstring describes the benchmark as a whole.
"""

from __future__ import annotations

import itertools
import pickle
import random
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from ._handle import Fb
from ._pool import FBPool, WriteMode
from ._store import BackingStore
from .backends import FBStore, PreparedPath
from .codecs import PickleCodec

__all__ = [
    "FACTORIES",
    "KIB",
    "MB",
    "MIB",
    "QUICK",
    "WORKLOADS",
    "Workload",
    "_FbSystem",
    "_System",
    "_Values",
    "_orders",
    "fb_factory",
]

KIB, MIB, MB = 1 << 10, 1 << 20, 10**6
BUDGET = 0.25
ZIPF_S = 1.1


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


def _orders(count: int, seed: int) -> dict[str, list[int]]:
    """The uniform and Zipf read orders of one run (the same for every system)."""
    rng = random.Random(seed)
    uniform = [rng.randrange(count) for _ in range(count)]
    ranked = list(range(count))
    rng.shuffle(ranked)
    weights = list(itertools.accumulate(rank**-ZIPF_S for rank in range(1, count + 1)))
    zipf = [ranked[r] for r in rng.choices(range(count), cum_weights=weights, k=count)]
    return {"uniform": uniform, "zipf": zipf}


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
        self,
        path: PreparedPath,
        *,
        max_bytes: int | None = None,
        max_items: int | None = None,
        write: WriteMode | None = None,
    ) -> None:
        self.store: BackingStore[Any] = BackingStore(FBStore(PickleCodec(), path))
        self.pool: FBPool[Any] = FBPool(
            self.store, max_bytes=max_bytes, max_items=max_items, write=write
        )
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


class _FbDiskcacheSystem(_FbSystem):
    """fb's pool over the ``diskcache://`` backend: blobs in an embedded SQLite database."""

    name = "fb-diskcache"

    def __init__(self, directory: Path, budget: int) -> None:
        from .backends._diskcache import DiskcacheStore

        self.store = BackingStore(DiskcacheStore(PickleCodec(), directory))
        self.pool = FBPool(self.store, max_bytes=budget)
        self.handles = []


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


def fb_factory(write: WriteMode | None) -> Callable[[Path, int], _System]:
    """The ``fb`` system's factory, with the pool's write mode (None: the pool's default)."""

    def factory(directory: Path, budget: int) -> _System:
        return _FbSystem(PreparedPath(directory), max_bytes=budget, write=write)

    return factory


FACTORIES: dict[str, Callable[[Path, int], _System]] = {
    "fb": lambda directory, budget: _FbSystem(PreparedPath(directory), max_bytes=budget),
    "fb-diskcache": _FbDiskcacheSystem,
    "raw-wt": _RawWT,
    "zict": _Zict,
    "diskcache": _DiskCache,
}
