"""``fb gc``: cleaning dead caches and persist locations, never what a live store or user owns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from uuid import UUID, uuid4

from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.cli_helpers import (
    blob_file,
    fb,
    fb_json,
    fixture_cache,  # noqa: F401 - a fixture, found by name
    fixture_dead_cache,  # noqa: F401 - a fixture, found by name
    fixture_live_store,  # noqa: F401 - a fixture, found by name
    fixture_persisted,  # noqa: F401 - a fixture, found by name
)

# -- gc -------------------------------------------------------------------------------------


def test_gc_cleans_a_dead_cache_and_leaves_foreign_names(
    cache: Path, dead_cache: list[UUID]
) -> None:
    """A dry run lists blobs and temporary files (status 1); --yes deletes only those."""
    temp = cache / dead_cache[0].hex[:2] / f".{dead_cache[0].hex}.5eed.tmp"
    temp.write_bytes(b"half a blob")
    other = "00" if dead_cache[1].hex[:2] != "00" else "01"
    foreign = [
        cache / "notes.txt",
        cache / dead_cache[0].hex[:2] / "keep.me",
        cache / other / dead_cache[1].hex,  # a blob's name in the wrong shard: not fb's
        cache / dead_cache[2].hex[:2] / f".{dead_cache[2].hex}.tmp",  # not fb's temp pattern
        cache / "sub" / dead_cache[3].hex,
    ]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)  # shards are made on first use
        path.write_bytes(b"someone else's")
    plan = fb_json("gc", str(cache), code=1)
    assert plan["kind"] == "cache"
    assert plan["locked"] is False
    assert plan["dry_run"] is True
    names = {entry["name"] for entry in plan["delete"]}
    assert names == {f"{k.hex[:2]}/{k.hex}" for k in dead_cache} | {
        f"{dead_cache[0].hex[:2]}/{temp.name}"
    }
    assert len(plan["foreign"]) == len(foreign)
    assert all(blob_file(cache, key).exists() for key in dead_cache)
    assert temp.exists()
    done = fb_json("gc", str(cache), "--yes")
    assert done["deleted"] == 5
    assert done["failed"] == []
    assert not any(blob_file(cache, key).exists() for key in dead_cache)
    assert not temp.exists()
    assert all(path.read_bytes() == b"someone else's" for path in foreign)
    assert (cache / ".fb-lock").exists()
    again = fb("gc", str(cache))
    assert again.returncode == 0
    assert "would delete 0 file(s)" in again.stdout


def test_gc_touches_nothing_while_a_live_store_holds_the_lock(
    cache: Path, live_store: FBStore[bytes]
) -> None:
    """While a live store in this process holds the lock, gc --yes reports it, deletes nothing."""
    key = uuid4()
    live_store.store(key, b"in use")
    temp = cache / key.hex[:2] / f".{key.hex}.abcd.tmp"
    temp.write_bytes(b"a write in progress")
    report = fb_json("gc", str(cache), "--yes")
    assert report["locked"] is True
    assert report["delete"] == []
    assert report["deleted"] == 0
    assert blob_file(cache, key).exists()
    assert temp.exists()
    assert live_store.load(key) == b"in use"
    text = fb("gc", str(cache), "--yes")
    assert text.returncode == 0
    assert "live store holds the lock" in text.stdout


CHILD = textwrap.dedent(
    """
    import sys, uuid
    from fb.backends import FBStore, PreparedPath
    store = FBStore("pickle", PreparedPath(sys.argv[1]), segment_max=0)  # blob files
    for i in range(3):
        key = uuid.uuid4()
        store.store(key, b"x" * 1000)
        print(key.hex, flush=True)
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


