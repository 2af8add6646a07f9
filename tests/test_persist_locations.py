"""Persist locations: tracking and scanning them, and the ones fb refuses to write to."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

import fb
from fb import BackingStore, FBPool, TrackedPath
from fb.backends import FBStore, PreparedPath
from fb.exceptions import ForeignLocationError
from tests.conftest import value_of
from tests.persist_helpers import (
    MARKER,
    PersistCounting,
    blob,
    fixture_counting,  # noqa: F401 - a fixture, found by name
    fixture_pool,  # noqa: F401 - a fixture, found by name
    fixture_tracked,  # noqa: F401 - a fixture, found by name
    listing,
    open_store,
)

# -- track_path ----------------------------------------------------------------------------


def test_track_path_of_an_empty_location_has_no_keys(
    store: BackingStore[Any], persist_dir: Path
) -> None:
    """A fresh location has no keys, nothing unknown, and tracking it writes nothing there."""
    tracked = store.track_path(persist_dir)
    assert tracked.keys() == frozenset()
    assert len(tracked) == 0
    assert tracked.unknown == ()
    assert tracked.unsynced == 0
    assert tracked.path.root == str(persist_dir)
    assert tracked.store is store
    assert listing(persist_dir) == {}


def test_track_path_accepts_a_path_a_string_a_url_and_a_prepared_path(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """Every spelling of one location tracks the same keys."""
    key = pool.insert("x").persist(store.track_path(persist_dir))
    spellings: list[Any] = [
        persist_dir,
        str(persist_dir),
        persist_dir.as_uri(),
        PreparedPath(persist_dir),
    ]
    for spelling in spellings:
        tracked = store.track_path(spelling)
        assert tracked.keys() == {key}, spelling
        assert key in tracked
        assert tracked.path == PreparedPath(persist_dir)


def test_track_path_on_the_store_filesystem_reuses_its_filesystem(
    tmp_path: Path, persist_dir: Path
) -> None:
    """A path or URL on the store's filesystem is tracked through the store's own fs object."""
    fs = LocalFileSystem(skip_instance_cache=True)  # not fsspec's shared default instance
    backend: FBStore[str] = FBStore("pickle", PreparedPath(tmp_path / "mine", fs=fs))
    with BackingStore(backend) as store:
        for spelling in (persist_dir, str(persist_dir), persist_dir.as_uri()):
            tracked = store.track_path(spelling)
            assert tracked.path.fs is fs, spelling
            assert tracked.path.root == str(persist_dir)
        handle = FBPool(store, max_items=0).insert("x")
        key = handle.persist(tracked)
        assert blob(persist_dir, key).is_file()
        handle.close()


def test_track_path_keeps_a_prepared_path_and_another_protocol_apart(
    store: BackingStore[Any], persist_dir: Path
) -> None:
    """A given `PreparedPath` keeps its own filesystem; another protocol gets one of its own."""
    mine = PreparedPath(persist_dir, storage_options={"auto_mkdir": True})
    assert store.track_path(mine).path is mine
    url = f"memory://fb-test-{uuid.uuid4().hex}"
    location = PreparedPath(url)
    location.fs.makedirs(location.root)
    try:
        tracked = store.track_path(url)
        assert isinstance(tracked.path.fs, MemoryFileSystem)
        assert tracked.path == location
    finally:
        location.fs.rm(location.root, recursive=True)


def test_track_path_finds_keys_persisted_by_an_earlier_store(
    tmp_path: Path, persist_dir: Path
) -> None:
    """A new store scanning the location finds exactly the keys persisted there before."""
    with open_store(tmp_path / "first") as (store, _):
        pool: FBPool[str] = FBPool(store, max_items=4)
        tracked = store.track_path(persist_dir)
        keys = {pool.insert(f"v{i}").persist(tracked) for i in range(3)}
        store.fsync(tracked)
    with open_store(tmp_path / "second") as (store, _):
        again = store.track_path(persist_dir)
        assert again.keys() == keys
        assert all(key in again for key in keys)
        assert set(again) == keys
        assert again.unknown == ()


def test_track_path_reports_and_keeps_unknown_names(
    store: BackingStore[Any],
    pool: FBPool[Any],
    persist_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Names fb does not own are logged and listed in `unknown`, and no save deletes them."""
    key = pool.insert("x").persist(store.track_path(persist_dir))
    stray = uuid.uuid4().hex
    foreign = {
        "notes.txt": b"mine",
        f"{stray}": b"a key-like name outside any shard",
        f"{key.hex[:2]}/README": b"a stranger in a shard",
        f"{'00' if stray[:2] != '00' else '01'}/{stray}": b"a key in the wrong shard",
        "sub/deeper.bin": b"nested",
    }
    for name, content in foreign.items():
        path = persist_dir / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="fb"):
        tracked = store.track_path(persist_dir)
    assert tracked.keys() == {key}
    assert set(tracked.unknown) == {*foreign, "sub"} - {"sub/deeper.bin"}
    assert any("not fb blobs" in record.getMessage() for record in caplog.records)
    # Saving nothing deletes every key, and only keys.
    fb.save([], tracked, lambda keys: keys)
    assert not blob(persist_dir, key).exists()
    for name, content in foreign.items():
        assert (persist_dir / name).read_bytes() == content


