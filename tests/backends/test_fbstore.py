"""FBStore on a local directory: layout, atomic writes, integrity, ownership, sweeping.

These tests look at blob files, so their stores keep every blob in a file of its own
(``segment_max=0``); small blobs in segment files are tests/backends/test_segments.py's.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

import pytest
import xxhash

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import BlobNotFoundError, CodecError, CorruptBlobError, StoreLockedError
from tests.conftest import TIMEOUT, CountingStore


class JsonCodec:
    """A second real codec, so blobs of two codecs can meet."""

    @property
    def name(self) -> str:
        return "test-json"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        file.write(json.dumps(value).encode())

    def load(self, file: IO[bytes]) -> Any:
        return json.loads(file.read())


class Probe:
    """A value that looks at its shard directory while it is being pickled."""

    def __init__(self, shard: Path, final: Path) -> None:
        self.shard = shard
        self.final = final
        self.seen: list[str] = []
        self.final_existed: bool | None = None

    def __getstate__(self) -> dict[str, Any]:
        self.seen = sorted(os.listdir(self.shard))
        self.final_existed = self.final.exists()
        return {"shard": self.shard, "final": self.final}


@pytest.fixture(name="backend")
def fixture_backend(cache_dir: Path) -> Iterator[FBStore[Any]]:
    backend: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    yield backend
    backend.close()


def shard_files(root: Path) -> list[Path]:
    """Every file inside the shard directories of ``root``."""
    return sorted(path for path in root.glob("??/*") if path.is_file())


# -- layout and writes ---------------------------------------------------------------------


def test_layout_is_root_shard_key(backend: FBStore[Any], cache_dir: Path) -> None:
    """A blob lives at root/<first two hex digits>/<32 hex digits of the key>."""
    key = uuid4()
    size = backend.store(key, {"a": 1})
    path = cache_dir / key.hex[:2] / key.hex
    assert backend.blob_path(key) == str(path)
    assert path.is_file()
    assert path.stat().st_size == size
    assert path.read_bytes().startswith(b"\x93FBB")
    assert shard_files(cache_dir) == [path]
    assert backend.exists(key)
    assert backend.load(key) == {"a": 1}


def test_directories_are_private(backend: FBStore[Any], cache_dir: Path) -> None:
    """The root is created with mode 0700, and so is each shard when its first blob lands."""
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert not [p for p in cache_dir.iterdir() if p.is_dir()]
    keys = [uuid4() for _ in range(20)]
    for key in keys:
        backend.store(key, "v")
    shards = sorted(p.name for p in cache_dir.iterdir() if p.is_dir())
    assert shards == sorted({key.hex[:2] for key in keys})
    for shard in shards:
        assert stat.S_IMODE((cache_dir / shard).stat().st_mode) == 0o700, shard


def test_lock_file_names_the_owner(backend: FBStore[Any], cache_dir: Path) -> None:
    """The store holds root/.fb-lock, which records the owner's pid."""
    lock = cache_dir / ".fb-lock"
    assert lock.is_file()
    assert lock.read_text().strip() == str(os.getpid())


def test_blob_appears_only_complete(backend: FBStore[Any], cache_dir: Path) -> None:
    """While a blob is encoded it exists only under a temporary name; then it is renamed."""
    key = uuid4()
    shard = cache_dir / key.hex[:2]
    final = shard / key.hex
    probe = Probe(shard, final)
    backend.store(key, probe)
    assert probe.final_existed is False
    assert len(probe.seen) == 1
    assert probe.seen[0].startswith(f".{key.hex}.")
    assert probe.seen[0].endswith(".tmp")
    assert sorted(os.listdir(shard)) == [key.hex]


def test_failed_encode_leaves_nothing(backend: FBStore[Any], cache_dir: Path) -> None:
    """A value the codec cannot encode raises CodecError and leaves no file behind."""
    key = uuid4()
    with pytest.raises(CodecError) as info:
        backend.store(key, threading.Lock())
    assert info.value.codec == "pickle"
    assert info.value.key == key
    assert key.hex in str(info.value)
    assert shard_files(cache_dir) == []
    assert not backend.exists(key)


def test_missing_blob_raises_blob_not_found(backend: FBStore[Any]) -> None:
    """Loading a key with no blob raises BlobNotFoundError, a FileNotFoundError with the path."""
    key = uuid4()
    with pytest.raises(BlobNotFoundError) as info:
        backend.load(key)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.filename == backend.blob_path(key)
    assert key.hex in str(info.value)


