"""fb._inspect: listings, blob checks, lock probes and clean-up plans, on real directories."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from uuid import UUID, uuid4

import attrs
import pytest

from fb import _gc, _inspect
from fb._blob import TRAILER
from fb._inspect import Listing, StoredFile
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import InvalidKeyError, StoreLockedError

SECRET = "correct horse battery staple 42"


class RawCodec:
    """A codec of its own name, so a location can hold blobs of two codecs."""

    name = "raw-test"

    def dump(self, value: bytes, file: IO[bytes]) -> None:
        file.write(value)

    def load(self, file: IO[bytes]) -> bytes:
        return file.read()


def write_blobs(root: Path, values: list[object], **kwargs: object) -> list[UUID]:
    """Write ``values`` as blobs through an FBStore on ``root`` and close it (blobs stay).

    Blob files (no segments, which a closing store deletes): the tests look at the files.
    """
    kwargs.setdefault("segment_max", 0)
    store: FBStore[object] = FBStore(PickleCodec(), PreparedPath(root), **kwargs)  # type: ignore[arg-type]
    keys = [uuid4() for _ in values]
    try:
        for key, value in zip(keys, values, strict=True):
            store.store(key, value)
    finally:
        store.close()
    return keys


def blob_file(root: Path, key: UUID) -> Path:
    return root / key.hex[:2] / key.hex


def stored(location: PreparedPath, key: UUID) -> StoredFile:
    found = _inspect.find_blob(location, key)
    assert found is not None
    return found


@pytest.fixture(name="cache")
def fixture_cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(name="keys")
def fixture_keys(cache: Path) -> list[UUID]:
    """Three blobs of 2000-odd bytes in a cache directory whose store is closed."""
    return write_blobs(cache, [os.urandom(2000) for _ in range(3)])


@pytest.fixture(name="live")
def fixture_live(cache: Path) -> Iterator[FBStore[object]]:
    """A live store that owns ``cache`` (it holds the lock) until the test ends."""
    store: FBStore[object] = FBStore(PickleCodec(), PreparedPath(cache), segment_max=0)
    yield store
    store.close()


def test_listing_sorts_fb_names_from_foreign_ones(cache: Path, keys: list[UUID]) -> None:
    """Blobs, temporary files, the lock and foreign names are told apart by name and place."""
    shard = keys[0].hex[:2]
    temp = cache / shard / f".{keys[0].hex}.0a1b2c3d.tmp"
    temp.write_bytes(b"partial")
    other = "ff" if shard != "ff" else "fe"
    (cache / other).mkdir(exist_ok=True)  # shards are made on first use
    (cache / other / keys[1].hex).write_bytes(b"misplaced")  # a blob name in the wrong shard
    (cache / shard / "notes.txt").write_text("mine")
    (cache / "README").write_text("mine")
    (cache / "data").mkdir()
    (cache / "data" / keys[2].hex).write_bytes(b"deep")
    (cache / shard / f"{keys[2].hex}.link").symlink_to(blob_file(cache, keys[2]))
    listing = _inspect.list_location(PreparedPath(cache))
    assert listing.kind == "cache"
    assert listing.lock_file
    assert not listing.marker
    assert sorted(blob.key for blob in listing.blobs) == sorted(key.hex for key in keys)
    assert [file.name for file in listing.temp_files] == [f"{shard}/{temp.name}"]
    assert listing.temp_files[0].key == keys[0].hex
    assert {file.name for file in listing.foreign} == {
        f"{other}/{keys[1].hex}",
        f"{shard}/notes.txt",
        "README",
        f"data/{keys[2].hex}",
        f"{shard}/{keys[2].hex}.link",
    }
    assert listing.blob_bytes == sum(blob_file(cache, key).stat().st_size for key in keys)
    assert listing.sessions == ()


def test_listing_names_open_pool_session_prefixes(tmp_path: Path) -> None:
    """Blobs under ``fb-<32 hex>/`` are foreign here, and their prefixes are named as sessions."""
    session = f"fb-{uuid4().hex}"
    write_blobs(tmp_path / session, [b"x"])
    (tmp_path / "fb-not-a-session").mkdir()
    (tmp_path / "fb-not-a-session" / "file").write_bytes(b"x")
    listing = _inspect.list_location(PreparedPath(tmp_path))
    assert listing.blobs == ()
    assert listing.sessions == (session,)


def test_listing_of_a_persist_location(tmp_path: Path) -> None:
    """A location with fb's marker is a persist location; a marker fb did not write is not."""
    root = tmp_path / "persist"
    root.mkdir()
    (root / ".fb-persist").write_bytes(b"fb persist location, format 1\n")
    assert _inspect.list_location(PreparedPath(root)).kind == "persist"
    (root / ".fb-persist").write_bytes(b"someone else's\n")
    listing = _inspect.list_location(PreparedPath(root))
    assert listing.kind == "unknown"
    assert [file.name for file in listing.foreign] == [".fb-persist"]


