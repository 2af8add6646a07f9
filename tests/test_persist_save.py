"""Durability: fsync as the barrier for what persist changed, and the save protocol."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import fb
from fb import BackingStore, FBPool, TrackedPath
from fb.backends._segments import SEGMENT_MAX
from fb.exceptions import CodecError
from tests.conftest import TIMEOUT, value_of
from tests.crash_child import run_child
from tests.persist_helpers import (
    MARKER,
    PersistCounting,
    blob,
    fixture_counting,  # noqa: F401 - a fixture, found by name
    fixture_pool,  # noqa: F401 - a fixture, found by name
    fixture_tracked,  # noqa: F401 - a fixture, found by name
    listing,
    persist_gate,
)


def write_manifest(manifest: Path, keys: list[UUID]) -> list[UUID]:
    """A caller's atomic commit: write the key list to a temporary file, fsync, rename."""
    tmp = manifest.with_name(manifest.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump([key.hex for key in keys], file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, manifest)
    return keys


def read_manifest(manifest: Path) -> list[UUID]:
    """The keys a manifest written by `write_manifest` lists."""
    return [UUID(hex=k) for k in json.loads(manifest.read_text(encoding="utf-8"))]


# -- fsync ---------------------------------------------------------------------------------


def test_fsync_is_the_barrier_for_what_persist_changed(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
) -> None:
    """After persist paths wait for fsync; fsync syncs the new file, its shard and the root."""
    assert tracked.unsynced == 0
    key = pool.insert("durable").persist(tracked)
    assert tracked.unsynced > 0
    store.fsync(tracked)
    assert tracked.unsynced == 0
    assert counting.synced[-1] >= {
        str(blob(persist_dir, key)),
        str(persist_dir / key.hex[:2]),
        str(persist_dir),
    }
    store.fsync(tracked)  # nothing new: an empty barrier
    assert counting.synced[-1] == set()
    asyncio.run(pool.insert("async").apersist(tracked))
    assert tracked.unsynced > 0
    asyncio.run(store.afsync(tracked))
    assert tracked.unsynced == 0


def _events_between(lines: list[str], start: int, stop: int) -> list[list[str]]:
    return [json.loads(line[6:]) for line in lines[start:stop] if line.startswith("event ")]


def _index(lines: list[str], prefix: str, start: int = 0) -> int:
    return next(i for i, line in enumerate(lines) if i >= start and line.startswith(prefix))


@pytest.fixture(name="proc_fd")
def fixture_proc_fd() -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd: the child cannot name the descriptors it fsyncs")


@pytest.mark.usefixtures("proc_fd")
def test_fsync_reaches_the_new_files_and_their_directories(tmp_path: Path) -> None:
    """In a child process whose os.fsync is wrapped, every link is fsynced with its directories."""
    cache, persist = tmp_path / "cache", tmp_path / "persist"
    persist.mkdir()
    # Blobs above the segment threshold: files of their own, persisted by a hard link.
    big = str(SEGMENT_MAX + 1000)
    run = run_child(cache, persist, "--items", "3", "--size", big, "--trace", "--delete-one")
    assert run.returncode == 0, run.stderr
    lines = run.lines
    # The marker is fsynced under a temporary name before it is linked into place.
    events_all = _events_between(lines, 0, len(lines))
    marker_syncs = [
        e[1] for e in events_all if e[0] == "os.fsync" and e[1].startswith(str(persist / MARKER))
    ]
    assert marker_syncs
    assert all(
        re.fullmatch(re.escape(str(persist / MARKER)) + r"\.[0-9a-f]+\.tmp", p)
        for p in marker_syncs
    )
    assert (persist / MARKER).is_file()
    start = 0
    for key in run.persisted:
        done = _index(lines, f"persisted {run.persisted[key]} ", start)
        events = _events_between(lines, start, done)
        target = str(blob(persist, key))
        link = events.index(["os.link", str(blob(cache, key)), target])
        synced = [e[1] for e in events[link:] if e[0] == "os.fsync"]
        assert {target, str(persist / key.hex[:2]), str(persist)} <= set(synced), events
        start = done + 1
    (deleted,) = run.deleted
    events = _events_between(lines, start, _index(lines, "deleted ", start))
    unlink = events.index(["os.unlink", str(blob(persist, deleted))])
    assert ["os.fsync", str(persist / deleted.hex[:2])] in events[unlink:]


@pytest.mark.usefixtures("proc_fd")
def test_cross_device_copy_is_fsynced_before_its_rename(tmp_path: Path, shm_dir: Path) -> None:
    """A copy to another device is written and fsynced under a temporary name, then renamed."""
    cache = tmp_path / "cache"
    big = str(SEGMENT_MAX + 1000)  # blob files, not segment slots
    run = run_child(cache, shm_dir, "--items", "2", "--size", big, "--trace")
    assert run.returncode == 0, run.stderr
    lines = run.lines
    start = 0
    for key in run.persisted:
        done = _index(lines, f"persisted {run.persisted[key]} ", start)
        events = _events_between(lines, start, done)
        target = str(blob(shm_dir, key))
        assert ["!os.link", str(blob(cache, key)), target, "EXDEV"] in events
        assert not any(e[0] == "os.link" and e[-1] == target for e in events)
        (rename,) = [i for i, e in enumerate(events) if e[0] == "os.replace" and e[2] == target]
        tmp = events[rename][1]
        assert Path(tmp).parent == Path(target).parent
        assert Path(tmp).name.startswith(".")
        copied = events.index(["shutil.copyfileobj", str(blob(cache, key)), tmp])
        assert ["os.fsync", tmp] in events[copied:rename]
        synced = [e[1] for e in events[rename:] if e[0] == "os.fsync"]
        assert {target, str(shm_dir / key.hex[:2]), str(shm_dir)} <= set(synced)
        start = done + 1


# -- the save protocol ---------------------------------------------------------------------


def test_save_persists_commits_then_deletes_the_rest(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    tmp_path: Path,
    persist_dir: Path,
) -> None:
    """Save persists all, fsyncs, commits the keys in order, then deletes the keys left out."""
    manifest = tmp_path / "manifest.json"
    first = [pool.insert(f"v{i}") for i in range(3)]
    # One at a time into the fresh location: concurrent first persists race on the marker
    # (see test_concurrent_first_persists_claim_the_location_once).
    assert fb.save(
        first, tracked, lambda keys: write_manifest(manifest, keys), max_concurrency=1
    ) == [h.key for h in first]
    assert read_manifest(manifest) == [h.key for h in first]
    second = [first[2], pool.insert("v3")]
    seen: list[str] = []

    def commit(keys: list[UUID]) -> str:
        seen.extend(counting.kinds())
        assert tracked.unsynced == 0  # fsynced before the commit
        assert all(blob(persist_dir, key).exists() for key in [h.key for h in first])
        write_manifest(manifest, keys)
        return "committed"

    assert fb.save(second, tracked, commit, max_concurrency=2) == "committed"
    assert seen[-1] == "fsync"
    assert read_manifest(manifest) == [h.key for h in second]
    assert counting.kinds()[-1] == "fsync"  # the deletions were made durable too
    assert tracked.unsynced == 0
    assert tracked.keys() == {h.key for h in second}
    assert store.track_path(persist_dir).keys() == {h.key for h in second}
    assert value_of(first[0]) == "v0"  # deleting the durable copy does not touch the item


def test_save_with_a_failing_commit_deletes_nothing(
    pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """A commit that raises leaves the previous save whole, and the error reaches the caller."""
    manifest = tmp_path / "manifest.json"
    old = [pool.insert("a"), pool.insert("b")]
    fb.save(old, tracked, lambda keys: write_manifest(manifest, keys), max_concurrency=1)
    saved = listing(persist_dir)

    def commit(keys: list[UUID]) -> None:
        raise RuntimeError("the disk with the manifest is full")

    new = [pool.insert("c")]
    with pytest.raises(RuntimeError, match="disk with the manifest"):
        fb.save(new, tracked, commit)
    assert read_manifest(manifest) == [h.key for h in old]
    for key in read_manifest(manifest):
        assert blob(persist_dir, key).exists()
    assert {k: v for k, v in listing(persist_dir).items() if k in saved} == saved


def test_save_with_an_unpicklable_item_deletes_nothing(
    pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """An item that cannot be encoded fails its persist: no commit, nothing deleted."""
    manifest = tmp_path / "manifest.json"
    old = [pool.insert("a"), pool.insert("b")]
    fb.save(old, tracked, lambda keys: write_manifest(manifest, keys), max_concurrency=1)
    saved = listing(persist_dir)
    commits: list[list[UUID]] = []
    bad = pool.insert(threading.Lock())
    with pytest.raises(CodecError):
        fb.save([pool.insert("c"), bad], tracked, commits.append)
    assert commits == []
    assert read_manifest(manifest) == [h.key for h in old]
    assert {k: v for k, v in listing(persist_dir).items() if k in saved} == saved
    assert bad.key not in tracked
    assert not blob(persist_dir, bad.key).exists()


def test_save_of_nothing_commits_an_empty_list_and_deletes_every_key(
    pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """Saving no items commits [] and empties the location of keys."""
    keys = {pool.insert(i).persist(tracked) for i in range(2)}
    assert fb.save([], tracked, lambda keys: list(keys)) == []
    assert tracked.keys() == frozenset()
    assert not any(blob(persist_dir, key).exists() for key in keys)
    assert (persist_dir / MARKER).exists()


def test_asave_is_the_async_twin(pool: FBPool[Any], tracked: TrackedPath, tmp_path: Path) -> None:
    """`asave` runs the same protocol and returns the commit's result."""
    manifest = tmp_path / "manifest.json"
    stale = pool.insert("stale").persist(tracked)  # also claims the location (see race test)
    items = [pool.insert("x"), pool.insert("y")]
    result = asyncio.run(fb.asave(items, tracked, lambda keys: write_manifest(manifest, keys)))
    assert result == [h.key for h in items]
    assert read_manifest(manifest) == result
    assert tracked.keys() == set(result)
    assert stale not in tracked


def test_save_bounds_its_concurrency(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting
) -> None:
    """At most ``max_concurrency`` persists run at once."""
    claimed = pool.insert("claims the location first")  # see the race test
    claimed.persist(tracked)
    counting.persist_threads.clear()
    items = [pool.insert(i) for i in range(4)]
    with persist_gate(counting) as gate, ThreadPoolExecutor(1) as executor:
        future = executor.submit(fb.save, items, tracked, list, max_concurrency=2)
        with counting.changed:
            assert counting.changed.wait_for(lambda: counting.active_persists == 2, TIMEOUT)
        gate.set()
        assert future.result(TIMEOUT) == [h.key for h in items]
    assert counting.peak_persists == 2
    assert len(counting.persist_threads) == 2


def test_save_rejects_a_concurrency_below_one(
    pool: FBPool[Any], tracked: TrackedPath, counting: PersistCounting
) -> None:
    """``max_concurrency=0`` is an error raised before anything is persisted."""
    with pytest.raises(ValueError, match="max_concurrency"):
        fb.save([pool.insert("x")], tracked, list, max_concurrency=0)
    assert "persist" not in counting.kinds()
