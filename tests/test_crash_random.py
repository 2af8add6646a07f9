"""Crash safety at random moments: SIGKILL during heavy write-back, persist and save.

``tests/test_crash.py`` kills its child at chosen calls. Here the child
(``tests/crash_random_child.py``) runs a random mix of background write-backs, persists
(single and concurrent), fsyncs and `fb.save` rounds without pause, and the parent kills it
after a random delay drawn from a seeded RNG — the delay *is* the fault; the child's
``ready`` line (awaited with a timeout) is the only synchronisation. A new store then opens
the same directories and must find:

- the cache directory swept (no blob, no temporary file of the dead store left);
- every key reported persisted-and-fsynced present at its location, loading bit-exact;
- every key found at either location loading bit-exact: no partial blob is ever visible;
- the last committed save whole (every key of its manifest there and intact);
- both locations still usable: the new store persists there.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import fb
from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.testing.faults import FaultyStrategy
from tests.crash_child import MANIFEST, run_child, value_for
from tests.reliability import blob_keys_on_storage

CHILD = Path(__file__).with_name("crash_random_child.py")
SIZE = 100_000
READY_TIMEOUT = 60.0
MAX_DELAY = 0.5
"""The kill comes 0 to this many seconds after the child is ready."""


@dataclass
class Killed:
    """What a killed child printed, parsed."""

    returncode: int
    stderr: str
    delay: float
    inserted: dict[UUID, int] = field(default_factory=dict)
    persisted: dict[UUID, int] = field(default_factory=dict)
    committed: list[tuple[int, list[UUID]]] = field(default_factory=list)


def run_and_kill(cache: Path, durable: Path, saves: Path, seed: int, delay: float) -> Killed:
    """Start the child, wait for ``ready``, let it work ``delay`` seconds, SIGKILL it."""
    child = subprocess.Popen(
        [
            *(sys.executable, "-W", "error", str(CHILD), str(cache), str(durable), str(saves)),
            *("--seed", str(seed), "--size", str(SIZE)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name="child-stdout", daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=READY_TIMEOUT)
            except queue.Empty:
                raise AssertionError("the child never said it was ready") from None
            if line is None:
                stderr = child.stderr.read() if child.stderr else ""
                raise AssertionError(f"the child ended before it was ready: {stderr}")
            seen.append(line)
            if line == "ready\n":
                break
        time.sleep(delay)  # the fault: a random moment of the child's work
    finally:
        child.send_signal(signal.SIGKILL)
        returncode = child.wait(READY_TIMEOUT)
        reader.join(READY_TIMEOUT)
    assert child.stdout is not None
    assert child.stderr is not None
    child.stdout.close()
    stderr = child.stderr.read()
    child.stderr.close()
    while (line := lines.get()) is not None:
        seen.append(line)
    killed = Killed(returncode, stderr, delay)
    for line in seen:
        if not line.endswith("\n"):
            continue  # cut by the kill
        kind, _, rest = line.strip().partition(" ")
        if kind == "inserted":
            index, hexkey = rest.split()
            killed.inserted[UUID(hex=hexkey)] = int(index)
        elif kind == "persisted":
            index, hexkey = rest.split()
            killed.persisted[UUID(hex=hexkey)] = int(index)
        elif kind == "committed":
            round_, *keys = rest.split()
            killed.committed.append((int(round_), [UUID(hex=k) for k in keys]))
        else:
            assert kind == "ready", f"unexpected line from the child: {line!r}"
    return killed


@dataclass
class Survey:
    """What the new store found after a kill."""

    leftovers: int
    durable: int
    saved: int


def check_after_kill(run: Killed, cache: Path, durable: Path, saves: Path, seed: int) -> Survey:
    """Open a new store on the dead child's directories and check what a restart relies on."""
    assert run.returncode == -signal.SIGKILL, f"not killed ({run.returncode}): {run.stderr}"
    location = PreparedPath(cache)
    leftovers = len(list(cache.glob("??/*")))
    store: BackingStore[bytes] = BackingStore(FBStore(PickleCodec(), location))
    try:
        assert list(cache.glob("??/*")) == [], "the cache directory was not swept on open"
        pool: FBPool[bytes] = FBPool(store, max_items=1)
        tracked_durable = store.track_path(durable)
        tracked_saves = store.track_path(saves)
        keys = tracked_durable.keys()
        assert set(run.persisted) <= keys, "a key reported persisted and fsynced is missing"
        assert tracked_durable.unknown == ()
        assert set(tracked_saves.unknown) <= {MANIFEST, MANIFEST + ".tmp"}
        for tracked in (tracked_durable, tracked_saves):
            assert tracked.keys() <= set(run.inserted), "a key nobody inserted appeared"
            for key in sorted(tracked.keys()):
                handle = pool.register(tracked, key)
                assert handle is not None, key
                with handle.load() as value:  # CorruptBlobError here: a partial blob
                    assert value == value_for(seed, run.inserted[key], SIZE), key
                handle.close()
        manifest = json.loads((saves / MANIFEST).read_text(encoding="utf-8"))
        listed = {UUID(hex=k): i for k, i in manifest["items"].items()}
        assert set(listed) <= tracked_saves.keys(), "the last committed save is not whole"
        assert all(run.inserted[key] == index for key, index in listed.items())
        assert run.committed, "the child commits a save before it is ready"
        assert manifest["round"] >= run.committed[-1][0]
        # Both locations stay usable: a restart can go on persisting there.
        for tracked in (tracked_durable, tracked_saves):
            fresh = pool.insert(b"after the restart")
            key = fresh.persist(tracked)
            store.fsync(tracked)
            assert key in tracked.rescan()
            fresh.close()
        store.finished()
        survey = Survey(leftovers, len(tracked_durable), len(tracked_saves))
    finally:
        store.close()
    assert blob_keys_on_storage(location) == set()
    return survey


