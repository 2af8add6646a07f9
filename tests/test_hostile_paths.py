"""Hostile directories: planted links, FIFOs and foreign owners are refused, never followed.

Each test plants what another local user (or a stale run) could leave in a cache or persist
location and checks that fb neither follows it nor blocks on it, and that it raises a typed
error naming the path. Tests that hand a directory to another user need root (`os.chown`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore
from fb.exceptions import CorruptBlobError, ForeignLocationError, UnsafeLocationError
from tests.conftest import TIMEOUT

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown to another user"
)
OTHER_UID = 12345
"""A user ID that owns nothing on the test machine: "another local user"."""


def _shard(key: UUID) -> str:
    return key.hex[:2]


def _persisted(tmp_path: Path) -> tuple[Path, UUID, bytes]:
    """A persist location holding one fsynced blob; return it, the key and the blob's bytes."""
    persist = tmp_path / "persist"
    persist.mkdir()
    with BackingStore(FBStore[Any]("pickle", tmp_path / "maker")) as store:
        pool: FBPool[Any] = FBPool(store, max_items=1)
        tracked = store.track_path(persist)
        item = pool.insert("durable")
        item.persist(tracked)
        store.fsync(tracked)
        key = item.key
    blob = persist / _shard(key) / key.hex
    return persist, key, blob.read_bytes()


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    """A `.fb-lock` that is a symlink is never opened: the store refuses the directory."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / ".fb-lock").symlink_to(victim)
    with pytest.raises(UnsafeLocationError, match=r"\.fb-lock"):
        FBStore("pickle", cache)
    assert victim.read_text() == "precious"


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """A FIFO where the lock file goes is refused at once, without blocking."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.mkfifo(cache / ".fb-lock")
    with pytest.raises(UnsafeLocationError, match="not a regular file"):
        FBStore("pickle", cache)


def test_a_shard_linked_into_a_persist_location_is_neither_swept_nor_used(
    tmp_path: Path,
) -> None:
    """Opening a cache whose shard links elsewhere refuses it, and the linked blob survives."""
    persist, key, data = _persisted(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / _shard(key)).symlink_to(persist / _shard(key), target_is_directory=True)
    with pytest.raises(UnsafeLocationError, match=_shard(key)):
        FBStore("pickle", cache)
    assert (persist / _shard(key) / key.hex).read_bytes() == data


def test_a_shard_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A regular file with a shard's name is not a shard: the store refuses the directory."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "ab").write_text("not a directory")
    with pytest.raises(UnsafeLocationError, match="ab"):
        FBStore("pickle", cache)
    assert (cache / "ab").read_text() == "not a directory"


