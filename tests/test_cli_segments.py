"""``fb ls/du/verify/inspect/gc`` on a cache directory whose small blobs are in segment files."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID, uuid4

from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.cli_helpers import fb, fb_json


def _dead_segment_cache(cache: Path, count: int) -> tuple[list[UUID], UUID, UUID]:
    """Blobs left in segment files by a store that died (lock free, segments kept).

    Returns the live keys, a freed key (its slot zeroed) and one large blob's key (a file).
    """
    store: FBStore[bytes] = FBStore(PickleCodec(), PreparedPath(cache))
    keys = [uuid4() for _ in range(count)]
    for index, key in enumerate(keys):
        store.store(key, bytes([index]) * (500 + 3000 * index))
    freed = uuid4()
    store.store(freed, b"gone" * 100)
    store.delete(freed)
    large = uuid4()
    store.store(large, os.urandom(400_000))
    assert all(store.blob_slot(key) is not None for key in keys)
    store._segments = None  # dies without closing: its segment files stay
    store.close()
    return keys, freed, large


def test_ls_du_and_verify_see_the_blobs_inside_segment_files(tmp_path: Path) -> None:
    """ls lists segment blobs (not freed slots), du counts them, verify checks them all."""
    cache = tmp_path / "cache"
    keys, freed, large = _dead_segment_cache(cache, 4)
    listed = fb_json("ls", str(cache))
    assert {blob["key"] for blob in listed["blobs"]} == {k.hex for k in [*keys, large]}
    assert all(blob["codec"] == "pickle" for blob in listed["blobs"])
    usage = fb_json("du", str(cache))
    assert usage["total"]["blobs"] == 5
    checked = fb_json("verify", str(cache))
    assert checked["checked"] == 5
    assert checked["corrupt"] == []
    assert freed.hex not in str(checked)
    found = fb_json("inspect", str(cache), keys[2].hex)
    assert found["key"] == keys[2].hex
    assert found["status"] == "ok"


def test_verify_names_a_damaged_slot_as_corrupt(tmp_path: Path) -> None:
    """A flipped payload byte in a segment slot fails verify, naming that blob."""
    cache = tmp_path / "cache"
    keys, _, _ = _dead_segment_cache(cache, 3)
    # Find the blob's slot by the key in its head.
    segment = next(p for p in cache.glob("seg-*.fbseg") if keys[0].bytes in p.read_bytes())
    data = bytearray(segment.read_bytes())
    start = data.index(keys[0].bytes) + 16 + 8 + 100  # inside the payload
    data[start] ^= 0xFF
    segment.write_bytes(bytes(data))
    done = fb("verify", str(cache))
    assert done.returncode == 1
    assert f"CORRUPT {segment.name}/{keys[0].hex}" in done.stdout


def test_gc_of_a_dead_cache_removes_its_segment_files(tmp_path: Path) -> None:
    """gc plans a dead cache's segment files (not their blobs one by one), then deletes them."""
    cache = tmp_path / "cache"
    _, _, large = _dead_segment_cache(cache, 3)
    segments = sorted(p.name for p in cache.glob("seg-*.fbseg"))
    assert segments
    plan = fb_json("gc", str(cache), code=1)
    names = {entry["name"] for entry in plan["delete"]}
    assert names == {*segments, f"{large.hex[:2]}/{large.hex}"}
    done = fb_json("gc", str(cache), "--yes")
    assert done["failed"] == []
    assert not list(cache.glob("seg-*.fbseg"))
    assert fb_json("ls", str(cache))["blobs"] == []


def test_a_live_store_s_segment_blobs_are_listed_and_kept_by_gc(tmp_path: Path) -> None:
    """While its store lives, gc deletes nothing and ls still lists the segment blobs."""
    cache = tmp_path / "cache"
    store: FBStore[bytes] = FBStore(PickleCodec(), PreparedPath(cache))
    try:
        key = uuid4()
        store.store(key, b"live" * 50)
        assert [b["key"] for b in fb_json("ls", str(cache))["blobs"]] == [key.hex]
        plan = fb_json("gc", str(cache))
        assert plan["delete"] == []
        assert store.load(key) == b"live" * 50
    finally:
        store.close()
