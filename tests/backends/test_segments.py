"""Small blobs in segment files: round trips, slots, churn, damage, persist, sweep, fork."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from fb import BackingStore, FBPool
from fb._inspect import check_blob, list_location
from fb.backends import FBStore, PreparedPath
from fb.backends._segments import SEGMENT_MAX, SLOT_HEAD, parse_slot_head, slot_size
from fb.codecs import PickleCodec
from fb.exceptions import BlobNotFoundError, CorruptBlobError
from tests.conftest import TIMEOUT


@pytest.fixture(name="backend")
def fixture_backend(cache_dir: Path) -> Iterator[FBStore[Any]]:
    backend: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir))
    yield backend
    backend.close()


def segment_files(root: Path) -> list[Path]:
    return sorted(root.glob("seg-*.fbseg"))


def shard_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("??/*") if p.is_file())


def test_small_blobs_round_trip_in_segments_and_large_ones_in_files(
    backend: FBStore[Any], cache_dir: Path
) -> None:
    """Blobs below the threshold go to segment files, above it to files; all load back."""
    sizes = [0, 1, 1000, 4096, 60_000, SEGMENT_MAX - 200, SEGMENT_MAX, 2 * SEGMENT_MAX]
    keys = {}
    for size in sizes:
        key = uuid4()
        backend.store(key, os.urandom(size))
        keys[key] = size
    for key, size in keys.items():
        value = backend.load(key)
        assert len(value) == size
    small = [k for k, size in keys.items() if backend.blob_slot(k) is not None]
    large = [k for k, size in keys.items() if backend.blob_slot(k) is None]
    assert {keys[k] for k in small} >= {0, 1, 1000, 4096, 60_000}
    assert {keys[k] for k in large} == {SEGMENT_MAX, 2 * SEGMENT_MAX}
    assert {p.name for p in shard_files(cache_dir)} == {k.hex for k in large}
    assert segment_files(cache_dir)
    assert all(backend.exists(k) for k in keys)


def test_segment_max_zero_keeps_every_blob_in_a_file(cache_dir: Path) -> None:
    """With ``segment_max=0`` every blob is a file of its own, as before segments."""
    backend: FBStore[Any] = FBStore(PickleCodec(), cache_dir, segment_max=0)
    try:
        key = uuid4()
        backend.store(key, b"small")
        assert backend.blob_slot(key) is None
        assert Path(backend.blob_path(key)).is_file()
        assert not segment_files(cache_dir)
    finally:
        backend.close()


@pytest.mark.parametrize("bad", [-1, "1", 1.5, True])
def test_a_bad_segment_max_is_refused(cache_dir: Path, bad: Any) -> None:
    """A negative or non-int ``segment_max`` raises TypeError/ValueError naming it."""
    with pytest.raises((TypeError, ValueError), match="segment_max"):
        FBStore(PickleCodec(), cache_dir, segment_max=bad)


def test_a_slot_holds_the_head_then_the_blob_as_a_file_would(cache_dir: Path) -> None:
    """The framed bytes in a slot are exactly what a file-per-blob store writes."""
    value = {"a": os.urandom(3000)}
    key = uuid4()
    seg: FBStore[Any] = FBStore(PickleCodec(), cache_dir / "seg")
    files: FBStore[Any] = FBStore(PickleCodec(), cache_dir / "files", segment_max=0)
    try:
        size = seg.store(key, value)
        assert files.store(key, value) == size
        slot = seg.blob_slot(key)
        assert slot is not None
        path, offset, length = slot
        data = Path(path).read_bytes()
        assert parse_slot_head(data[offset - SLOT_HEAD.size : offset]) == (key, length)
        assert data[offset : offset + length] == Path(files.blob_path(key)).read_bytes()
    finally:
        seg.close()
        files.close()


def test_concurrent_stores_loads_and_deletes_from_threads(backend: FBStore[Any]) -> None:
    """Threads writing, reading and deleting small blobs at once each see their own bytes."""

    def work(seed: int) -> None:
        rng = random.Random(seed)
        mine: dict[UUID, bytes] = {}
        for _ in range(150):
            if mine and rng.random() < 0.3:
                key = rng.choice(list(mine))
                backend.delete(key)
                del mine[key]
                with pytest.raises(BlobNotFoundError):
                    backend.load(key)
            else:
                key, value = uuid4(), os.urandom(rng.choice([100, 3000, 9000, 70_000]))
                backend.store(key, value)
                mine[key] = value
            for key, value in rng.sample(list(mine.items()), min(3, len(mine))):
                assert backend.load(key) == value

    with ThreadPoolExecutor(6) as executor:
        for future in [executor.submit(work, seed) for seed in range(6)]:
            future.result(timeout=TIMEOUT)


def test_freed_slots_are_reused_and_segments_stay_bounded_under_churn(
    backend: FBStore[Any],
) -> None:
    """Ten rounds of delete-half/insert-half leave the segments at the peak of live data."""
    segments = backend._segments
    assert segments is not None
    live = []
    for _ in range(200):
        key = uuid4()
        backend.store(key, os.urandom(6000))
        live.append(key)
    peak = segments.disk_bytes()
    rng = random.Random(7)
    for _ in range(10):
        rng.shuffle(live)
        for key in live[:100]:
            backend.delete(key)
        live = live[100:]
        while len(live) < 200:
            key = uuid4()
            backend.store(key, os.urandom(6000))
            live.append(key)
        assert segments.disk_bytes() == peak
    for key in live:
        assert len(backend.load(key)) == 6000


def _damage(backend: FBStore[Any], key: UUID, at: int) -> str:
    slot = backend.blob_slot(key)
    assert slot is not None
    path, offset, _ = slot
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset + at)
        os.pwrite(fd, bytes([byte[0] ^ 0x40]), offset + at)
    finally:
        os.close(fd)
    return path


@pytest.mark.parametrize("at", [0, 20, 500, -1])
def test_a_damaged_slot_raises_corrupt_blob_error_naming_key_and_path(
    backend: FBStore[Any], at: int
) -> None:
    """A flipped byte in a slot's blob fails its check, naming the key and the segment."""
    key = uuid4()
    size = backend.store(key, os.urandom(1000))
    path = _damage(backend, key, at % size)
    with pytest.raises(CorruptBlobError) as info:
        backend.load(key)
    assert key.hex in str(info.value)
    assert path in str(info.value)