def test_track_path_of_a_missing_location_names_it(
    store: BackingStore[Any], tmp_path: Path
) -> None:
    """Tracking a location that does not exist raises FileNotFoundError naming it."""
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        store.track_path(missing)
    assert info.value.filename == str(missing)
    assert not missing.exists()


def test_track_path_refuses_the_store_cache_directory(
    store: BackingStore[Any], cache_dir: Path
) -> None:
    """A store's own cache directory is not a durable location."""
    with pytest.raises(ForeignLocationError, match="cache directory"):
        store.track_path(cache_dir)


def test_atrack_path_is_the_async_twin(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """`atrack_path` returns a TrackedPath with the same keys as `track_path`."""
    key = pool.insert("x").persist(store.track_path(persist_dir))
    tracked = asyncio.run(store.atrack_path(persist_dir))
    assert isinstance(tracked, TrackedPath)
    assert tracked.keys() == {key}


def test_rescan_sees_keys_persisted_by_another_store(
    tracked: TrackedPath, tmp_path: Path, persist_dir: Path
) -> None:
    """`rescan` lists the location again; keys persisted elsewhere appear."""
    with open_store(tmp_path / "other") as (other, _):
        pool: FBPool[str] = FBPool(other, max_items=2)
        key = pool.insert("elsewhere").persist(other.track_path(persist_dir))
    assert key not in tracked
    assert tracked.rescan() == {key}
    assert key in tracked


# -- locations fb must not write to --------------------------------------------------------


def test_persist_into_a_location_with_a_foreign_marker_raises(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """A marker fb did not write makes persist refuse the location, changing nothing."""
    (persist_dir / MARKER).write_bytes(b"somebody else's tool, format 7\n")
    before = listing(persist_dir)
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    with pytest.raises(ForeignLocationError, match="marker"):
        handle.persist(tracked)
    assert listing(persist_dir) == before
    assert tracked.keys() == frozenset()
    assert tracked.unsynced == 0


def test_persist_into_a_directory_in_use_raises_and_changes_nothing(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """A first persist refuses a non-empty directory without fb's marker, naming a culprit."""
    (persist_dir / "thesis.tex").write_text("years of work")
    before = listing(persist_dir)
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    with pytest.raises(ForeignLocationError, match=r"not empty .*thesis\.tex"):
        handle.persist(tracked)
    assert listing(persist_dir) == before
    assert tracked.keys() == frozenset()


def test_persist_into_a_directory_of_empty_shards_claims_it(
    store: BackingStore[Any], pool: FBPool[Any], persist_dir: Path
) -> None:
    """Shard directories alone (say, from a persist that crashed early) are fb's own."""
    (persist_dir / "ab").mkdir()
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    key = handle.persist(tracked)
    assert (persist_dir / MARKER).is_file()
    assert (persist_dir / key.hex[:2] / key.hex).is_file()


def test_persist_into_another_store_cache_directory_raises(
    store: BackingStore[Any], pool: FBPool[Any], tmp_path: Path
) -> None:
    """The cache directory of another store (it holds ``.fb-lock``) is not a durable location."""
    with open_store(tmp_path / "other-cache") as (other, _):
        other_cache = Path(other.strategy.inner.path.root)  # type: ignore[attr-defined]
        assert (other_cache / ".fb-lock").exists()
        before = listing(other_cache)
        tracked = store.track_path(other_cache)
        with pytest.raises(ForeignLocationError, match="cache directory"):
            pool.insert("x").persist(tracked)
        assert listing(other_cache) == before
        assert tracked.keys() == frozenset()


def _can_create_in(path: Path) -> bool:
    """Whether a file can be created in ``path`` right now (the probe leaves nothing)."""
    probe = path / ".fb-test-probe"
    try:
        probe.touch(exist_ok=False)
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture(name="make_read_only")
def fixture_make_read_only() -> Iterator[Callable[[Path], None]]:
    """Make a directory tree read-only for real: mode 0o500, or a read-only bind mount as root."""
    undo: list[Callable[[], object]] = []

    def make(path: Path) -> None:
        directories = [p for p in path.rglob("*") if p.is_dir()]
        for directory in [path, *directories]:
            directory.chmod(0o500)
            undo.append(functools.partial(directory.chmod, 0o700))
        if not _can_create_in(path):
            return
        # Permissions are not enforced (root, CAP_DAC_OVERRIDE): try a read-only bind mount.
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("directory permissions are not enforced and mount is unavailable")
        bound = subprocess.run(
            ["mount", "--bind", str(path), str(path)], capture_output=True, check=False
        )
        if bound.returncode != 0:
            pytest.skip(f"permissions are not enforced and bind mounts fail: {bound.stderr!r}")
        undo.append(
            lambda: subprocess.run(["umount", "-l", str(path)], capture_output=True, check=True)
        )
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, check=False
        )
        if remount.returncode != 0 or _can_create_in(path):
            pytest.skip("cannot make a read-only bind mount here")

    yield make
    for step in reversed(undo):
        step()


def test_persist_into_a_read_only_location_changes_nothing(
    store: BackingStore[Any],
    pool: FBPool[Any],
    counting: PersistCounting,
    persist_dir: Path,
    make_read_only: Callable[[Path], None],
) -> None:
    """A location that cannot be written raises an OSError naming it, and nothing changes."""
    make_read_only(persist_dir)
    tracked = store.track_path(persist_dir)
    handle = pool.insert("x")
    with pytest.raises(OSError, match=str(persist_dir)) as info:
        handle.persist(tracked)
    assert info.value.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    assert listing(persist_dir) == {}
    assert tracked.keys() == frozenset()
    assert tracked.unsynced == 0
    assert store._refcount(handle.key) == 1  # persist gave its reference back
    assert value_of(handle) == "x"


def test_persist_into_a_location_made_read_only_later_changes_nothing(
    store: BackingStore[Any],
    pool: FBPool[Any],
    tracked: TrackedPath,
    counting: PersistCounting,
    persist_dir: Path,
    make_read_only: Callable[[Path], None],
) -> None:
    """Once fb's location turned read-only, persist raises and the blobs there stay as they are."""
    kept = pool.insert("kept").persist(tracked)
    store.fsync(tracked)
    make_read_only(persist_dir)
    before = listing(persist_dir)
    handle = pool.insert("refused")
    with pytest.raises(OSError, match=str(persist_dir)):
        handle.persist(tracked)
    with pytest.raises(OSError, match=str(persist_dir)):
        store.delete_persisted(tracked, kept)
    assert listing(persist_dir) == before
    assert tracked.keys() == {kept}
    assert tracked.unsynced == 0
    assert store._refcount(handle.key) == 1
    assert counting.blob_path(handle.key).exists()


def test_persist_into_a_removed_location_raises_file_not_found(
    store: BackingStore[Any], pool: FBPool[Any], tmp_path: Path
) -> None:
    """A location removed after it was tracked makes persist raise FileNotFoundError naming it."""
    location = tmp_path / "vanishing"
    location.mkdir()
    tracked = store.track_path(location)
    location.rmdir()
    with pytest.raises(FileNotFoundError, match=str(location)):
        pool.insert("x").persist(tracked)
    assert not location.exists()


def test_persist_into_a_claimed_location_removed_since_raises_file_not_found(
    store: BackingStore[Any], pool: FBPool[Any], tracked: TrackedPath, persist_dir: Path
) -> None:
    """A location removed after this store persisted there is not silently recreated."""
    pool.insert("first").persist(tracked)
    shutil.rmtree(persist_dir)
    with pytest.raises(FileNotFoundError, match=str(persist_dir)):
        pool.insert("second").persist(tracked)
    assert not persist_dir.exists()