def test_gc_after_the_owning_process_was_killed(cache: Path) -> None:
    """A store in a child process keeps gc out; once the child is killed, gc cleans up."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(4)]
        assert lines[-1] == "ready"
        keys = [UUID(hex=line) for line in lines[:3]]
        live = fb_json("gc", str(cache), "--yes")
        assert live["locked"] is True
        assert fb_json("inspect", str(cache))["lock"]["pid"] == child.pid
        assert all(blob_file(cache, key).exists() for key in keys)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
        if child.stdin is not None:
            child.stdin.close()
    assert child.returncode == -signal.SIGKILL
    dead = fb_json("gc", str(cache), code=1)
    assert dead["locked"] is False
    assert {entry["name"] for entry in dead["delete"]} == {f"{k.hex[:2]}/{k.hex}" for k in keys}
    fb_json("gc", str(cache), "--yes")
    assert not any(blob_file(cache, key).exists() for key in keys)
    FBStore(PickleCodec(), PreparedPath(cache)).close()  # the directory opens again


def test_gc_of_a_persist_location_with_a_manifest(
    tmp_path: Path, persisted: tuple[Path, list[UUID]]
) -> None:
    """Orphans not in the manifest and old temporary files go; listed and recent ones stay."""
    persist, keys = persisted
    old_temp = persist / keys[0].hex[:2] / f".{keys[0].hex}.0001.tmp"
    young_temp = persist / keys[1].hex[:2] / f".{keys[1].hex}.0002.tmp"
    for temp in (old_temp, young_temp):
        temp.write_bytes(b"partial copy")
    two_hours_ago = time.time() - 7200
    os.utime(old_temp, (two_hours_ago, two_hours_ago))
    (persist / "manifest.json").write_text("written by the application")
    manifest = tmp_path / "keep.txt"
    manifest.write_text("# the last save\n" + "".join(f"{k.hex}\n" for k in keys[:3]))

    plain = fb_json("gc", str(persist), code=1)
    assert [entry["name"] for entry in plain["delete"]] == [
        old_temp.relative_to(persist).as_posix()
    ]
    assert plain["kept_blobs"] == len(keys)

    plan = fb_json("gc", str(persist), "--manifest", str(manifest), code=1)
    assert {entry["name"] for entry in plan["delete"]} == {
        old_temp.relative_to(persist).as_posix(),
        *(f"{k.hex[:2]}/{k.hex}" for k in keys[3:]),
    }
    assert plan["kept_recent"] == [young_temp.relative_to(persist).as_posix()]
    assert plan["foreign"] == ["manifest.json"]

    done = fb_json("gc", str(persist), "--manifest", str(manifest), "--yes")
    assert done["deleted"] == 3
    assert all(blob_file(persist, key).exists() for key in keys[:3])
    assert not any(blob_file(persist, key).exists() for key in keys[3:])
    assert not old_temp.exists()
    assert young_temp.exists()
    assert (persist / "manifest.json").exists()
    assert fb("verify", str(persist), "--quiet").returncode == 0

    listed = tmp_path / "keep.json"
    listed.write_text(json.dumps([k.hex for k in keys[:3]] + [uuid4().hex]))
    missing = fb_json("gc", str(persist), "--manifest", str(listed), "--yes", code=1)
    assert len(missing["missing"]) == 1
    assert missing["deleted"] == 0

    unrelated = tmp_path / "other.json"
    unrelated.write_text(json.dumps([uuid4().hex]))
    refused = fb_json("gc", str(persist), "--manifest", str(unrelated), "--yes", code=1)
    assert refused["refused"] is not None
    assert refused["deleted"] == 0
    assert all(blob_file(persist, key).exists() for key in keys[:3])


def test_gc_refuses_a_bad_manifest(
    tmp_path: Path, cache: Path, dead_cache: list[UUID], persisted: tuple[Path, list[UUID]]
) -> None:
    """A manifest with a non-key, or a manifest for a cache directory, is a usage error."""
    persist, keys = persisted
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{keys[0].hex}\n../../etc/passwd\n")
    done = fb("gc", str(persist), "--manifest", str(bad), "--yes")
    assert done.returncode == 2
    assert "not a key" in done.stderr
    assert all(blob_file(persist, key).exists() for key in keys)
    good = tmp_path / "good.txt"
    good.write_text(f"{dead_cache[0].hex}\n")
    done = fb("gc", str(cache), "--manifest", str(good), "--yes")
    assert done.returncode == 2
    assert all(blob_file(cache, key).exists() for key in dead_cache)