def test_listing_of_a_missing_location_raises(tmp_path: Path) -> None:
    """A location that does not exist raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _inspect.list_location(PreparedPath(tmp_path / "nowhere"))


def test_listing_of_a_regular_file_raises_not_a_directory(tmp_path: Path) -> None:
    """A location that is a file is named as not a directory, by listings, finds and locks."""
    regular = tmp_path / "data.bin"
    regular.write_bytes(b"x")
    location = PreparedPath(regular)
    with pytest.raises(NotADirectoryError, match=r"data\.bin"):
        _inspect.list_location(location)
    with pytest.raises(NotADirectoryError, match=r"data\.bin"):
        _inspect.find_blob(location, uuid4())
    with pytest.raises(NotADirectoryError, match=r"data\.bin"), _inspect.hold_lock(location):
        pass
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _inspect.find_blob(PreparedPath(tmp_path / "nowhere"), uuid4())


def test_listing_raises_on_a_directory_it_cannot_read(
    cache: Path, keys: list[UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard that cannot be read fails the listing instead of being skipped in silence."""
    shard = str(blob_file(cache, keys[0]).parent)
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.fspath(path) == shard:
            raise PermissionError(13, "Permission denied", shard)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError, match=keys[0].hex[:2]):
        _inspect.list_location(PreparedPath(cache))


def test_listing_on_an_fsspec_filesystem() -> None:
    """A memory:// location is listed through fsspec, with the same classification."""
    url = f"memory://fb-inspect-{uuid4().hex}"
    keys = write_blobs_fs(url, 2)
    location = PreparedPath(url)
    location.fs.pipe_file(f"{location.root}/stray.txt", b"x")
    try:
        listing = _inspect.list_location(location)
        assert not listing.local
        assert sorted(blob.key for blob in listing.blobs) == sorted(key.hex for key in keys)
        assert [file.name for file in listing.foreign] == ["stray.txt"]
        assert all(_inspect.check_blob(location, blob).ok for blob in listing.blobs)
    finally:
        location.fs.rm(location.root, recursive=True)


def write_blobs_fs(url: str, count: int) -> list[UUID]:
    store: FBStore[bytes] = FBStore(PickleCodec(), PreparedPath(url))
    keys = [uuid4() for _ in range(count)]
    try:
        for key in keys:
            store.store(key, b"v" * 100)
    finally:
        store.close()
    return keys


def test_header_of_a_sound_blob(cache: Path, keys: list[UUID]) -> None:
    """read_blob_header gives version, codec and the signed flag, and no trailer fields."""
    location = PreparedPath(cache)
    info = _inspect.read_blob_header(location, stored(location, keys[0]))
    assert (info.version, info.codec, info.signed, info.flags) == (1, "pickle", False, 0x02)
    assert info.ok
    assert info.payload_length is None
    assert info.checksum_ok is None


def test_check_of_a_sound_blob(cache: Path, keys: list[UUID]) -> None:
    """check_blob reads the trailer and the whole payload, whose checksum holds."""
    location = PreparedPath(cache)
    info = _inspect.check_blob(location, stored(location, keys[0]))
    assert info.ok
    assert info.checksum_ok is True
    assert info.signature_ok is None
    assert info.header_size is not None
    assert info.payload_length is not None
    assert info.size == info.header_size + info.payload_length + TRAILER.size
    assert info.checksum_algorithm == "xxh3-64"
    assert info.checksum is not None