def test_delete_removes_and_tolerates_missing(backend: FBStore[Any]) -> None:
    """delete removes a blob; deleting a missing blob is not an error."""
    key = uuid4()
    backend.store(key, 1)
    backend.delete(key)
    assert not backend.exists(key)
    backend.delete(key)
    backend.delete(uuid4())


def test_accepts_a_codec_name_and_a_plain_path(cache_dir: Path) -> None:
    """FBStore takes a codec name and a str path as well as objects."""
    backend: FBStore[Any] = FBStore("pickle", str(cache_dir), segment_max=0)
    try:
        assert backend.codec.name == "pickle"
        assert backend.path.root == str(cache_dir)
        key = uuid4()
        backend.store(key, "x")
        assert backend.load(key) == "x"
    finally:
        backend.close()


# -- integrity -------------------------------------------------------------------------------


def corrupt(path: Path, offset: int) -> None:
    """Flip every bit of the byte at ``offset`` (negative: from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    ["payload", "magic", "trailer", "padded", "cut_trailer", "cut_header", "empty"],
)
def test_damaged_blob_raises_corrupt_blob_error(backend: FBStore[Any], damage: str) -> None:
    """An altered, truncated or padded blob raises CorruptBlobError naming key and path."""
    key = uuid4()
    backend.store(key, bytes(1000))
    path = Path(backend.blob_path(key))
    size = path.stat().st_size
    if damage == "payload":
        corrupt(path, size // 2)
    elif damage == "magic":
        corrupt(path, 0)
    elif damage == "trailer":
        corrupt(path, -1)
    elif damage == "padded":
        path.write_bytes(path.read_bytes() + b"\0")
    elif damage == "cut_trailer":
        os.truncate(path, size - 5)
    elif damage == "cut_header":
        os.truncate(path, 3)
    else:
        os.truncate(path, 0)
    with pytest.raises(CorruptBlobError) as info:
        backend.load(key)
    assert info.value.key == key
    assert info.value.path == str(path)
    assert key.hex in str(info.value)
    assert str(path) in str(info.value)


HEADER_FIXED = 8
"""Bytes before the codec name in a blob header: magic, version, flags, name length."""


def store_sample(backend: FBStore[Any]) -> UUID:
    """Store the small value the damage tests use; return its key."""
    key = uuid4()
    backend.store(key, {"a": [1, 2, 3], "b": "text"})
    return key


def flip_each_bit_and_load(backend: FBStore[Any], offsets: range) -> dict[int, str]:
    """Flip the lowest bit of each byte at ``offsets`` in turn; return what each load raised."""
    key = store_sample(backend)
    path = Path(backend.blob_path(key))
    original = path.read_bytes()
    outcome: dict[int, str] = {}
    for offset in offsets:
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            backend.load(key)
        except CorruptBlobError as exc:
            named = (exc.key, exc.path) == (key, str(path))
            outcome[offset] = "corrupt" if named else "corrupt, unnamed"
        except Exception as exc:
            outcome[offset] = type(exc).__name__
        else:
            outcome[offset] = "garbage"
    return outcome


def test_every_truncation_is_detected(backend: FBStore[Any]) -> None:
    """A blob cut at any length raises CorruptBlobError."""
    key = store_sample(backend)
    path = Path(backend.blob_path(key))
    original = path.read_bytes()
    for length in range(len(original)):
        path.write_bytes(original[:length])
        with pytest.raises(CorruptBlobError):
            backend.load(key)


def test_every_bit_flip_outside_codec_name_is_detected(backend: FBStore[Any]) -> None:
    """One flipped bit anywhere in the fixed header, payload or trailer raises CorruptBlobError."""
    size = Path(backend.blob_path(store_sample(backend))).stat().st_size
    name_end = HEADER_FIXED + len("pickle")
    for part in (range(HEADER_FIXED), range(name_end, size)):
        outcome = flip_each_bit_and_load(backend, part)
        assert set(outcome) == set(part)
        assert set(outcome.values()) == {"corrupt"}, outcome


def test_bit_flip_in_codec_name_is_detected(backend: FBStore[Any]) -> None:
    """One flipped bit in the header's codec name raises CorruptBlobError, not CodecError."""
    outcome = flip_each_bit_and_load(backend, range(HEADER_FIXED, HEADER_FIXED + len("pickle")))
    assert set(outcome.values()) == {"corrupt"}, outcome


