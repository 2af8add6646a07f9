"""fb.Shelf against diskcache.Cache, joblib.Memory and shelve: set and get, cold and warm.

    .venv/bin/python benchmarks/shelf.py [--rounds 3] [--dir /path/on/disk] [--only 65536]

For each value size (64 KiB and 4 MiB) and each system, in one run on one directory tree:

- ``set``: store ``count`` distinct values of ``size`` random bytes under distinct names;
- ``get warm``: read them all back through the same object that set them (fb answers from
  its pool; the others read their files, which the OS has in its page cache);
- ``get cold``: read them all back through a new object on the same directory (nothing in
  the process's memory; the OS page cache is still warm, as on a machine that just ran).

joblib.Memory has no set or get: a memoized function that returns a prepared value is called
once per name (a miss: it stores the result) and then again (a hit: it loads it). shelve is
the standard library's ``dbm`` mapping. ``cold, kept`` is ``get cold`` by a caller that keeps
every value it read: fb's pool keeps what it loads, and on a VM the first touch of fresh
memory (page faults) can cost more than reading the page cache; keeping the values makes
every system pay it. ``cold, full`` is ``get cold`` through an object whose memory tier is
full (fb's pool holds four values, so each get evicts one and reuses its memory, as in a
long-running process; the others have no memory tier). Each system's round runs in a
process of its own, so that none reads into memory another one freed. Prints the median
time per operation in microseconds, MB/s, and fb's speed-up over diskcache (>1: fb is
faster). The best of ``rounds`` rounds is kept for each cell. Numbers on a busy machine
are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shelve
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import fb

SIZES = {65536: 200, 4 * 2**20: 24}
"""Value size -> how many values a round stores."""


def _timed(count: int, op: Callable[[int], Any]) -> float:
    """Return the median seconds of ``op(i)`` for i in range(count)."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class System:
    """One cache under test: open, set, get, close."""

    name = ""

    def __init__(self, root: str, memory: int | None = None) -> None:
        self.root = root
        self.memory = memory  # bytes of values kept in memory, for systems that keep any

    def open(self) -> None:
        raise NotImplementedError

    def set(self, i: int, value: bytes) -> None:
        raise NotImplementedError

    def get(self, i: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FbShelf(System):
    name = "fb.Shelf"

    def open(self) -> None:
        self.shelf: fb.Shelf[bytes] = fb.Shelf(self.root, max_bytes=self.memory or 2**30)

    def set(self, i: int, value: bytes) -> None:
        self.shelf[f"k{i}"] = value

    def get(self, i: int) -> bytes:
        return self.shelf[f"k{i}"]

    def close(self) -> None:
        self.shelf.close()


class DiskCache(System):
    name = "diskcache.Cache"

    def open(self) -> None:
        import diskcache  # type: ignore[import-untyped]

        self.cache = diskcache.Cache(self.root)

    def set(self, i: int, value: bytes) -> None:
        self.cache.set(f"k{i}", value)

    def get(self, i: int) -> bytes:
        value: bytes = self.cache.get(f"k{i}")
        return value

    def close(self) -> None:
        self.cache.close()


class JoblibMemory(System):
    name = "joblib.Memory"

    def open(self) -> None:
        import joblib  # type: ignore[import-untyped]

        self.memory = joblib.Memory(self.root, verbose=0)
        self.func = self.memory.cache(_produce)

    def set(self, i: int, value: bytes) -> None:
        _VALUES[i] = value
        self.func(i)  # a miss: computes (a lookup) and stores

    def get(self, i: int) -> bytes:
        value: bytes = self.func(i)  # a hit: loads
        return value

    def close(self) -> None:
        pass


_VALUES: dict[int, bytes] = {}


def _produce(i: int) -> bytes:
    return _VALUES[i]


class Shelve(System):
    name = "shelve"

    def open(self) -> None:
        self.db = shelve.open(os.path.join(self.root, "db"))  # noqa: SIM115 - closed in close()

    def set(self, i: int, value: bytes) -> None:
        self.db[f"k{i}"] = value

    def get(self, i: int) -> bytes:
        value: bytes = self.db[f"k{i}"]
        return value

    def close(self) -> None:
        self.db.close()


def _available(*, quiet: bool = False) -> list[type[System]]:
    systems: list[type[System]] = [FbShelf]
    for system, module in ((DiskCache, "diskcache"), (JoblibMemory, "joblib")):
        try:
            __import__(module)
        except ImportError:
            if not quiet:
                print(f"({module} is not installed: pip install {module}; skipped)")
        else:
            systems.append(system)
    systems.append(Shelve)
    return systems


@contextmanager
def _directory(parent: str | None) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fb-bench-shelf-", dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def measure(system: type[System], size: int, count: int, parent: str | None) -> dict[str, float]:
    """Return seconds per operation of one round: set, the gets warm and cold."""
    values = [os.urandom(size) for _ in range(count)]
    with _directory(parent) as root:
        sut = system(os.path.join(root, "cache"))
        if system is not FbShelf:
            os.mkdir(sut.root)
        sut.open()
        set_s = _timed(count, lambda i: sut.set(i, values[i]))
        warm = _timed(count, sut.get)
        sut.close()
        cold_sut = system(sut.root)
        cold_sut.open()
        cold = _timed(count, cold_sut.get)
        assert cold_sut.get(count - 1) == values[count - 1]
        cold_sut.close()
        # The caller keeps what it read (as a program that uses the values does): every
        # system then pays the first touch of fresh memory, as fb's pool always does.
        kept: list[bytes] = []
        cold_sut = system(sut.root)
        cold_sut.open()
        cold_kept = _timed(count, lambda i: kept.append(cold_sut.get(i)))
        cold_sut.close()
        kept.clear()
        # A memory tier that is full, as in a long-running process: fb's pool holds four
        # values, so each get evicts one and its memory is reused. The others keep nothing
        # in memory: for them this is `get cold` again.
        full_sut = system(sut.root, memory=4 * size + 4096)
        full_sut.open()
        cold_full = _timed(count, full_sut.get)
        full_sut.close()
    return {
        "set": set_s,
        "get warm": warm,
        "get cold": cold,
        "cold, kept": cold_kept,
        "cold, full": cold_full,
    }


def measure_apart(
    system: type[System], size: int, count: int, parent: str | None
) -> dict[str, float]:
    """`measure` in a new process: no system inherits the memory another one freed.

    A value kept in memory costs a page fault per 4 KiB the first time it is touched, unless
    the allocator hands out memory freed earlier in the process. Measured one after another
    in one process, a system would read into what the previous one freed, and the cost of
    keeping values would depend on the order of the systems.
    """
    command = [sys.executable, __file__, "--child", system.name, str(size), str(count)]
    if parent is not None:
        command.append(parent)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _child(argv: list[str]) -> None:
    name, size, count = argv[0], int(argv[1]), int(argv[2])
    parent = argv[3] if len(argv) > 3 else None
    (system,) = [s for s in _available(quiet=True) if s.name == name]
    print(json.dumps(measure(system, size, count, parent)))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the caches go (default: $TMPDIR)")
    parser.add_argument("--only", type=int, default=None, help="one value size in bytes")
    args = parser.parse_args()
    systems = _available()
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    for size, count in SIZES.items():
        if args.only is not None and size != args.only:
            continue
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for system in systems:  # alternate systems within each round
                result = measure_apart(system, size, count, args.dir)
                cell = best.setdefault(system.name, result)
                for op, seconds in result.items():
                    cell[op] = min(cell[op], seconds)
        label = f"{size // 1024} KiB" if size < 2**20 else f"{size // 2**20} MiB"
        print(f"\n{label} values, {count} per round, best of {args.rounds} (median per op)")
        print(f"{'system':<18}{'operation':<11}{'us/op':>10}{'MB/s':>10}{'fb speed-up':>13}")
        for name, cell in best.items():
            for op, seconds in cell.items():
                ratio = None
                if name == "fb.Shelf" and "diskcache.Cache" in best:
                    ratio = best["diskcache.Cache"][op] / seconds
                speedup = f"{ratio:>12.2f}x" if ratio is not None else ""
                print(
                    f"{name:<18}{op:<11}{seconds * 1e6:>10.0f}{size / seconds / 1e6:>10.0f}"
                    f"{speedup:>13}"
                )


if __name__ == "__main__":
    main()
