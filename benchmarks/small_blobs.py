"""Small blobs on local disk: a file each, preallocated segment files, or diskcache.

    .venv/bin/python benchmarks/small_blobs.py [--rounds 5] [--count 2000] [--dir /some/disk]

A measurement for issue 16, part 2 ("no file create per small blob"): what does each
layout cost to insert and to read back ``--count`` blobs of 4 KiB and of 64 KiB (random
``bytes`` values, pickled, framed as fb frames them: header, payload, XXH3 trailer)?

- ``raw-wt``: the reference of ``fb bench``: ``open(path, "wb")`` + ``pickle.dump`` per
  blob in sharded directories; reads are ``open`` + ``pickle.load``; nothing checked;
- ``files``: `FBStore` as built: a temporary file written and renamed into place per blob,
  one ``os.read`` and a checksum per load;
- ``segments``: the prototype below: blobs in preallocated segment files, one file per
  size class (whole KiB, four classes per doubling: 1, 2, 3, 4, 5, 6, 7, 8, 10, 12 KiB
  ...), a slot written with one ``pwritev``
  (slot header with the key, fb's header, payload, trailer) and read with one ``pread``,
  checked as `FBStore` checks a blob; a deleted blob's slot goes on its class's free list
  and is reused before the file grows;
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

import xxhash

from fb._blob import TRAILER, TRAILER_MAGIC, encode_header, encode_trailer
from fb.backends import FBStore
from fb.backends._diskcache import DiskcacheStore
from fb.codecs import PickleCodec

_FLAG_XXH3 = 0x02
_SLOT_HEAD = 16 + 8  # the key, then the framed blob's length (u64)
_UNIT = 1024


def _slot_size(size: int) -> int:
    """The slot for a framed blob of ``size`` bytes: whole KiB, four classes per doubling.

    At most 25% of a slot is waste (less above 16 KiB), and there are few classes, so a
    freed slot is soon reused by a blob of about the same size.
    """
    units = -(-size // _UNIT)
    if units <= 4:
        return units * _UNIT
    step = 1 << (units.bit_length() - 3)  # a quarter of the power of two below
    return -(-units // step) * step * _UNIT


class SegmentPrototype:
    """Blobs in one preallocated file per size class; a prototype for measuring only.

    Not crash-safe as it stands (the index lives in memory; a production version rebuilds
    it by scanning slot headers and checking each slot's trailer when a store opens), and
    single-threaded.
    """

    def __init__(self, root: str, grow: int = 64) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = root
        self.grow = grow
        self.header = encode_header("pickle")
        self.files: dict[int, int] = {}  # slot size -> fd
        self.ends: dict[int, int] = {}  # slot size -> file length
        self.free: dict[int, list[int]] = {}  # slot size -> free offsets
        self.index: dict[uuid.UUID, tuple[int, int, int]] = {}  # key -> (slot, offset, length)

    def _slot(self, size: int) -> tuple[int, int]:
        slot = _slot_size(size)
        free = self.free.setdefault(slot, [])
        if not free:
            fd = self.files.get(slot)
            if fd is None:
                path = os.path.join(self.root, f"segment-{slot}.fb")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self.files[slot] = fd
                self.ends[slot] = 0
            start = self.ends[slot]
            # Grow by many slots at once: one fallocate, not one per blob.
            os.posix_fallocate(fd, start, slot * self.grow)
            self.ends[slot] = start + slot * self.grow
            free.extend(range(start + slot * (self.grow - 1), start - 1, -slot))
        return slot, free.pop()

    def store(self, key: uuid.UUID, value: Any) -> None:
        payload = pickle.dumps(value, protocol=5)
        digest = xxhash.xxh3_64(self.header)
        digest.update(payload)
        trailer = encode_trailer(_FLAG_XXH3, len(payload), digest.intdigest())
        length = len(self.header) + len(payload) + len(trailer)
        slot, offset = self._slot(_SLOT_HEAD + length)
        head = key.bytes + length.to_bytes(8, "little")
        os.pwritev(self.files[slot], [head, self.header, payload, trailer], offset)
        old = self.index.get(key)
        self.index[key] = (slot, offset, length)
        if old is not None:
            self.free[old[0]].append(old[1])

    def load(self, key: uuid.UUID) -> Any:
        slot, offset, length = self.index[key]
        data = os.pread(self.files[slot], _SLOT_HEAD + length, offset)
        view = memoryview(data)
        if view[:16] != key.bytes:
            raise ValueError("slot holds another key")
        end = _SLOT_HEAD + length - TRAILER.size
        size, digest, magic = TRAILER.unpack_from(data, end)
        start = _SLOT_HEAD + len(self.header)
        if magic != TRAILER_MAGIC or size != end - start:
            raise ValueError("torn slot")
        if xxhash.xxh3_64_intdigest(view[_SLOT_HEAD:end]) != digest:
            raise ValueError("checksum mismatch")
        return pickle.loads(view[start:end])

    def delete(self, key: uuid.UUID) -> None:
        slot, offset, _ = self.index.pop(key)
        self.free[slot].append(offset)

    def disk_bytes(self) -> int:
        return sum(self.ends.values())

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)


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
        "files": lambda root: FBStore(PickleCodec(), root),
        "segments": SegmentPrototype,
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
    store = SegmentPrototype(root)
    live = [uuid.uuid4() for _ in range(count)]
    for key in live:
        store.store(key, os.urandom(size))
    sizes = [store.disk_bytes()]
    for _ in range(rounds):
        random.shuffle(live)
        for key in live[: count // 2]:
            store.delete(key)
        live = live[count // 2 :]
        while len(live) < count:
            key = uuid.uuid4()
            store.store(key, os.urandom(size))
            live.append(key)
        sizes.append(store.disk_bytes())
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