def corrupt_flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda p: corrupt_flip(p, 1000), "checksum mismatch"),
        (lambda p: corrupt_flip(p, 0), "not an fb blob"),
        (lambda p: p.write_bytes(p.read_bytes()[:8] + b"q" + p.read_bytes()[9:]), "checksum"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1500]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:6]), "truncated"),
        (lambda p: p.write_bytes(b""), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes() + b"pad"), "truncated or damaged"),
    ],
    ids=[
        "flipped-payload",
        "bad-magic",
        "codec-name",
        "trailer-cut",
        "payload-cut",
        "header-cut",
        "empty",
        "padded",
    ],
)
def test_check_finds_each_kind_of_damage(
    cache: Path, keys: list[UUID], damage: object, error: str
) -> None:
    """Every damaged blob fails its check with an error that says what is wrong."""
    location = PreparedPath(cache)
    assert callable(damage)
    damage(blob_file(cache, keys[0]))
    info = _inspect.check_blob(location, stored(location, keys[0]))
    assert not info.ok
    assert info.error is not None
    assert error in info.error
    assert _inspect.check_blob(location, stored(location, keys[1])).ok


def test_check_of_signed_blobs(tmp_path: Path) -> None:
    """With the key signatures hold; another key or an unsigned blob fails; no key skips it."""
    signed_root, plain_root = tmp_path / "signed", tmp_path / "plain"
    (signed_key,) = write_blobs(signed_root, [b"payload" * 50], secret_key=SECRET)
    (plain_key,) = write_blobs(plain_root, [b"payload" * 50])
    signed_loc, plain_loc = PreparedPath(signed_root), PreparedPath(plain_root)
    good = _inspect.check_blob(signed_loc, stored(signed_loc, signed_key), secret=SECRET.encode())
    assert good.ok
    assert good.signed
    assert good.signature_ok is True
    unchecked = _inspect.check_blob(signed_loc, stored(signed_loc, signed_key))
    assert unchecked.ok
    assert unchecked.signature_ok is None
    wrong = _inspect.check_blob(
        signed_loc, stored(signed_loc, signed_key), secret=b"another key of enough length"
    )
    assert not wrong.ok
    assert wrong.signature_ok is False
    assert wrong.checksum_ok is True
    unsigned = _inspect.check_blob(plain_loc, stored(plain_loc, plain_key), secret=SECRET.encode())
    assert not unsigned.ok
    assert unsigned.error == "blob is not signed"


def test_status_tells_unsigned_from_corrupt(tmp_path: Path) -> None:
    """An unsigned blob checked with a key is ``unsigned``; a wrong signature is ``corrupt``."""
    signed_root, plain_root = tmp_path / "signed", tmp_path / "plain"
    (signed_key,) = write_blobs(signed_root, [b"payload" * 50], secret_key=SECRET)
    (plain_key,) = write_blobs(plain_root, [b"payload" * 50])
    signed_loc, plain_loc = PreparedPath(signed_root), PreparedPath(plain_root)
    secret = SECRET.encode()
    assert (
        _inspect.check_blob(signed_loc, stored(signed_loc, signed_key), secret=secret).status
        == "ok"
    )
    unsigned = _inspect.check_blob(plain_loc, stored(plain_loc, plain_key), secret=secret)
    assert unsigned.status == "unsigned"
    wrong = _inspect.check_blob(
        signed_loc, stored(signed_loc, signed_key), secret=b"another key of enough length"
    )
    assert wrong.status == "corrupt"
    damaged = blob_file(plain_root, plain_key)
    damaged.write_bytes(b"not an fb blob at all")
    assert _inspect.check_blob(plain_loc, stored(plain_loc, plain_key)).status == "corrupt"


