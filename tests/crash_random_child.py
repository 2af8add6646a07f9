"""A child process for the random-moment crash tests: heavy write-back, persist and save, forever.

Run as ``python tests/crash_random_child.py CACHE DURABLE SAVES --seed S``. It claims both
persist locations, prints ``ready``, then loops over a seeded random mix of inserts past the
pool's capacity (background write-back), persists (one at a time and several at once through
``spawn_persist``), `fb.save` rounds with a manifest commit, replacements through write guards
and closes — until the parent kills it (or ``--seconds`` pass: then it exits 0).

Every line is flushed at once, so whatever was printed before a kill reaches the parent:

- ``inserted <i> <hex>``: the item whose value is ``value_for(seed, i, size)`` has key ``hex``;
- ``persisted <i> <hex>``: that key was persisted to DURABLE **and** DURABLE was fsynced;
- ``committed <round> <hex> ...``: `fb.save` of that round to SAVES returned;
- ``ready``: both locations are claimed; the random work starts now.

The values are those of ``tests/crash_child.py`` (`value_for`), so the parent recomputes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash_child import MANIFEST, value_for

MAX_LIVE = 10


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _write_manifest(directory: Path, round_: int, keys: dict[str, int]) -> None:
    """The caller's atomic commit: a temporary file, fsynced, renamed into place, dir fsynced."""
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump({"round": round_, "items": keys}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, directory / MANIFEST)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str]) -> None:
    """Run the random workload the arguments describe."""
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("durable")
    parser.add_argument("saves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)

    import fb
    from fb import BackingStore, Fb, FBPool
    from fb.backends import FBStore, PreparedPath
    from fb.codecs import PickleCodec

    rng = random.Random(args.seed)
    store: BackingStore[bytes] = BackingStore(
        # Blob files (no segments): the kills count calls on blob files (os.replace...).
        FBStore(PickleCodec(), PreparedPath(args.cache), segment_max=0),
        max_workers=2,
    )
    pool: FBPool[bytes] = FBPool(store, max_items=2)  # most items are written back
    durable = store.track_path(args.durable)
    saves = store.track_path(args.saves)
    indices: dict[str, int] = {}
    live: list[Fb[bytes]] = []
    counter = iter(range(10**9))

    def insert() -> Fb[bytes]:
        index = next(counter)
        handle = pool.insert(value_for(args.seed, index, args.size))
        indices[handle.key.hex] = index
        _emit(f"inserted {index} {handle.key.hex}")
        live.append(handle)
        return handle

    def persist(handles: list[Fb[bytes]]) -> None:
        if len(handles) == 1:
            keys = [handles[0].persist(durable)]
        else:
            keys = [future.result() for future in [h.spawn_persist(durable) for h in handles]]
        store.fsync(durable)
        for key in keys:
            _emit(f"persisted {indices[key.hex]} {key.hex}")

    round_ = 0

    def save(handles: list[Fb[bytes]]) -> None:
        nonlocal round_

        def commit(keys: list[Any]) -> int:
            _write_manifest(Path(args.saves), round_, {k.hex: indices[k.hex] for k in keys})
            return round_

        done = fb.save(handles, saves, commit, max_concurrency=3)
        _emit(f"committed {done} " + " ".join(h.key.hex for h in handles))
        round_ += 1

    def replace() -> None:
        handle = rng.choice(live)
        index = next(counter)
        with handle.load_mut() as guard:
            guard.value = value_for(args.seed, index, args.size)
        indices[handle.key.hex] = index
        _emit(f"inserted {index} {handle.key.hex}")

    def load() -> None:
        handle = rng.choice(live)
        with handle.load() as value:
            if value != value_for(args.seed, indices[handle.key.hex], args.size):
                raise SystemExit(f"wrong value for {handle!r}")

    # Claim both locations before the parent may kill: a location's first persist writes
    # its marker (tests/test_crash.py covers a kill in there).
    persist([insert()])
    save(live[:1])
    _emit("ready")

    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        action = rng.choice(["burst", "persist", "persist_many", "save", "replace", "load"])
        if action == "burst":
            for _ in range(rng.randint(2, 6)):
                insert()
        elif action == "persist":
            persist([rng.choice(live)])
        elif action == "persist_many":
            persist(rng.sample(live, min(len(live), rng.randint(2, 5))))
        elif action == "save":
            save(rng.sample(live, min(len(live), rng.randint(1, 4))))
        elif action == "replace":
            replace()
        else:
            load()
        while len(live) > MAX_LIVE:
            live.pop(rng.randrange(len(live))).close()
    for handle in live:
        handle.close()
    store.finished()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