def test_a_damaged_slot_head_raises_corrupt_blob_error(backend: FBStore[Any]) -> None:
    """A slot head whose key was altered is damage, never another key's blob."""
    key = uuid4()
    backend.store(key, b"x" * 100)
    _damage(backend, key, -SLOT_HEAD.size + 10)
    with pytest.raises(CorruptBlobError, match=key.hex):
        backend.load(key)


def test_a_freed_slot_never_loads_and_its_head_is_zeroed(backend: FBStore[Any]) -> None:
    """After delete the slot's head is zero and the key is gone, even once the slot is reused."""
    key = uuid4()
    backend.store(key, b"a" * 2000)
    slot = backend.blob_slot(key)
    assert slot is not None
    path, offset, _ = slot
    backend.delete(key)
    head = Path(path).read_bytes()[offset - SLOT_HEAD.size : offset]
    assert head == bytes(SLOT_HEAD.size)
    assert parse_slot_head(head) is None
    with pytest.raises(BlobNotFoundError):
        backend.load(key)
    other = uuid4()
    backend.store(other, b"b" * 2000)
    assert backend.blob_slot(other) == (path, offset, slot[2])  # the same slot, reused
    with pytest.raises(BlobNotFoundError):
        backend.load(key)
    assert not backend.exists(key)
    assert backend.load(other) == b"b" * 2000