def test_find_blob(cache: Path, keys: list[UUID]) -> None:
    """find_blob takes a UUID or its hex, answers None for a missing key, refuses a non-key."""
    location = PreparedPath(cache)
    assert stored(location, keys[0]).size == blob_file(cache, keys[0]).stat().st_size
    assert _inspect.find_blob(location, str(keys[1])) is not None
    assert _inspect.find_blob(location, uuid4()) is None
    with pytest.raises(InvalidKeyError):
        _inspect.find_blob(location, "../../etc/passwd")


def test_usage_groups_by_codec_and_by_shard(cache: Path, keys: list[UUID]) -> None:
    """usage sums blobs and bytes per codec (two codecs here) and per shard."""
    raw: FBStore[bytes] = FBStore(RawCodec(), PreparedPath(cache), sweep=False, segment_max=0)
    extra = uuid4()
    try:
        raw.store(extra, b"r" * 10)
    finally:
        raw.close()
    location = PreparedPath(cache)
    listing = _inspect.list_location(location)
    infos = [_inspect.read_blob_header(location, blob) for blob in listing.blobs]
    by_codec = {group.name: group for group in _inspect.usage(infos, "codec")}
    assert set(by_codec) == {"pickle", "raw-test"}
    assert by_codec["pickle"].blobs == 3
    assert by_codec["raw-test"].blobs == 1
    assert by_codec["raw-test"].bytes == blob_file(cache, extra).stat().st_size
    by_shard = _inspect.usage(infos, "shard")
    assert sum(group.blobs for group in by_shard) == 4
    assert {group.name for group in by_shard} == {key.hex[:2] for key in [*keys, extra]}


def test_hold_lock_tells_live_from_dead(cache: Path, keys: list[UUID]) -> None:
    """A live store's lock is seen as held; a free lock is taken, and keeps stores out."""
    location = PreparedPath(cache)
    with _inspect.hold_lock(location) as held:
        assert held is False
        with pytest.raises(StoreLockedError):
            FBStore(PickleCodec(), location)
    store: FBStore[object] = FBStore(PickleCodec(), location)
    try:
        with _inspect.hold_lock(location) as held:
            assert held is True
        assert _inspect.lock_owner(location) == os.getpid()
    finally:
        store.close()


def test_hold_lock_without_a_lock_file(tmp_path: Path) -> None:
    """A directory without a lock file, or a location off the local disk, has nothing to hold."""
    with _inspect.hold_lock(PreparedPath(tmp_path)) as held:
        assert held is None
    with _inspect.hold_lock(PreparedPath(f"memory://fb-{uuid4().hex}")) as held:
        assert held is None
    assert _inspect.lock_owner(PreparedPath(tmp_path)) is None


def test_read_manifest_formats(tmp_path: Path) -> None:
    """A manifest is a JSON list of keys or one key per line (blank and # lines skipped)."""
    keys = [uuid4() for _ in range(3)]
    text = tmp_path / "keys.txt"
    text.write_text(f"# saved\n{keys[0].hex}\n\n{keys[1]}\n{keys[2].hex.upper()}\n")
    assert _gc.read_manifest(text) == frozenset(keys)
    listed = tmp_path / "keys.json"
    listed.write_text(json.dumps([key.hex for key in keys]))
    assert _gc.read_manifest(listed) == frozenset(keys)
    for bad in ("not-a-key\n", '["abc"]', "[1, 2]", "[not json"):
        listed.write_text(bad)
        with pytest.raises(ValueError, match=str(listed)):
            _gc.read_manifest(listed)


def file_at(name: str, mtime: float | None = 0.0) -> StoredFile:
    return StoredFile(name=name, path=f"/root/{name}", size=10, mtime=mtime)


def listing_of(kind: str, blobs: list[str], temps: list[StoredFile]) -> Listing:
    return Listing(
        url="file:///root",
        local=True,
        blobs=tuple(file_at(f"{key[:2]}/{key}") for key in blobs),
        temp_files=tuple(temps),
        foreign=(file_at("README"),),
        lock_file=kind == "cache",
        marker=kind == "persist",
    )