def test_a_linked_shard_of_a_persist_location_is_not_scanned_nor_deleted_through(
    tmp_path: Path,
) -> None:
    """A persist location's shard that links to another location is foreign: no key, no delete."""
    other, key, data = _persisted(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    with BackingStore(FBStore[Any]("pickle", tmp_path / "cache")) as store:
        pool: FBPool[Any] = FBPool(store, max_items=1)
        tracked = store.track_path(mine)
        pool.insert("mine").persist(tracked)
        (mine / _shard(key)).symlink_to(other / _shard(key), target_is_directory=True)
        tracked = store.track_path(mine)
        found = tracked.keys()
        assert key not in found
        assert _shard(key) in tracked.unknown
        store.delete_persisted(tracked, key)
    assert (other / _shard(key) / key.hex).read_bytes() == data


def test_persist_never_writes_through_a_linked_shard(tmp_path: Path) -> None:
    """A persist into a location whose shard is a link is refused; its target is untouched."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    persist = tmp_path / "persist"
    persist.mkdir()
    with BackingStore(FBStore[Any]("pickle", tmp_path / "cache")) as store:
        pool: FBPool[Any] = FBPool(store, max_items=1)
        tracked = store.track_path(persist)
        pool.insert("first").persist(tracked)  # the location is fb's now
        item = pool.insert("second")
        shard = persist / _shard(item.key)
        if shard.exists():
            shard.rmdir()
        shard.symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(UnsafeLocationError, match=_shard(item.key)):
            item.persist(tracked)
    assert list(elsewhere.iterdir()) == []


def _load_in_thread(fn: Any) -> Future[Any]:
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def _unblock(fifo: Path) -> None:
    """Open ``fifo`` for writing once, so a reader stuck in open() returns (test cleanup)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def test_a_fifo_where_a_blob_should_be_fails_the_load_without_blocking(tmp_path: Path) -> None:
    """Loading a key whose blob is a FIFO raises CorruptBlobError at once; only files are blobs."""
    # A blob file (no segments): the test puts a FIFO where that file should be.
    with BackingStore(FBStore[Any]("pickle", tmp_path / "cache", segment_max=0)) as store:
        pool: FBPool[Any] = FBPool(store, max_items=0)
        item = pool.insert("value")
        item.write_now()
        path = Path(store.strategy.blob_path(item.key))  # type: ignore[attr-defined]
        path.unlink()
        os.mkfifo(path, 0o600)
        future = _load_in_thread(lambda: store.strategy.load(item.key))
        try:
            with pytest.raises(CorruptBlobError, match="not a regular file"):
                future.result(TIMEOUT)
        finally:
            _unblock(path)
            path.unlink()
        item.close()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_register_refuses_a_persisted_name_that_is_not_a_regular_file(
    tmp_path: Path, kind: str
) -> None:
    """A link or FIFO under a key's name in a persist location is not registered, nor shown."""
    persist, key, _data = _persisted(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    blob = persist / _shard(key) / key.hex
    blob.unlink()
    if kind == "symlink":
        blob.symlink_to(secret)
    else:
        os.mkfifo(blob, 0o600)
    with BackingStore(FBStore[Any]("pickle", tmp_path / "cache")) as store:
        pool: FBPool[Any] = FBPool(store, max_items=1)
        tracked = store.track_path(persist)
        future = _load_in_thread(lambda: pool.register(tracked, key))
        try:
            with pytest.raises(CorruptBlobError, match="not a regular file") as info:
                future.result(TIMEOUT)
        finally:
            if kind == "fifo":
                _unblock(blob)
        assert "TOP-SECRET" not in str(info.value)
        assert not os.path.lexists(store.strategy.blob_path(key))  # type: ignore[attr-defined]


@needs_root
def test_a_cache_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    """A cache directory owned by another user is refused, naming the path and the owner."""
    cache = tmp_path / "spill"
    cache.mkdir(mode=0o700)
    os.chown(cache, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeLocationError, match=rf"{cache}.*{OTHER_UID}"):
        FBStore("pickle", cache)
    assert not (cache / ".fb-lock").exists()


def test_a_cache_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """A cache directory that group or others can write is refused, naming the path."""
    cache = tmp_path / "spill"
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(UnsafeLocationError, match=rf"{cache}.*writable"):
        FBStore("pickle", cache)
    assert not (cache / ".fb-lock").exists()


@needs_root
def test_a_cache_inside_a_directory_another_user_controls_is_refused(tmp_path: Path) -> None:
    """A parent another user owns and others can write (no sticky bit) is refused too.

    That user could swap the cache directory for a link; a sticky, root-owned parent such
    as /tmp is fine.
    """
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, OTHER_UID, OTHER_UID)
    shared.chmod(0o777)
    with pytest.raises(UnsafeLocationError, match=str(shared)):
        FBStore("pickle", shared / "spill")


def test_a_new_cache_directory_is_private(tmp_path: Path) -> None:
    """A cache directory fb creates, and each directory it creates on the way, is mode 0700."""
    cache = tmp_path / "a" / "b" / "cache"
    with BackingStore(FBStore[Any]("pickle", cache)):
        pass
    for path in (tmp_path / "a", tmp_path / "a" / "b", cache):
        assert path.stat().st_mode & 0o777 == 0o700


def test_the_planted_cross_user_lock_link_scenario_leaves_the_victim_file_intact(
    tmp_path: Path,
) -> None:
    """The whole attack: a world-writable `spill/` holding a lock link; nothing is destroyed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    spill = tmp_path / "spill"
    spill.mkdir()
    spill.chmod(0o777)
    (spill / ".fb-lock").symlink_to(victim)
    import fb

    with pytest.raises(UnsafeLocationError):
        fb.open_pool(spill, max_items=1)
    assert victim.read_bytes() == b"keep me"


def test_a_hard_linked_lock_file_is_refused(tmp_path: Path) -> None:
    """A lock file with a second name (a hard link to another file) is never truncated."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.link(victim, cache / ".fb-lock")
    with pytest.raises(UnsafeLocationError, match="2 names"):
        FBStore("pickle", cache)
    assert victim.read_text() == "precious"


def test_a_persist_location_is_refused_as_a_cache_directory(tmp_path: Path) -> None:
    """Opening a persist location as a cache raises instead of sweeping its persisted blobs."""
    persist, key, data = _persisted(tmp_path)
    with pytest.raises(ForeignLocationError, match="persist location"):
        FBStore("pickle", persist)
    assert (persist / _shard(key) / key.hex).read_bytes() == data


@pytest.mark.parametrize("command", ["gc", "inspect"])
def test_the_cli_refuses_a_lock_file_that_is_a_fifo_without_blocking(
    tmp_path: Path, command: str
) -> None:
    """`fb gc`/`fb inspect` on a directory whose lock file is a FIFO refuse it at once."""
    from tests.cli_helpers import fb

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.mkfifo(cache / ".fb-lock")
    done = fb(command, str(cache))
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not fb's lock file" in done.stderr