@pytest.fixture(name="shm_root")
def fixture_shm_root(tmp_path: Path) -> Iterator[Path | None]:
    """A directory on another device (/dev/shm) for the copy ladder, or None if there is none."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="fb-crash-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def kill_at_random(trial: int, tmp_path: Path, shm_root: Path | None) -> Survey:
    """One repetition: seeded locations and delay, run, kill, restart, check."""
    rng = random.Random(f"crash-random-{trial}")
    base = tmp_path / f"trial-{trial}"
    cache = base / "cache"
    durable = base / "durable"
    saves = base / "saves"
    # The durable location on the cache's device (hard links) or on /dev/shm (fsynced copies).
    if shm_root is not None and rng.random() < 0.5:
        durable = shm_root / f"trial-{trial}-durable"
    for path in (durable, saves):
        path.mkdir(parents=True)
    seed = rng.randrange(2**16)
    run = run_and_kill(cache, durable, saves, seed, rng.uniform(0.0, MAX_DELAY))
    return check_after_kill(run, cache, durable, saves, seed)


@pytest.mark.parametrize("trial", range(3))
@pytest.mark.timeout(180, method="thread")
def test_a_kill_at_a_random_moment_loses_nothing_durable(
    trial: int, tmp_path: Path, shm_root: Path | None
) -> None:
    """After SIGKILL at a random moment, everything fsynced is there and every blob is whole."""
    kill_at_random(trial, tmp_path, shm_root)


@pytest.mark.stress
@pytest.mark.timeout(1800, method="thread")
def test_kills_at_random_moments_stress(tmp_path: Path, shm_root: Path | None) -> None:
    """Sixty kills at random moments, each followed by a restart that finds everything whole."""
    surveys = [kill_at_random(1000 + trial, tmp_path, shm_root) for trial in range(60)]
    assert sum(survey.leftovers for survey in surveys) > 0, "no kill left work to sweep"


# -- what a restart inherits --------------------------------------------------------------------


class SyncRecorder(FaultyStrategy[bytes]):
    """A store that records the paths each fsync makes durable (no fault is injected)."""

    def __init__(self, inner: FBStore[bytes]) -> None:
        super().__init__(inner)
        self.synced: set[str] = set()

    def fsync(self, location: Any, paths: set[str]) -> None:
        super().fsync(location, paths)
        self.synced |= paths


def test_a_save_after_a_restart_fsyncs_what_the_dead_process_did_not(
    tmp_path: Path, persist_dir: Path
) -> None:
    """A blob the killed process persisted but never fsynced is fsynced before the next commit."""
    cache = tmp_path / "cache"
    run = run_child(
        *(cache, persist_dir, "--mode", "persist", "--items", "2", "--size", "1000"),
        *("--kill", rf"os.fsync:1:before:^{re.escape(str(persist_dir))}/[0-9a-f]{{2}}/"),
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert run.persisted == {}, "killed before its first fsync of a blob"
    recorder = SyncRecorder(FBStore(PickleCodec(), PreparedPath(cache)))
    store: BackingStore[bytes] = BackingStore(recorder)
    try:
        pool: FBPool[bytes] = FBPool(store, max_items=2)
        tracked = store.track_path(persist_dir)
        (key,) = tracked.keys()  # linked by the dead process, never fsynced
        handle = pool.register(tracked, key)
        assert handle is not None
        blob = PreparedPath(persist_dir).blob_path(key)
        synced_at_commit: list[set[str]] = []

        def commit(keys: list[UUID]) -> None:
            synced_at_commit.append(set(recorder.synced))

        fb.save([handle], tracked, commit)
        assert blob in synced_at_commit[0], "the commit came before the blob was durable"
        assert os.path.dirname(blob) in synced_at_commit[0]
        handle.close()
        pool.close()
    finally:
        store.close()