def test_plan_gc_of_a_cache_directory() -> None:
    """A dead cache loses every blob and temporary file; a live one loses nothing."""
    keys = [uuid4().hex for _ in range(2)]
    temp = file_at(f"{keys[0][:2]}/.{keys[0]}.ab.tmp", mtime=time.time())
    listing = listing_of("cache", keys, [temp])
    dead = _gc.plan_gc(listing, locked=False, manifest=None, min_age=3600, now=time.time())
    assert {item.file.name for item in dead.delete} == {temp.name} | {
        f"{key[:2]}/{key}" for key in keys
    }
    assert [file.name for file in dead.foreign] == ["README"]
    live = _gc.plan_gc(listing, locked=True, manifest=None, min_age=0, now=time.time())
    assert live.delete == ()
    assert live.locked is True
    assert len(live.kept_blobs) == 2
    assert live.kept_recent == (temp,)


def test_plan_gc_of_a_persist_location() -> None:
    """Old temporary files go; with a manifest, unlisted blobs go and missing keys are named."""
    keep, orphan, missing = uuid4(), uuid4(), uuid4()
    now = time.time()
    old = file_at(f"{keep.hex[:2]}/.{keep.hex}.01.tmp", mtime=now - 7200)
    young = file_at(f"{orphan.hex[:2]}/.{orphan.hex}.02.tmp", mtime=now - 10)
    unknown_age = file_at(f"{orphan.hex[:2]}/.{orphan.hex}.03.tmp", mtime=None)
    listing = listing_of("persist", [keep.hex, orphan.hex], [old, young, unknown_age])
    plain = _gc.plan_gc(listing, locked=None, manifest=None, min_age=3600, now=now)
    assert [item.file for item in plain.delete] == [old]
    assert plain.kept_recent == (young, unknown_age)
    assert len(plain.kept_blobs) == 2
    planned = _gc.plan_gc(
        listing, locked=None, manifest=frozenset({keep, missing}), min_age=3600, now=now
    )
    assert {item.file.key for item in planned.delete} == {keep.hex, orphan.hex}
    assert [item.reason for item in planned.delete if item.file.key == orphan.hex] == [
        "not in the manifest"
    ]
    assert [file.key for file in planned.kept_blobs] == [keep.hex]
    assert planned.missing == (missing.hex,)
    assert planned.refused is None


def test_plan_gc_refuses_a_manifest_that_keeps_no_blob() -> None:
    """A manifest that lists none of the blobs (empty, or another location's) deletes none."""
    keys = [uuid4().hex for _ in range(3)]
    listing = listing_of("persist", keys, [])
    for manifest in (frozenset(), frozenset({uuid4()})):
        plan = _gc.plan_gc(listing, locked=None, manifest=manifest, min_age=0, now=0.0)
        assert plan.delete == ()
        assert len(plan.kept_blobs) == 3
        assert plan.refused is not None
        assert "none of the 3 blob(s)" in plan.refused
    empty = listing_of("persist", [], [])
    assert _gc.plan_gc(empty, locked=None, manifest=frozenset(), min_age=0, now=0).refused is None


def test_delete_files_refuses_foreign_names(tmp_path: Path) -> None:
    """delete_files deletes fb's names only, whatever it is handed; a gone file is fine."""
    key = uuid4().hex
    shard = tmp_path / key[:2]
    shard.mkdir()
    (shard / key).write_bytes(b"blob")
    (tmp_path / "notes.txt").write_text("keep me")
    location = PreparedPath(tmp_path)
    files = [
        StoredFile(name=f"{key[:2]}/{key}", path=str(shard / key), size=4, mtime=None),
        StoredFile(name="notes.txt", path=str(tmp_path / "notes.txt"), size=7, mtime=None),
        StoredFile(
            name=f"{key[:2]}/.{key}.aa.tmp", path=str(shard / f".{key}.aa.tmp"), size=0, mtime=None
        ),
    ]
    failures = _gc.delete_files(location, files)
    assert failures == [("notes.txt", "not a name fb owns; refused")]
    assert not (shard / key).exists()
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_records_are_frozen(cache: Path, keys: list[UUID]) -> None:
    """The records are frozen attrs classes."""
    info = _inspect.check_blob(PreparedPath(cache), stored(PreparedPath(cache), keys[0]))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        info.error = "x"  # type: ignore[misc]