def test_a_slot_reused_under_a_reader_is_never_decoded_as_its_old_key(
    backend: FBStore[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that races the slot's reuse by another key gives BlobNotFoundError."""
    segments = backend._segments
    assert segments is not None
    key = uuid4()
    backend.store(key, b"a" * 2000)
    stale = segments._find(key)
    backend.delete(key)
    backend.store(uuid4(), b"b" * 2000)
    # The reader looked the key up before the delete and reads the slot after the reuse.
    calls = iter([stale])
    real = segments._find
    monkeypatch.setattr(segments, "_find", lambda k: next(calls, None) or real(k))
    with pytest.raises(BlobNotFoundError):
        backend.load(key)


def test_persist_of_a_small_blob_is_one_file_readable_through_register(
    tmp_path: Path, persist_dir: Path
) -> None:
    """A persisted small blob is a file of its own, byte for byte what a file store writes."""
    value = {"n": 42, "data": os.urandom(5000)}
    cache = tmp_path / "cache-a"
    store = BackingStore(FBStore(PickleCodec(), PreparedPath(cache)))
    pool: FBPool[Any] = FBPool(store, max_items=1)
    tracked = store.track_path(PreparedPath(persist_dir))
    item = pool.insert(value)
    item.write_now()
    assert store.strategy.blob_slot(item.key) is not None  # type: ignore[attr-defined]
    item.persist(tracked)
    store.fsync(tracked)
    key = item.key
    persisted = persist_dir / key.hex[:2] / key.hex
    files: FBStore[Any] = FBStore(PickleCodec(), tmp_path / "files", segment_max=0)
    files.store(key, value)
    assert persisted.read_bytes() == Path(files.blob_path(key)).read_bytes()
    files.close()
    store.finished()
    store.close()
    assert not segment_files(cache)

    fresh = BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "cache-b")))
    pool2: FBPool[Any] = FBPool(fresh, max_items=1)
    again = pool2.register(fresh.track_path(PreparedPath(persist_dir)), key)
    assert again is not None
    with again.load() as loaded:
        assert loaded == value
    pool2.close()
    fresh.close()


