"""The ``fb`` command line, driven as a user drives it: subprocesses on real directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from fb import BackingStore, FBPool
from fb._cli_ops import storage_options
from fb._docgen import render
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.s3.moto_fixtures import S3Bucket

ROOT = Path(__file__).resolve().parents[1]
SECRET = "a signing key that is long enough"
SENTINEL = "do-not-print-this-credential-4f9a"
COMMANDS = ("bench", "demo", "du", "gc", "inspect", "ls", "verify")


def fb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fb ARGS`` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "fb", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def fb_json(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    """Run ``fb ARGS --json``, check its exit status, and return the parsed output."""
    done = fb(*args, "--json", env=env)
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def blob_file(root: Path, key: UUID) -> Path:
    return root / key.hex[:2] / key.hex


def flip(path: Path, offset: int) -> None:
    """Flip every bit of the byte at ``offset`` of ``path``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def write_blobs(root: Path, count: int, secret: str | None = None) -> list[UUID]:
    """Write ``count`` blobs through an FBStore on ``root``, then close it as a dead store."""
    store: FBStore[bytes] = FBStore(PickleCodec(), PreparedPath(root), secret_key=secret)
    keys = [uuid4() for _ in range(count)]
    try:
        for index, key in enumerate(keys):
            store.store(key, bytes([index]) * 3000)
    finally:
        store.close()
    return keys


@pytest.fixture(name="cache")
def fixture_cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(name="dead_cache")
def fixture_dead_cache(cache: Path) -> list[UUID]:
    """Four blobs left in ``cache`` by a store that is gone (its lock is free)."""
    return write_blobs(cache, 4)


@pytest.fixture(name="persisted")
def fixture_persisted(tmp_path: Path) -> tuple[Path, list[UUID]]:
    """A persist location with five items persisted (and fsynced) through a pool."""
    persist = tmp_path / "persist"
    persist.mkdir()
    with BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "work"))) as store:
        pool: FBPool[str] = FBPool(store, max_items=2)
        tracked = store.track_path(persist)
        handles = [pool.insert(f"value {i}" * 100) for i in range(5)]
        keys = [handle.persist(tracked) for handle in handles]
        store.fsync(tracked)
        pool.close()
        store.finished()
    return persist, keys


@pytest.fixture(name="live_store")
def fixture_live_store(cache: Path) -> Iterator[FBStore[bytes]]:
    """A live store in this process that owns ``cache`` (holds its lock) during the test."""
    store: FBStore[bytes] = FBStore(PickleCodec(), PreparedPath(cache))
    yield store
    store.close()


# -- help, usage errors, documentation ----------------------------------------------------------


def test_every_command_has_help() -> None:
    """``fb --help`` lists every command, and each command answers --help (and -h)."""
    done = fb("-h")
    assert done.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in done.stdout
        sub = fb(name, "--help")
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith(f"Usage: fb {name} ")
    assert fb("gc", "-h").stdout == fb("gc", "--help").stdout


