"""Small blobs on local disk: a file each, preallocated segment files, or diskcache.

    .venv/bin/python benchmarks/small_blobs.py [--rounds 5] [--count 2000] [--dir /some/disk]

A measurement for issue 16, part 2 ("no file create per small blob"): what does each
layout cost to insert and to read back ``--count`` blobs of 4 KiB and of 64 KiB (random
``bytes`` values, pickled, framed as fb frames them: header, payload, XXH3 trailer)?

- ``raw-wt``: the reference of ``fb bench``: ``open(path, "wb")`` + ``pickle.dump`` per
  blob in sharded directories; reads are ``open`` + ``pickle.load``; nothing checked;
- ``files``: `FBStore` with ``segment_max=0``: a temporary file written and renamed into
  place per blob, one ``os.read`` and a checksum per load;
- ``segments``: `FBStore` as built (small blobs in segment files, see
  ``fb/backends/_segments.py``): one file per size class (whole KiB, four classes per
  doubling), grown by ``fallocate``; a slot written with one ``pwritev`` (slot head with
  the key, fb's header, payload, trailer) and read with one ``pread``, checked as any
  blob; a deleted blob's slot goes on its class's free list and is reused before the file
  grows;
- ``diskcache``: fb's ``diskcache://`` backend (`DiskcacheStore`): one SQLite insert per
  blob (a blob of 32 KiB or more goes to a file of diskcache's own).

Each round gives every layout a fresh directory, times the inserts, then reads every blob
once in a shuffled order (page cache warm), deleting the directory afterwards outside the
timing; layouts take turns in a rotating order. Times are µs per blob, the median over the
rounds. ``churn`` then deletes a random half of the segment blobs and inserts as many new
ones, ten times over, and reports how the segment files grew: freed slots are reused, so
they stay at the peak of live data.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from fb.backends import FBStore
from fb.backends._diskcache import DiskcacheStore
from fb.codecs import PickleCodec


class RawFiles:
    """raw-wt's files: ``open`` + ``pickle.dump``/``pickle.load``, no framing, no check."""

    def __init__(self, root: str) -> None:
        self.root = root
        for shard in range(256):
            os.makedirs(os.path.join(root, f"{shard:02x}"), exist_ok=True)

    def _path(self, key: uuid.UUID) -> str:
        return os.path.join(self.root, key.hex[:2], key.hex)

    def store(self, key: uuid.UUID, value: Any) -> None:
        with open(self._path(key), "wb") as file:
            pickle.dump(value, file, protocol=5)

    def load(self, key: uuid.UUID) -> Any:
        with open(self._path(key), "rb") as file:
            return pickle.load(file)

    def close(self) -> None:
        pass


def _layouts() -> dict[str, Callable[[str], Any]]:
    return {
        "raw-wt": RawFiles,
        "files": lambda root: FBStore(PickleCodec(), root, segment_max=0),
        "segments": lambda root: FBStore(PickleCodec(), root),
        "diskcache": lambda root: DiskcacheStore(PickleCodec(), root),
    }


def _round(
    name: str, make: Callable[[str], Any], base: str, values: list[bytes]
) -> tuple[float, float]:
    root = tempfile.mkdtemp(prefix=f"{name}-", dir=base)
    store = make(os.path.join(root, "store"))
    keys = [uuid.uuid4() for _ in values]
    start = time.perf_counter()
    for key, value in zip(keys, values, strict=True):
        store.store(key, value)
    inserted = time.perf_counter() - start
    order = random.sample(keys, len(keys))
    start = time.perf_counter()
    for key in order:
        store.load(key)
    read = time.perf_counter() - start
    store.close()
    shutil.rmtree(root)
    return inserted / len(values) * 1e6, read / len(values) * 1e6


def _churn(base: str, size: int, count: int, rounds: int = 10) -> list[int]:
    root = tempfile.mkdtemp(prefix="churn-", dir=base)
    store: FBStore[bytes] = FBStore(PickleCodec(), os.path.join(root, "store"))
    segments = store._segments
    assert segments is not None
    live = [uuid.uuid4() for _ in range(count)]
    for key in live:
        store.store(key, os.urandom(size))
    sizes = [segments.disk_bytes()]
    for _ in range(rounds):
        random.shuffle(live)
        for key in live[: count // 2]:
            store.delete(key)
        live = live[count // 2 :]
        while len(live) < count:
            key = uuid.uuid4()
            store.store(key, os.urandom(size))
            live.append(key)
        sizes.append(segments.disk_bytes())
    store.close()
    shutil.rmtree(root)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="fb-small-blobs-", dir=args.dir)
    layouts = _layouts()
    try:
        print(f"{args.count} blobs per size, {args.rounds} rounds, µs per blob (median)")
        print("| size | layout | insert µs | read µs | insert vs raw-wt | read vs raw-wt |")
        print("|---|---|--:|--:|--:|--:|")
        for size in (4 << 10, 64 << 10):
            values = [os.urandom(size) for _ in range(args.count)]
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in layouts}
            names = list(layouts)
            for turn in range(args.rounds):
                for name in names[turn % len(names) :] + names[: turn % len(names)]:
                    times[name].append(_round(name, layouts[name], base, values))
            for name in names:
                ins = [t[0] for t in times[name]]
                red = [t[1] for t in times[name]]
                # Ratios per round: raw-wt's time over the layout's (> 1: faster than raw-wt).
                ins_ratio = [r[0] / t[0] for r, t in zip(times["raw-wt"], times[name], strict=True)]
                red_ratio = [r[1] / t[1] for r, t in zip(times["raw-wt"], times[name], strict=True)]
                print(
                    f"| {size >> 10} KiB | {name} | {statistics.median(ins):.1f} | "
                    f"{statistics.median(red):.1f} | {statistics.median(ins_ratio):.2f} | "
                    f"{statistics.median(red_ratio):.2f} |"
                )
        for size in (4 << 10, 64 << 10):
            sizes = _churn(base, size, args.count)
            mib = ", ".join(f"{s / (1 << 20):.1f}" for s in sizes)
            print(f"churn {size >> 10} KiB x {args.count}: segment MiB after each round: {mib}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
