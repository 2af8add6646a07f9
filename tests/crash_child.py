"""A child process for the crash and fsync tests: persists items, and may kill itself.

Run as ``python tests/crash_child.py CACHE PERSIST --mode persist|save [options]``. It prints
one line per step, flushed at once, so whatever was printed before a kill reaches the parent:

- ``inserted <i> <hex>``: item ``i`` (value `value_for` ``(seed, i, size)``) has key ``hex``;
- ``persisted <i> <hex>``: item ``i`` was persisted **and** the location fsynced;
- ``committed <round> <hex> ...``: `fb.save` of that round returned (its manifest is in place);
- ``event <json>``: with ``--trace``, one wrapped call (name and paths) once it returned;
  a call that raised is ``["!name", *paths, "ERRNO"]``;
- ``counts <json>``: with ``--count``, how often each wrappable function ran (at the end).

``--kill MODULE.FUNC:N[:before|after[:REGEX]]`` replaces ``MODULE.FUNC`` (``os.open``,
``os.link``, ``os.replace``, ``os.fsync``, ``os.unlink``, ``shutil.copyfileobj``) *in this
process only* by a wrapper that sends this process SIGKILL on the N-th call (counting only the calls
whose first path argument matches REGEX, when given), before or after the real call runs.
fb itself has no hook for this: the wrapper replaces the module attribute fb calls.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

MANIFEST = "manifest.json"
WRAPPABLE = ("os.open", "os.link", "os.replace", "os.fsync", "os.unlink", "shutil.copyfileobj")


def value_for(seed: int, index: int, size: int) -> bytes:
    """Return the value of item ``index``: ``size`` pseudo-random bytes (the parent recomputes)."""
    return random.Random(seed * 1_000_003 + index).randbytes(size)


def _module(name: str) -> ModuleType:
    return {"os": os, "shutil": shutil}[name]


def _describe(name: str, args: tuple[Any, ...]) -> list[str]:
    """Return the paths a call works on (for fsync: what its descriptor points to)."""
    if name in ("os.fsync", "shutil.copyfileobj"):
        fds = [arg if isinstance(arg, int) else arg.fileno() for arg in args[:2]]
        return [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
    return [os.fspath(arg) for arg in args if isinstance(arg, str | os.PathLike)]


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Wrappers:
    """Replaces the wrappable functions with counting (and maybe tracing or killing) ones."""

    def __init__(self, *, trace: bool, kill: str | None) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._trace = trace
        self._kill_name: str | None = None
        self._kill_at = 0
        self._kill_after = False
        self._kill_match: re.Pattern[str] | None = None
        self._matched = 0
        if kill is not None:
            name, _, rest = kill.partition(":")
            number, _, rest = rest.partition(":")
            when, _, match = rest.partition(":")
            if name not in WRAPPABLE or when not in ("", "before", "after"):
                raise SystemExit(f"bad --kill {kill!r}")
            self._kill_name, self._kill_at = name, int(number)
            self._kill_after = when == "after"
            self._kill_match = re.compile(match) if match else None
        for name in WRAPPABLE:
            module_name, _, attr = name.partition(".")
            module = _module(module_name)
            setattr(module, attr, self._wrap(name, getattr(module, attr)))

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kill_here = False
            watch = self._trace or (self._kill_match is not None and name == self._kill_name)
            paths = _describe(name, args) if watch else []
            with self._lock:
                self.counts[name] += 1
                if name == self._kill_name and (
                    self._kill_match is None or bool(paths and self._kill_match.search(paths[0]))
                ):
                    self._matched += 1
                    kill_here = self._matched == self._kill_at
            if kill_here and not self._kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                result = original(*args, **kwargs)
            except OSError as exc:
                if self._trace:
                    code = errno.errorcode.get(exc.errno or 0, "?")
                    _emit("event " + json.dumps(["!" + name, *paths, code]))
                raise
            if self._trace:
                _emit("event " + json.dumps([name, *paths]))
            if kill_here:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapper


def _write_manifest(directory: Path, round_: int, keys: dict[str, int]) -> None:
    """The caller's atomic commit: write a temporary file, fsync it, rename it into place."""
    target = directory / MANIFEST
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump({"round": round_, "items": keys}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, target)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str]) -> None:
    """Run the scenario the arguments describe."""
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("persist")
    parser.add_argument("--mode", choices=("persist", "save"), default="persist")
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--count", action="store_true")
    parser.add_argument("--delete-one", action="store_true")
    args = parser.parse_args(argv)

    import fb
    from fb import BackingStore, FBPool
    from fb.backends import FBStore, PreparedPath
    from fb.codecs import PickleCodec

    wrappers = Wrappers(trace=args.trace, kill=args.kill)
    store: BackingStore[bytes] = BackingStore(
        # Blob files (no segments): the kills count calls on blob files (os.replace...).
        FBStore(PickleCodec(), PreparedPath(args.cache), segment_max=0),
        max_workers=2,
    )
    # Two items fit: inserting the others writes the earlier ones back in the background,
    # so persist finds some blobs already written and writes the others itself. The kills
    # count writes, so the order of writes must not depend on timing: no early writes.
    pool: FBPool[bytes] = FBPool(store, max_items=2, write="on_evict")
    tracked = store.track_path(args.persist)
    counter = iter(range(1_000_000))

    def insert() -> fb.Fb[bytes]:
        index = next(counter)
        handle = pool.insert(value_for(args.seed, index, args.size))
        _emit(f"inserted {index} {handle.key.hex}")
        indices[handle.key.hex] = index
        return handle

    indices: dict[str, int] = {}
    if args.mode == "persist":
        handles = [insert() for _ in range(args.items)]
        for handle in handles:
            key = handle.persist(tracked)
            store.fsync(tracked)
            _emit(f"persisted {indices[key.hex]} {key.hex}")
        if args.delete_one:
            store.delete_persisted(tracked, handles[0].key)
            store.fsync(tracked)
            _emit(f"deleted {handles[0].key.hex}")
    else:
        handles = []
        for round_ in range(args.rounds):
            # Each round keeps the second half of the last one and adds new items.
            handles = handles[len(handles) // 2 :] + [insert() for _ in range(args.items // 2)]

            def commit(keys: list[Any], round_: int = round_) -> int:
                _write_manifest(Path(args.persist), round_, {k.hex: indices[k.hex] for k in keys})
                return round_

            # The first save runs one persist at a time: concurrent first persists into a fresh
            # location race on its marker (tests/test_persist.py::
            # test_concurrent_first_persists_claim_the_location_once); later rounds run three.
            done = fb.save(handles, tracked, commit, max_concurrency=1 if round_ == 0 else 3)
            _emit(f"committed {done} " + " ".join(h.key.hex for h in handles))
    handles.clear()
    store.finished()
    store.close()
    if args.count:
        _emit("counts " + json.dumps(dict(wrappers.counts)))


# -- the parent's side ------------------------------------------------------------------------


@dataclass
class ChildRun:
    """What a child printed before it ended, parsed."""

    returncode: int
    stderr: str
    inserted: dict[UUID, int] = field(default_factory=dict)
    persisted: dict[UUID, int] = field(default_factory=dict)
    committed: list[tuple[int, list[UUID]]] = field(default_factory=list)
    deleted: list[UUID] = field(default_factory=list)
    events: list[list[str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def run_child(cache: Path, persist: Path, *options: str, timeout: float = 120.0) -> ChildRun:
    """Run this script in a fresh interpreter and parse what it printed."""
    result = subprocess.run(
        [sys.executable, "-W", "error", __file__, str(cache), str(persist), *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    run = ChildRun(result.returncode, result.stderr)
    run.lines = result.stdout.splitlines()
    for line in run.lines:
        kind, _, rest = line.partition(" ")
        if kind == "inserted":
            index, hexkey = rest.split()
            run.inserted[UUID(hex=hexkey)] = int(index)
        elif kind == "persisted":
            index, hexkey = rest.split()
            run.persisted[UUID(hex=hexkey)] = int(index)
        elif kind == "committed":
            round_, *keys = rest.split()
            run.committed.append((int(round_), [UUID(hex=k) for k in keys]))
        elif kind == "deleted":
            run.deleted.append(UUID(hex=rest))
        elif kind == "event":
            run.events.append(json.loads(rest))
        elif kind == "counts":
            run.counts = json.loads(rest)
        else:
            raise AssertionError(f"unexpected line from the child: {line!r}")
    return run


if __name__ == "__main__":
    main(sys.argv[1:])
