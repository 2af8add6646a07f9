"""The read-only commands ``fb ls``, ``inspect``, ``du`` and ``verify`` on caches and locations."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from fb.backends import FBStore, PreparedPath
from tests.cli_helpers import (
    blob_file,
    fb,
    fb_json,
    fixture_cache,  # noqa: F401 - a fixture, found by name
    fixture_dead_cache,  # noqa: F401 - a fixture, found by name
    fixture_live_store,  # noqa: F401 - a fixture, found by name
    fixture_persisted,  # noqa: F401 - a fixture, found by name
    flip,
    write_blobs,
)

SECRET = "a signing key that is long enough"

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
    assert text.stdout.splitlines()[-1].split() == ["status", "ok"]


def test_inspect_key_prints_an_iso_time_in_aligned_rows(
    persisted: tuple[Path, list[UUID]],
) -> None:
    """Every row's value starts in one column, and mtime is an ISO 8601 time, not epoch seconds."""
    persist, keys = persisted
    text = fb("inspect", str(persist), keys[0].hex)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert {"mtime", "checksum_algorithm", "status"} <= set(rows)
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in lines}
    assert len(starts) == 1, text.stdout
    mtime = datetime.datetime.fromisoformat(rows["mtime"].split()[1])
    assert mtime.tzinfo is not None
    actual = blob_file(persist, keys[0]).stat().st_mtime
    assert abs(mtime.timestamp() - actual) < 1


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
    raw: FBStore[bytes] = FBStore(RawCodec(), PreparedPath(cache), sweep=False, segment_max=0)
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
    assert unsigned["unsigned"][0]["error"] == "blob is not signed"
    unchecked = fb_json("verify", str(signed))
    assert unchecked["signatures"] is False
    assert unchecked["corrupt"] == []
    for env in ({}, {"FB_TEST_KEY": "short"}):
        done = fb("verify", str(signed), "--secret-key-env", "FB_TEST_KEY", env=env)
        assert done.returncode == 2
        assert "FB_TEST_KEY" in done.stderr
    assert SECRET not in good.__repr__() + wrong.stdout + wrong.stderr


def test_verify_calls_unsigned_blobs_unsigned_not_corrupt(tmp_path: Path) -> None:
    """With a key, unsigned blobs are UNSIGNED (status 1); a damaged unsigned one is CORRUPT."""
    plain = tmp_path / "plain"
    keys = write_blobs(plain, 3)
    flip(blob_file(plain, keys[0]), blob_file(plain, keys[0]).stat().st_size // 2)
    env = {"FB_TEST_KEY": SECRET}
    args = ("verify", str(plain), "--secret-key-env", "FB_TEST_KEY")
    text = fb(*args, "--quiet", env=env)
    assert text.returncode == 1
    assert text.stdout.count("UNSIGNED ") == 2
    assert text.stdout.count("CORRUPT ") == 1
    assert "; 1 CORRUPT; 2 UNSIGNED" in text.stdout
    report = fb_json(*args, code=1, env=env)
    assert {entry["key"] for entry in report["unsigned"]} == {k.hex for k in keys[1:]}
    assert [entry["key"] for entry in report["corrupt"]] == [keys[0].hex]
    inspected = fb("inspect", str(plain), keys[1].hex, "--secret-key-env", "FB_TEST_KEY", env=env)
    assert inspected.returncode == 1
    assert inspected.stdout.splitlines()[-1].split() == ["status", "UNSIGNED"]
    assert (
        fb_json(
            "inspect", str(plain), keys[1].hex, "--secret-key-env", "FB_TEST_KEY", code=1, env=env
        )["status"]
        == "unsigned"
    )


def test_verify_lists_foreign_names(cache: Path, dead_cache: list[UUID]) -> None:
    """The text output names the foreign names it left alone, the first ten and how many more."""
    names = [f"notes-{i:02}.txt" for i in range(13)]
    for name in names:
        (cache / name).write_text("mine")
    text = fb("verify", str(cache), "--quiet")
    assert text.returncode == 0
    last = text.stdout.splitlines()[-1]
    assert last.startswith("13 foreign name(s) left alone")
    assert all(name in last for name in names[:10])
    assert names[10] not in last
    assert last.endswith("… and 3 more")