def test_usage_errors_exit_with_2(cache: Path, dead_cache: list[UUID]) -> None:
    """Unknown commands and options, a missing URL, a bad KEY or --by exit with 2."""
    for args in (
        ["nonsense"],
        ["ls"],
        ["ls", str(cache), "--no-such-option"],
        ["inspect", str(cache), "not-a-key"],
        ["du", str(cache), "--by", "colour"],
        ["ls", str(cache), "--endpoint-url", "http://127.0.0.1:1"],
    ):
        done = fb(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Error" in done.stderr


def test_missing_location_exits_with_2(tmp_path: Path) -> None:
    """A location that does not exist is named in the error, and the status is 2."""
    for name in ("ls", "inspect", "du", "verify", "gc"):
        done = fb(name, str(tmp_path / "nowhere"))
        assert done.returncode == 2
        assert "nowhere" in done.stderr
        assert "Traceback" not in done.stderr


def test_cli_reference_is_generated_from_the_cli() -> None:
    """docs/cli.md is what ``python -m fb._docgen`` renders from the commands' help."""
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/cli.md is stale: run python -m fb._docgen"
    check = subprocess.run(
        [sys.executable, "-m", "fb._docgen", "--check", str(ROOT / "docs" / "cli.md")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    for name in COMMANDS:
        assert f"## fb {name}\n" in committed


def test_demo_still_runs(tmp_path: Path) -> None:
    """``fb demo`` runs a small workload and verifies every read."""
    summary = fb_json(
        "demo", "--total-mib", "1", "--item-kib", "64", "--dir", str(tmp_path / "d"), "--quiet"
    )
    assert summary["corrupt"] == 0
    assert summary["verified"] == summary["reads"]


# -- storage options ------------------------------------------------------------------------


def test_storage_options_merge_environment_flags_and_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FB_STORAGE_OPTIONS first, flags (JSON values, dotted keys) over it, then --endpoint-url."""
    monkeypatch.setenv(
        "FB_STORAGE_OPTIONS", json.dumps({"anon": False, "client_kwargs": {"region_name": "a"}})
    )
    options = storage_options(
        "s3://bucket/prefix",
        ["anon=true", "max_concurrency=8", "client_kwargs.verify=false", "profile=spill"],
        "http://127.0.0.1:9000",
    )
    assert options == {
        "anon": True,
        "max_concurrency": 8,
        "profile": "spill",
        "client_kwargs": {
            "region_name": "a",
            "verify": False,
            "endpoint_url": "http://127.0.0.1:9000",
        },
    }


def test_bad_storage_options_exit_with_2_and_never_echo_values(
    cache: Path, dead_cache: list[UUID]
) -> None:
    """Malformed options are usage errors whose messages never show the values (or passwords)."""
    for args, env in (
        (["--storage-option", SENTINEL], {}),
        (["--storage-option", f"profile={SENTINEL}", "--storage-option", "profile.x=1"], {}),
        ([], {"FB_STORAGE_OPTIONS": f"{{{SENTINEL}"}),
        ([], {"FB_STORAGE_OPTIONS": json.dumps([SENTINEL])}),
    ):
        done = fb("ls", str(cache), *args, env=env)
        assert done.returncode == 2, (args, env, done.stderr)
        assert SENTINEL not in done.stdout + done.stderr
    done = fb("ls", f"sftp://user:{SENTINEL}@127.0.0.1:9/x")
    assert done.returncode == 2
    assert SENTINEL not in done.stdout + done.stderr


# -- ls, inspect, du ------------------------------------------------------------------------


def test_ls_lists_every_blob(cache: Path, dead_cache: list[UUID]) -> None:
    """``fb ls --json`` gives key, size, codec, signed flag and age of every blob."""
    listed = fb_json("ls", str(cache))
    assert listed["url"] == f"file://{cache}"
    by_key = {blob["key"]: blob for blob in listed["blobs"]}
    assert set(by_key) == {key.hex for key in dead_cache}
    for key in dead_cache:
        blob = by_key[key.hex]
        assert blob["size"] == blob_file(cache, key).stat().st_size
        assert blob["codec"] == "pickle"
        assert blob["signed"] is False
        assert 0 <= blob["age_seconds"] < 3600
        assert blob["ok"] is True
    text = fb("ls", str(cache))
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split() == ["KEY", "SIZE", "CODEC", "SIGNED", "AGE"]
    assert all(key.hex in text.stdout for key in dead_cache)
    assert "4 blob(s)" in text.stdout


def test_ls_exits_with_1_on_an_unreadable_header(cache: Path, dead_cache: list[UUID]) -> None:
    """A blob whose header is not fb's is listed with codec "?" and the status is 1."""
    flip(blob_file(cache, dead_cache[0]), 0)
    listed = fb_json("ls", str(cache), code=1)
    bad = [blob for blob in listed["blobs"] if not blob["ok"]]
    assert [blob["key"] for blob in bad] == [dead_cache[0].hex]
    assert "not an fb blob" in bad[0]["error"]


def test_inspect_summarises_a_dead_cache(cache: Path, dead_cache: list[UUID]) -> None:
    """A cache directory whose store is gone: kind cache, lock free, the counts."""
    (cache / "notes.txt").write_text("mine")
    summary = fb_json("inspect", str(cache))
    assert summary["kind"] == "cache"
    assert summary["lock"]["file"] is True
    assert summary["lock"]["held"] is False
    assert summary["blobs"] == 4
    assert summary["blob_bytes"] == sum(blob_file(cache, k).stat().st_size for k in dead_cache)
    assert summary["foreign"] == ["notes.txt"]
    text = fb("inspect", str(cache))
    assert "cache directory" in text.stdout
    assert "free" in text.stdout


def test_inspect_sees_a_live_store(cache: Path, live_store: FBStore[bytes]) -> None:
    """The lock of a live store (in this process) is reported as held, with its pid."""
    live_store.store(uuid4(), b"live")
    summary = fb_json("inspect", str(cache))
    assert summary["lock"] == {"file": True, "held": True, "pid": os.getpid()}
    assert summary["blobs"] == 1


def test_inspect_summarises_a_persist_location(persisted: tuple[Path, list[UUID]]) -> None:
    """A persist location is recognised by fb's marker; there is no lock to check."""
    persist, keys = persisted
    summary = fb_json("inspect", str(persist))
    assert summary["kind"] == "persist"
    assert summary["marker"] is True
    assert summary["lock"] == {"file": False, "held": None, "pid": None}
    assert summary["blobs"] == len(keys)


def test_inspect_key_shows_header_and_checksum(persisted: tuple[Path, list[UUID]]) -> None:
    """``fb inspect URL KEY`` gives the header and trailer fields, and a sound checksum."""
    persist, keys = persisted
    blob = fb_json("inspect", str(persist), keys[0].hex)
    assert blob["key"] == keys[0].hex
    assert (blob["version"], blob["codec"], blob["signed"], blob["flags"]) == (
        1,
        "pickle",
        False,
        0x02,
    )
    assert blob["size"] == blob_file(persist, keys[0]).stat().st_size
    assert blob["size"] == blob["header_size"] + blob["payload_length"] + 20
    assert blob["checksum_algorithm"] == "xxh3-64"
    assert blob["checksum_ok"] is True
    assert blob["ok"] is True
    text = fb("inspect", str(persist), str(keys[0]))
    assert text.returncode == 0
    assert "status          ok" in text.stdout


def test_inspect_key_of_a_corrupt_or_missing_blob_exits_with_1(
    persisted: tuple[Path, list[UUID]],
) -> None:
    """A blob whose checksum fails, or no blob at all, gives status 1."""
    persist, keys = persisted
    path = blob_file(persist, keys[1])
    flip(path, path.stat().st_size // 2)
    blob = fb_json("inspect", str(persist), keys[1].hex, code=1)
    assert blob["checksum_ok"] is False
    assert blob["error"] == "checksum mismatch"
    missing = fb("inspect", str(persist), uuid4().hex)
    assert missing.returncode == 1
    assert "no blob" in missing.stderr


class RawCodec:
    """A second codec, so that ``du --by codec`` has two groups."""

    name = "raw-test"

    def dump(self, value: bytes, file: Any) -> None:
        file.write(value)

    def load(self, file: Any) -> bytes:
        data: bytes = file.read()
        return data


def test_du_by_codec_and_by_shard(cache: Path, dead_cache: list[UUID]) -> None:
    """``fb du`` totals blobs and bytes per codec and per shard, temporary files apart."""
    raw: FBStore[bytes] = FBStore(RawCodec(), PreparedPath(cache), sweep=False)
    extra = uuid4()
    try:
        raw.store(extra, b"r" * 100)
    finally:
        raw.close()
    (cache / extra.hex[:2] / f".{extra.hex}.01.tmp").write_bytes(b"partial")
    sizes = {key: blob_file(cache, key).stat().st_size for key in [*dead_cache, extra]}
    by_codec = fb_json("du", str(cache))
    groups = {group["name"]: group for group in by_codec["groups"]}
    assert groups["pickle"] == {
        "name": "pickle",
        "blobs": 4,
        "bytes": sum(sizes[k] for k in dead_cache),
    }
    assert groups["raw-test"] == {"name": "raw-test", "blobs": 1, "bytes": sizes[extra]}
    assert by_codec["total"] == {"blobs": 5, "bytes": sum(sizes.values())}
    assert by_codec["temp_files"] == {"count": 1, "bytes": 7}
    by_shard = fb_json("du", str(cache), "--by", "shard")
    assert {group["name"] for group in by_shard["groups"]} == {k.hex[:2] for k in sizes}
    assert by_shard["total"] == by_codec["total"]
    text = fb("du", str(cache), "--quiet")
    assert text.returncode == 0
    assert "raw-test" in text.stdout
    assert "1 temp files" in text.stdout


# -- verify ---------------------------------------------------------------------------------


def test_verify_passes_a_sound_location(persisted: tuple[Path, list[UUID]]) -> None:
    """Every blob of a sound location checks out: status 0, nothing listed."""
    persist, keys = persisted
    report = fb_json("verify", str(persist))
    assert report["checked"] == len(keys)
    assert report["corrupt"] == []
    assert report["signatures"] is False


def test_verify_lists_every_corrupt_blob(cache: Path, dead_cache: list[UUID]) -> None:
    """Flipped, truncated and impostor blobs are listed with status 1; foreign names are not."""
    flipped, truncated, bad_magic, sound = dead_cache
    path = blob_file(cache, flipped)
    flip(path, path.stat().st_size // 2)
    path = blob_file(cache, truncated)
    path.write_bytes(path.read_bytes()[:-100])
    flip(blob_file(cache, bad_magic), 1)
    impostor = uuid4()
    blob_file(cache, impostor).parent.mkdir(exist_ok=True)  # shards are made on first use
    blob_file(cache, impostor).write_bytes(b"I am named like a blob but I am not one")
    (cache / "README.txt").write_text("not fb's")
    (cache / sound.hex[:2] / "notes").write_text("not fb's either")
    report = fb_json("verify", str(cache), code=1)
    errors = {entry["key"]: entry["error"] for entry in report["corrupt"]}
    assert set(errors) == {flipped.hex, truncated.hex, bad_magic.hex, impostor.hex}
    assert errors[flipped.hex] == "checksum mismatch"
    assert "truncated" in errors[truncated.hex]
    assert "not an fb blob" in errors[bad_magic.hex]
    assert "not an fb blob" in errors[impostor.hex]
    assert report["checked"] == 5
    assert sorted(report["foreign"]) == sorted(["README.txt", f"{sound.hex[:2]}/notes"])
    text = fb("verify", str(cache), "--quiet")
    assert text.returncode == 1
    assert text.stdout.count("CORRUPT ") == 4
    assert "1/5 blob(s) sound" in text.stdout


def test_verify_progress_bar_goes_to_stderr_unless_quiet(
    cache: Path, dead_cache: list[UUID]
) -> None:
    """The progress bar (its label, off a terminal) is on stderr; --quiet and --json silence it."""
    noisy = fb("verify", str(cache))
    assert noisy.returncode == 0
    assert "verify" in noisy.stderr
    assert "verify" not in noisy.stdout
    assert fb("verify", str(cache), "--quiet").stderr == ""
    assert fb("verify", str(cache), "--json").stderr == ""


def test_verify_checks_signatures_with_a_key_from_the_environment(tmp_path: Path) -> None:
    """The right key passes, another key or an unsigned blob fails, the key is never printed."""
    signed, plain = tmp_path / "signed", tmp_path / "plain"
    write_blobs(signed, 3, secret=SECRET)
    write_blobs(plain, 1)
    good = fb_json(
        "verify", str(signed), "--secret-key-env", "FB_TEST_KEY", env={"FB_TEST_KEY": SECRET}
    )
    assert good["signatures"] is True
    assert good["corrupt"] == []
    wrong = fb(
        "verify",
        str(signed),
        "--secret-key-env",
        "FB_TEST_KEY",
        "--quiet",
        env={"FB_TEST_KEY": "another key, also long enough"},
    )
    assert wrong.returncode == 1
    assert wrong.stdout.count("signature mismatch") == 3
    unsigned = fb_json(
        "verify", str(plain), "--secret-key-env", "FB_TEST_KEY", code=1, env={"FB_TEST_KEY": SECRET}
    )
    assert unsigned["corrupt"][0]["error"] == "blob is not signed"
    unchecked = fb_json("verify", str(signed))
    assert unchecked["signatures"] is False
    assert unchecked["corrupt"] == []
    for env in ({}, {"FB_TEST_KEY": "short"}):
        done = fb("verify", str(signed), "--secret-key-env", "FB_TEST_KEY", env=env)
        assert done.returncode == 2
        assert "FB_TEST_KEY" in done.stderr
    assert SECRET not in good.__repr__() + wrong.stdout + wrong.stderr


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
    store = FBStore("pickle", PreparedPath(sys.argv[1]))
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


# -- S3 -------------------------------------------------------------------------------------


def test_ls_and_verify_on_s3(s3: S3Bucket) -> None:
    """On the moto S3 server, ls and verify work with options from flags or the environment."""
    location = s3.location("spill")
    store: FBStore[bytes] = FBStore(PickleCodec(), location)
    keys = [uuid4() for _ in range(3)]
    try:
        for key in keys:
            store.store(key, b"s3" * 2000)
    finally:
        store.close()
    url = s3.url("spill")
    flags = [
        "--endpoint-url",
        s3.endpoint,
        "--storage-option",
        "key=testing",
        "--storage-option",
        f"secret={SENTINEL}",
    ]
    listed = fb_json("ls", url, *flags)
    assert listed["url"] == url
    assert {blob["key"] for blob in listed["blobs"]} == {key.hex for key in keys}
    assert all(blob["codec"] == "pickle" for blob in listed["blobs"])
    assert all(blob["age_seconds"] is not None for blob in listed["blobs"])
    env = {"FB_STORAGE_OPTIONS": json.dumps({**s3.options, "secret": SENTINEL})}
    assert fb_json("verify", url, env=env)["checked"] == 3

    name = f"spill/{keys[0].hex[:2]}/{keys[0].hex}"
    data = bytearray(s3.get(name))
    data[len(data) // 2] ^= 0xFF
    s3.server.client.put_object(Bucket=s3.name, Key=name, Body=bytes(data))
    report = fb_json("verify", url, *flags, code=1)
    assert [entry["key"] for entry in report["corrupt"]] == [keys[0].hex]
    text = fb("verify", url, *flags)
    assert text.returncode == 1
    assert SENTINEL not in text.stdout + text.stderr
    unreachable = fb(
        "ls",
        url,
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--storage-option",
        f"secret={SENTINEL}",
        "--storage-option",
        "config_kwargs.retries.max_attempts=1",
    )
    assert unreachable.returncode == 2
    assert SENTINEL not in unreachable.stdout + unreachable.stderr
