"""The ``fb`` command line, driven as a user drives it: subprocesses on real directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from fb._cli_ops import storage_options
from fb._docgen import render
from fb.backends import FBStore
from fb.codecs import PickleCodec
from tests.cli_helpers import (
    fb,
    fb_json,
    fixture_cache,  # noqa: F401 - a fixture, found by name
    fixture_dead_cache,  # noqa: F401 - a fixture, found by name
)
from tests.s3.moto_fixtures import S3Bucket

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "do-not-print-this-credential-4f9a"
COMMANDS = ("bench", "demo", "du", "gc", "inspect", "ls", "verify")

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


def test_demo_progress_goes_to_stderr(tmp_path: Path) -> None:
    """Off a terminal the progress bars' labels are on stderr; stdout holds only the summary."""
    done = fb("demo", "--total-mib", "1", "--item-kib", "64")
    assert done.returncode == 0, done.stderr
    assert "insert" in done.stderr
    assert "read" in done.stderr
    assert done.stdout.startswith("16 objects x 64 KiB"), done.stdout
    assert fb("demo", "--total-mib", "1", "--item-kib", "64", "--quiet").stderr == ""


def test_demo_says_where_its_cache_went(tmp_path: Path) -> None:
    """The summary names the cache directory, and says it was removed or what is left in it."""
    temporary = fb("demo", "--total-mib", "1", "--item-kib", "64", "--quiet")
    assert temporary.returncode == 0
    line = temporary.stdout.splitlines()[-1]
    assert line.startswith("  cache:  /")
    assert "removed" in line
    path = Path(line.split()[1])
    assert path.name == "cache"
    assert not path.parent.exists()
    kept = fb("demo", "--total-mib", "1", "--item-kib", "64", "--dir", str(tmp_path), "--quiet")
    assert kept.returncode == 0
    assert f"  cache:  {tmp_path / 'cache'} (kept, 0 blob(s) left" in kept.stdout
    summary = fb_json(
        "demo", "--total-mib", "1", "--item-kib", "64", "--dir", str(tmp_path), "--quiet"
    )
    assert summary["cache"] == {
        "path": str(tmp_path / "cache"),
        "kept": True,
        "blobs_left": 0,
        "bytes_left": 0,
    }


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
    nothing = fb("verify", s3.url("nothing-here"), env=env)
    assert nothing.returncode == 2, nothing.stderr
    assert "not an fb location" in nothing.stderr

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
