"""Bad input to any ``fb`` command: a one-line error and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from fb.backends import FBStore
from tests.cli_helpers import (
    fb,
    fb_json,
    fixture_cache,  # noqa: F401 - a fixture, found by name
    fixture_dead_cache,  # noqa: F401 - a fixture, found by name
    fixture_live_store,  # noqa: F401 - a fixture, found by name
    fixture_persisted,  # noqa: F401 - a fixture, found by name
)

KEY = "0123456789abcdef0123456789abcdef"

# Each case: the arguments, the exit status, and what the error must say. In the arguments,
# {file} is a regular file, {missing} a path that does not exist, {dir} an empty directory,
# and {blocked} a directory whose "cache" is a file.
CASES: dict[str, tuple[list[str], int, str]] = {
    "unknown command": (["nonsense"], 2, "nonsense"),
    "ls missing": (["ls", "{missing}"], 2, "does not exist"),
    "ls file": (["ls", "{file}"], 2, "not a directory"),
    "ls file url": (["ls", "file://{file}"], 2, "not a directory"),
    "inspect missing": (["inspect", "{missing}"], 2, "does not exist"),
    "inspect file": (["inspect", "{file}"], 2, "not a directory"),
    "inspect key at missing": (["inspect", "{missing}", KEY], 2, "does not exist"),
    "inspect key at file": (["inspect", "{file}", KEY], 2, "not a directory"),
    "inspect bad key": (["inspect", "{dir}", "not-a-key"], 2, "KEY"),
    "inspect key not there": (["inspect", "{dir}", KEY], 1, "no blob"),
    "inspect unset secret": (
        ["inspect", "{dir}", KEY, "--secret-key-env", "FB_TEST_UNSET"],
        2,
        "FB_TEST_UNSET",
    ),
    "du missing": (["du", "{missing}"], 2, "does not exist"),
    "du file": (["du", "{file}"], 2, "not a directory"),
    "du bad by": (["du", "{dir}", "--by", "colour"], 2, "colour"),
    "du bad jobs": (["du", "{dir}", "--jobs", "0"], 2, "--jobs"),
    "verify missing": (["verify", "{missing}"], 2, "does not exist"),
    "verify file": (["verify", "{file}"], 2, "not a directory"),
    "verify not fb's": (["verify", "{dir}"], 2, "not an fb location"),
    "gc missing": (["gc", "{missing}"], 2, "does not exist"),
    "gc file": (["gc", "{file}"], 2, "not a directory"),
    "gc missing manifest": (["gc", "{dir}", "--manifest", "{missing}"], 2, "--manifest"),
    "gc bad manifest": (["gc", "{dir}", "--manifest", "{file}"], 2, "--manifest"),
    "gc negative age": (["gc", "{dir}", "--min-age", "-1"], 2, "--min-age"),
    "unknown protocol": (["ls", "nosuchproto://x"], 2, "nosuchproto"),
    "bad storage option value": (["ls", "{dir}", "--storage-option", "fs=1"], 2, "cannot open"),
    "not a zip file": (["ls", "zip://x::{file}"], 2, "cannot open"),
    "endpoint for a local path": (["ls", "{dir}", "--endpoint-url", "http://x"], 2, "s3://"),
    "demo unknown codec": (["demo", "--codec", "nope"], 2, "nope"),
    "demo json codec": (["demo", "--codec", "json"], 2, "json"),
    "demo numpy codec": (["demo", "--codec", "numpy"], 2, "numpy"),
    "demo protobuf codec": (["demo", "--codec", "protobuf"], 2, "protobuf"),
    "demo huge item": (["demo", "--item-kib", "99999999"], 2, "--item-kib"),
    "demo dir is a file": (["demo", "--dir", "{file}"], 2, "--dir"),
    "demo cache is a file": (["demo", "--dir", "{blocked}", "--quiet"], 2, "cache"),
    "demo bad budget": (["demo", "--budget", "2"], 2, "--budget"),
    "demo no data": (["demo", "--total-mib", "0"], 2, "--total-mib"),
    "demo no workers": (["demo", "--workers", "0"], 2, "--workers"),
    "ls too many jobs": (["ls", "{dir}", "--jobs", "999"], 2, "--jobs"),
    "ls bad storage option": (["ls", "{dir}", "--storage-option", "no-equals"], 2, "KEY=VALUE"),
    "bench bad workload": (["bench", "--workload", "x"], 2, "--workload"),
    "bench no runs": (["bench", "--runs", "0"], 2, "--runs"),
    "bench plot in a missing directory": (
        ["bench", "--quick", "--plot", "{missing}/plot.png"],
        2,
        "--plot",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_one_line_error_without_a_traceback(tmp_path: Path, case: str) -> None:
    """Every command answers bad input with its documented status and an error, not a crash."""
    args, code, says = CASES[case]
    regular = tmp_path / "file.txt"
    regular.write_text("not a location")
    empty = tmp_path / "empty"
    empty.mkdir()
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "cache").write_text("a file where the demo's cache directory goes")
    paths = {
        "file": str(regular),
        "missing": str(tmp_path / "nowhere"),
        "dir": str(empty),
        "blocked": str(blocked),
    }
    done = fb(*(arg.format(**paths) for arg in args))
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == code, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, done.stderr
    assert says in errors[0], done.stderr


def test_ls_of_a_regular_file_does_not_say_it_does_not_exist(tmp_path: Path) -> None:
    """A regular file given as a location is named as not a directory, not as missing."""
    regular = tmp_path / "data.bin"
    regular.write_bytes(b"x")
    done = fb("ls", str(regular))
    assert done.returncode == 2
    assert "does not exist" not in done.stderr
    assert "not a directory" in done.stderr
    assert str(regular) in done.stderr


def test_demo_refuses_a_locked_cache(
    tmp_path: Path, cache: Path, live_store: FBStore[bytes]
) -> None:
    """A cache directory a live store owns is an error naming it (status 2), not a crash."""
    done = fb("demo", "--dir", str(cache.parent), "--total-mib", "1", "--quiet")
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert "another live store" in done.stderr


# -- verify on a location that is not fb's ---------------------------------------------------


def test_verify_refuses_a_directory_that_is_not_an_fb_location(
    cache: Path, dead_cache: list[UUID]
) -> None:
    """The parent of a cache holds no blob, lock or marker of its own: status 2, not 0/0 sound."""
    done = fb("verify", str(cache.parent), "--quiet")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not an fb location" in done.stderr
    assert "--allow-empty" in done.stderr
    assert "sound" not in done.stdout
    assert fb("verify", str(cache.parent), "--json").returncode == 2


def test_verify_names_the_open_pool_sessions_of_a_bucket_root(tmp_path: Path) -> None:
    """Above open_pool's session prefixes, the error names them: each is a location to verify."""
    session = f"fb-{'ab' * 16}"
    (tmp_path / session / "ab").mkdir(parents=True)
    (tmp_path / session / "ab" / ("ab" * 16)).write_bytes(b"a blob, as far as names go")
    done = fb("verify", str(tmp_path))
    assert done.returncode == 2
    assert "open_pool session prefix" in done.stderr
    assert session in done.stderr


def test_verify_allow_empty_accepts_an_empty_directory(tmp_path: Path) -> None:
    """--allow-empty turns a location with nothing of fb's into an empty, sound one."""
    report = fb_json("verify", str(tmp_path), "--allow-empty")
    assert report["checked"] == 0
    assert report["corrupt"] == []


def test_verify_accepts_empty_fb_locations(
    tmp_path: Path, persisted: tuple[Path, list[UUID]]
) -> None:
    """A cache with only its lock file, or a persist location with only its marker, is fb's."""
    persist, _ = persisted
    for child in persist.iterdir():
        if child.is_dir():
            for blob in child.iterdir():
                blob.unlink()
    assert fb_json("verify", str(persist))["checked"] == 0
    assert fb_json("verify", str(tmp_path / "work"))["checked"] == 0  # the pool's own cache