def test_persist_copies_by_user_space_where_copy_file_range_is_missing(
    backend: FBStore[Any], persist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``os.copy_file_range`` (ENOSYS) persist falls back to pread/pwrite."""

    def missing(*args: Any) -> int:
        raise OSError(38, "Function not implemented")  # ENOSYS

    monkeypatch.setattr(os, "copy_file_range", missing)
    key = uuid4()
    backend.store(key, b"q" * 7000)
    backend.persist(key, PreparedPath(persist_dir))
    copy: FBStore[Any] = FBStore(PickleCodec(), persist_dir.parent / "other", segment_max=0)
    try:
        assert copy.register(key, PreparedPath(persist_dir))
        assert copy.load(key) == b"q" * 7000
    finally:
        copy.close()


def test_register_of_a_key_already_in_a_segment_places_nothing(
    backend: FBStore[Any], persist_dir: Path, cache_dir: Path
) -> None:
    """Registering a key the cache holds in a segment keeps it there: no second copy."""
    key = uuid4()
    backend.store(key, b"r" * 300)
    backend.persist(key, PreparedPath(persist_dir))
    assert backend.register(key, PreparedPath(persist_dir))
    assert not shard_files(cache_dir)
    backend.delete(key)
    assert not backend.exists(key)


def test_sweep_at_open_removes_leftover_segments_but_no_link(tmp_path: Path) -> None:
    """Segment files of an earlier owner go at open; a link with a segment's name stays."""
    cache = tmp_path / "cache"
    first: FBStore[Any] = FBStore(PickleCodec(), cache)
    first.store(uuid4(), b"left behind")
    left = segment_files(cache)
    assert left
    first._segments = None  # as if the process died: nothing closes its segments
    first.close()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (cache / "seg-1-1024.fbseg").symlink_to(victim)
    second: FBStore[Any] = FBStore(PickleCodec(), cache)
    try:
        assert [p.name for p in segment_files(cache)] == ["seg-1-1024.fbseg"]
        assert victim.read_bytes() == b"keep me"
    finally:
        second.close()


def test_close_removes_the_segment_files(cache_dir: Path) -> None:
    """Closing a store deletes its segment files: nothing of its blobs is left."""
    store = BackingStore(FBStore(PickleCodec(), PreparedPath(cache_dir)))
    pool: FBPool[Any] = FBPool(store, max_items=1)
    handles = [pool.insert(os.urandom(500)) for _ in range(20)]
    store.finished()
    assert segment_files(cache_dir)
    store.close()
    assert not segment_files(cache_dir)
    assert not shard_files(cache_dir)
    del handles


def test_a_planted_link_with_a_segment_name_is_never_followed(tmp_path: Path) -> None:
    """A link named as this process's next segment is refused: blobs go to files instead."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.mkfifo(cache / f"seg-{os.getpid()}-2560.fbseg")
    (cache / f"seg-{os.getpid()}-1536.fbseg").symlink_to(victim)
    backend: FBStore[Any] = FBStore(PickleCodec(), cache)
    try:
        keys = [uuid4(), uuid4()]
        backend.store(keys[0], b"x" * 100)  # a slot of 1.5 KiB: the link's name
        backend.store(keys[1], b"x" * 1500)  # a slot of 2.5 KiB: the FIFO's name
        assert [backend.blob_slot(k) for k in keys] == [None, None]
        assert [backend.load(k) for k in keys] == [b"x" * 100, b"x" * 1500]
        assert victim.read_bytes() == b"keep me"
    finally:
        backend.close()
    assert (cache / f"seg-{os.getpid()}-1536.fbseg").is_symlink()


def test_segment_files_are_private(backend: FBStore[Any], cache_dir: Path) -> None:
    """Segment files are created 0600."""
    backend.store(uuid4(), b"private")
    for path in segment_files(cache_dir):
        assert path.stat().st_mode & 0o777 == 0o600


def test_slot_sizes_fit_with_at_most_a_quarter_waste_and_round_values_fit_their_class() -> None:
    """Each size fits its slot, a slot wastes at most a quarter above 4 KiB, and a round
    value with its framing (64 KiB of bytes) takes the class of its size, not the next."""
    for size in range(1, SEGMENT_MAX, 997):
        slot = slot_size(size)
        assert slot >= size
        assert slot % 1024 == 512
        if size > 4096:
            assert slot - size <= slot // 4
    assert slot_size(SLOT_HEAD.size + (64 << 10) + 60) == (64 << 10) + 512


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_never_writes_frees_or_deletes_its_parents_segments(
    cache_dir: Path,
) -> None:
    """A child reads inherited slots, writes its own segment files, and leaves the parent's."""
    backend: FBStore[Any] = FBStore(PickleCodec(), cache_dir)
    key = uuid4()
    backend.store(key, b"parent" * 100)
    slot = backend.blob_slot(key)
    assert slot is not None
    before = {p.name: p.read_bytes() for p in segment_files(cache_dir)}
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert backend.load(key) == b"parent" * 100
            mine = uuid4()
            backend.store(mine, b"child" * 100)
            child_slot = backend.blob_slot(mine)
            assert child_slot is not None
            assert f"seg-{os.getpid()}-" in child_slot[0]
            assert backend.load(mine) == b"child" * 100
            backend.delete(mine)
            backend.delete(key)  # the parent's: forgotten here, never freed
            backend.close()
            assert not any(f"seg-{os.getpid()}-" in p.name for p in segment_files(cache_dir))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert {p.name: p.read_bytes() for p in segment_files(cache_dir)} == before
    assert backend.load(key) == b"parent" * 100
    backend.store(uuid4(), b"after" * 100)  # the parent's slots and free lists still work
    backend.close()
    assert not segment_files(cache_dir)


def test_persist_of_a_small_blob_is_one_in_kernel_copy_fsynced_before_its_rename(
    backend: FBStore[Any], persist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persist copies a slot with copy_file_range into a temporary file, fsyncs, renames."""
    events: list[str] = []
    real_copy, real_fsync, real_replace = os.copy_file_range, os.fsync, os.replace

    def copy(*args: Any) -> int:
        events.append("copy")
        return real_copy(*args)

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(f"replace {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "copy_file_range", copy)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    key = uuid4()
    backend.store(key, os.urandom(20_000))
    events.clear()
    backend.persist(key, PreparedPath(persist_dir))
    # (Before the copy, the first persist there fsyncs the location's marker.)
    assert events[events.index("copy") :] == ["copy", "fsync", f"replace {key.hex}"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_churning_a_pool_leaves_its_parents_slots_intact(
    cache_dir: Path,
) -> None:
    """A child that loads, inserts, evicts and closes leaves the parent's segment bytes be."""
    store = BackingStore(FBStore(PickleCodec(), PreparedPath(cache_dir)))
    pool: FBPool[Any] = FBPool(store, max_items=1)
    handles = [pool.insert(bytes([i]) * 3000) for i in range(6)]
    store.finished()
    before = {p.name: p.read_bytes() for p in segment_files(cache_dir)}
    assert before
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for index, handle in enumerate(handles):
                with handle.load() as value:
                    assert value == bytes([index]) * 3000
            for handle in handles[:3]:
                handle.close()  # the parent's blobs: never freed by the child
            mine = [pool.insert(b"child" * 600) for _ in range(4)]
            store.finished()
            assert any(f"seg-{os.getpid()}-" in p.name for p in segment_files(cache_dir))
            del mine
            pool.close()
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    after = {p.name: p.read_bytes() for p in segment_files(cache_dir)}
    assert after == before  # the child's own segment files went with its store
    for index, handle in enumerate(handles):
        with handle.load() as value:
            assert value == bytes([index]) * 3000
    pool.close()
    store.close()
    assert not segment_files(cache_dir)


def test_a_torn_slot_left_by_a_killed_writer_never_loads_and_is_swept(tmp_path: Path) -> None:
    """A writer killed mid-pwritev leaves a slot verify calls corrupt; the next store sweeps it."""
    cache = tmp_path / "cache"
    script = f"""
import os, signal, uuid
from fb.backends import FBStore
store = FBStore("pickle", {str(cache)!r})
store.store(uuid.uuid4(), b"whole" * 400)
real = os.pwritev
def torn(fd, parts, offset):
    data = b"".join(bytes(p) for p in parts)
    os.pwrite(fd, data[: len(data) // 2], offset)  # half the slot reaches the file
    os.kill(os.getpid(), signal.SIGKILL)
os.pwritev = torn
key = uuid.uuid4()
print(key.hex, flush=True)
store.store(key, b"torn" * 500)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == -9, done.stderr
    torn_key = done.stdout.split()[0]
    location = PreparedPath(cache)
    infos = {b.key: check_blob(location, b) for b in list_location(location).blobs}
    assert len(infos) == 2
    assert infos[torn_key].status == "corrupt"
    assert sum(info.ok for info in infos.values()) == 1
    fresh: FBStore[Any] = FBStore(PickleCodec(), cache)
    try:
        assert not segment_files(cache)
        with pytest.raises(BlobNotFoundError):
            fresh.load(UUID(hex=torn_key))
    finally:
        fresh.close()


def test_a_store_used_after_close_creates_no_segment_file(cache_dir: Path) -> None:
    """A write after close goes to a file of its own: no segment file outlives close()."""
    backend: FBStore[Any] = FBStore(PickleCodec(), cache_dir)
    backend.close()
    key = uuid4()
    backend.store(key, b"late")
    assert backend.blob_slot(key) is None
    assert not segment_files(cache_dir)


def test_signed_small_blobs_round_trip_and_refuse_tampering(cache_dir: Path) -> None:
    """A signing store keeps small blobs in segments, checks their HMAC, refuses an altered one."""
    backend: FBStore[Any] = FBStore(PickleCodec(), cache_dir, secret_key=b"k" * 32)
    try:
        keys = [uuid4(), uuid4()]
        for key in keys:
            backend.store(key, {"v": os.urandom(2000)})
        assert all(backend.blob_slot(k) is not None for k in keys)
        assert isinstance(backend.load(keys[0]), dict)
        _damage(backend, keys[1], 300)
        with pytest.raises(CorruptBlobError, match=keys[1].hex):
            backend.load(keys[1])
    finally:
        backend.close()