def crc32_blob(codec: str, payload: bytes) -> bytes:
    """A blob as earlier builds wrote it: flags 0, a CRC-32 of header and payload in the trailer."""
    name = codec.encode()
    header = struct.pack("<4sBBH", b"\x93FBB", 1, 0, len(name)) + name
    crc = zlib.crc32(payload, zlib.crc32(header))
    return header + payload + struct.pack("<QI4s", len(payload), crc, b"\x93FBE")


def test_blobs_with_a_crc32_trailer_still_load(backend: FBStore[Any]) -> None:
    """fb writes XXH3-64 checksums but still reads, and checks, CRC-32 blobs of earlier builds."""
    key = uuid4()
    backend.store(key, "new")
    path = Path(backend.blob_path(key))
    value = {"a": [1, 2, 3], "b": "text"}
    for payload in (pickle.dumps(value), pickle.dumps(bytes(2 << 20))):  # read whole; streamed
        blob = crc32_blob("pickle", payload)
        path.write_bytes(blob)
        assert backend.load(key) == pickle.loads(payload)
        damaged = bytearray(blob)
        damaged[len(blob) // 2] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptBlobError, match="checksum mismatch"):
            backend.load(key)


def test_new_blobs_carry_an_xxh3_checksum(backend: FBStore[Any]) -> None:
    """The header's flag bit 1 says XXH3-64, and the trailer holds that hash of header+payload."""
    key = uuid4()
    backend.store(key, b"value")
    blob = Path(backend.blob_path(key)).read_bytes()
    assert blob[5] == 0x02
    length, digest, magic = struct.unpack("<QQ4s", blob[-20:])
    assert magic == b"\x93FBE"
    assert digest == xxhash.xxh3_64_intdigest(blob[: len(blob) - 20])
    assert length == len(blob) - 20 - HEADER_FIXED - len("pickle")


def test_corrupt_blob_through_the_pool(store: BackingStore[Any], counting: CountingStore) -> None:
    """Loading a handle whose blob was altered raises CorruptBlobError every time, no garbage."""
    pool: FBPool[bytes] = FBPool(store, max_items=1)
    first = pool.insert(bytes(1000))
    second = pool.insert(b"other")
    store.finished()
    path = counting.blob_path(first.key)
    corrupt(path, path.stat().st_size // 2)
    for _ in range(2):
        with pytest.raises(CorruptBlobError) as info:
            first.load()
        assert info.value.key == first.key
        assert info.value.path == str(path)
    assert not first.resident
    assert pool.statistics().load_errors == 2
    with second.load() as value:  # the failed loads moved first ahead and pushed second out
        assert value == b"other"
    store.finished()


def test_codec_mismatch_names_both_codecs(cache_dir: Path) -> None:
    """A blob written by one codec and read by another raises CodecError naming both."""
    key = uuid4()
    writer: FBStore[Any] = FBStore(JsonCodec(), PreparedPath(cache_dir), segment_max=0)
    writer.store(key, {"a": 1})
    assert writer.load(key) == {"a": 1}
    writer.close()
    reader: FBStore[Any] = FBStore(
        PickleCodec(), PreparedPath(cache_dir), sweep=False, segment_max=0
    )
    try:
        with pytest.raises(CodecError) as info:
            reader.load(key)
    finally:
        reader.close()
    message = str(info.value)
    assert "'test-json'" in message
    assert "'pickle'" in message
    assert info.value.key == key
    assert info.value.path == reader.blob_path(key)


# -- ownership -------------------------------------------------------------------------------


def test_second_owner_in_process_is_refused(backend: FBStore[Any], cache_dir: Path) -> None:
    """A second store on a directory a live store owns raises StoreLockedError."""
    with pytest.raises(StoreLockedError, match=r"\.fb-lock") as info:
        FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    assert isinstance(info.value, RuntimeError)
    backend.close()
    backend.close()  # idempotent
    again: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    again.close()


def test_second_owner_in_another_process_is_refused(cache_dir: Path) -> None:
    """The lock works across processes and goes with the process that held it."""
    child_code = textwrap.dedent(
        """
        import sys
        from fb.backends import FBStore
        store = FBStore("pickle", sys.argv[1])
        print("ready", flush=True)
        sys.stdin.read()
        store.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(cache_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError):
            FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    finally:
        _, stderr = child.communicate(input="", timeout=TIMEOUT)
    assert child.returncode == 0, stderr
    backend: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    backend.close()


# -- sweeping --------------------------------------------------------------------------------


def test_sweep_removes_only_fb_leftovers(cache_dir: Path) -> None:
    """Opening a store deletes leftover blobs and temporary files, and nothing else."""
    shard = cache_dir / "ab"
    shard.mkdir(parents=True)
    leftover_blob = shard / ("ab" + "0" * 30)
    leftover_temp = shard / (".ab" + "1" * 30 + ".deadbeef.tmp")
    foreign = [
        shard / "notes.txt",
        shard / ("AB" + "0" * 30),  # upper case: not a name fb writes
        shard / ("ab" + "0" * 29),  # 31 digits
        shard / ("ab" + "0" * 30 + ".bak"),
        shard / (".ab" + "1" * 30 + ".tmp"),  # no random part
        cache_dir / ("ab" + "0" * 30),  # a blob name outside any shard
        cache_dir / "README",
        cache_dir / "zz" / ("ab" + "0" * 30),  # not a shard directory
    ]
    for path in [leftover_blob, leftover_temp, *foreign]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    # The earlier owner left its lock file, as every store does: without one, a live store
    # may have lost it, and nothing is swept (tests/test_hardening.py).
    (cache_dir / ".fb-lock").write_text("4242\n")
    backend: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    try:
        assert not leftover_blob.exists()
        assert not leftover_temp.exists()
        for path in foreign:
            assert path.read_bytes() == b"x", path
        assert backend.sweep() == 0
    finally:
        backend.close()


def test_sweep_leaves_foreign_directories(cache_dir: Path) -> None:
    """A directory that happens to have a blob-like name in a shard is left alone."""
    foreign = cache_dir / "ab" / ("ab" + "0" * 30)
    foreign.mkdir(parents=True)
    (foreign / "data").write_bytes(b"x")
    backend: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    try:
        assert (foreign / "data").read_bytes() == b"x"
    finally:
        backend.close()


def test_sweep_false_keeps_leftovers(cache_dir: Path) -> None:
    """With sweep=False an opening store leaves an earlier owner's blobs in place."""
    key = uuid4()
    first: FBStore[Any] = FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0)
    first.store(key, "kept")
    first.close()
    second: FBStore[Any] = FBStore(
        PickleCodec(), PreparedPath(cache_dir), sweep=False, segment_max=0
    )
    try:
        assert second.load(key) == "kept"
        assert second.sweep() == 1
        assert not second.exists(key)
    finally:
        second.close()


# -- values the codec cannot encode -------------------------------------------------------------


def test_unpicklable_value_stays_in_memory(
    store: BackingStore[Any], counting: CountingStore
) -> None:
    """An eviction write that cannot encode is reported by finished(); the value stays."""
    pool: FBPool[Any] = FBPool(store, max_items=1)
    lock = threading.Lock()
    bad = pool.insert(lock)
    good = pool.insert("ok")
    with pytest.raises(CodecError) as info:
        store.finished()
    assert info.value.codec == "pickle"
    assert info.value.key == bad.key
    assert bad.resident
    assert good.resident
    with bad.load() as value:
        assert value is lock
    with pytest.raises(CodecError):
        bad.write_now()
    assert bad.resident
    with bad.load() as value:
        assert value is lock
    store.finished()  # write_now's error was raised to its caller, not collected
    stats = pool.statistics()
    assert stats.write_errors == 2
    assert stats.pending_writes == 0
    assert not any(
        path.name.startswith((bad.key.hex, "." + bad.key.hex))
        for path in counting.blob_path(bad.key).parent.iterdir()
    )


def key_of(path: Path) -> UUID:
    """The key a blob file's name spells."""
    return UUID(hex=path.name)


def test_pool_blobs_are_deleted_after_close(
    store: BackingStore[Any], counting: CountingStore, cache_dir: Path
) -> None:
    """Every blob a pool wrote is gone once its handles are closed and work is drained."""
    pool: FBPool[int] = FBPool(store, max_items=2)
    handles = [pool.insert(i) for i in range(6)]
    store.finished()
    assert {key_of(p) for p in shard_files(cache_dir)} == {h.key for h in handles[:4]}
    pool.close()
    store.finished()
    assert shard_files(cache_dir) == []
