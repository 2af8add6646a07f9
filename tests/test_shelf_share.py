"""fb.Shelf between real processes: a writer and a reader at once, and a writer killed mid-set."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fb import Shelf
from tests.conftest import TIMEOUT
from tests.shelf_child import check_value, value_for

CHILD = str(Path(__file__).resolve().parent / "shelf_child.py")
SIZE = 64 * 1024


def child(location: Path | str, mode: str, *options: str) -> subprocess.Popen[str]:
    """Start the shelf child in a fresh interpreter."""
    return subprocess.Popen(
        [sys.executable, "-W", "error", CHILD, str(location), mode, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 90.0) -> tuple[int, str, str]:
    """Wait for ``process``; return its exit code, output and errors."""
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_a_reader_process_sees_only_whole_values_a_writer_process_sets(tmp_path: Path) -> None:
    """One process sets names in a loop while another reads and checks every value it gets."""
    location = tmp_path / "shelf"
    with Shelf[Any](location, max_items=1):
        pass  # created once, so the two children race on nothing but the names
    rounds = 25
    reader = child(location, "read", "--names", "4", "--until", str(rounds - 1))
    writer = child(location, "write", "--names", "4", "--rounds", str(rounds), "--size", str(SIZE))
    code, out, err = finish(writer)
    assert code == 0, err
    assert out.count("set ") == 4 * rounds
    code, out, err = finish(reader)
    assert code == 0, err + out
    _, count, seen = out.split()
    assert int(count) > 0
    assert int(seen) >= 1
    with Shelf[Any](location, max_items=1) as shelf:
        for index in range(4):
            assert shelf[f"n{index}"] == value_for(rounds - 1, index, SIZE)


KILLS = {
    # killed after the blob was linked at the location, before the record was renamed
    "files-before-the-record": ("files", "os.replace:7:before:/names/"),
    # killed after the record was renamed: the set is complete
    "files-after-the-record": ("files", "os.replace:7:after:/names/"),
    # SQLite: killed after the blob was linked at the location, before the row was written
    "sqlite-before-the-record": ("sqlite", "os.link:7:after:/cache/"),
    # SQLite: killed after the row of the 7th set, as the 8th begins
    "sqlite-after-the-record": ("sqlite", "os.replace:8:before:/cache/"),
    # killed before the blob reached the location
    "before-the-blob-link": ("sqlite", "os.link:7:before:/cache/"),
    # killed while the cache blob was being written
    "mid-cache-write": ("sqlite", "os.replace:7:before:/cache/"),
}


@pytest.mark.parametrize(("kind", "kill"), list(KILLS.values()), ids=list(KILLS))
def test_a_writer_killed_mid_set_leaves_every_name_absent_or_whole(
    tmp_path: Path, kind: str, kill: str
) -> None:
    """After a SIGKILL inside a set, a new shelf finds each name absent or bit-exact."""
    location = tmp_path / "shelf"
    process = child(
        location, "write", "--names", "3", "--rounds", "5", "--kill", kill, "--index", kind
    )
    code, out, err = finish(process)
    assert code == -signal.SIGKILL, err
    done = [tuple(map(int, line.split()[1:])) for line in out.splitlines()]
    assert len(done) < 15
    last = {index: round_ for round_, index in done}
    with Shelf[Any](location, max_items=1) as shelf:
        for index in range(3):
            value = shelf.get(f"n{index}")
            if index not in last:
                # never printed: absent, or the set that was killed after its record
                assert value is None or check_value(value, index) == 0
                continue
            assert value is not None
            round_ = check_value(value, index)
            assert round_ in (last[index], last[index] + 1)
            assert value == value_for(round_, index, 1000)
        shelf["after"] = b"the shelf stays usable"
        assert shelf["after"] == b"the shelf stays usable"
    # No blob at the location is left unnamed but the one a killed set placed.
    with Shelf[Any](location, max_items=1) as shelf:
        names = len(shelf)
    blobs = list((location / "blobs").glob("??/*"))
    assert len(blobs) - names in (0, 1)


def test_a_name_replaced_in_a_tight_loop_never_looks_absent(tmp_path: Path) -> None:
    """A reader of a name another shelf keeps replacing always gets a whole value."""
    location = tmp_path / "shelf"
    stop = threading.Event()
    errors: list[BaseException] = []
    with Shelf[Any](location, max_items=0) as writer, Shelf[Any](location, max_items=0) as reader:
        writer["hot"] = value_for(0, 0, 1000)

        def write() -> None:
            try:
                round_ = 1
                while not stop.is_set():
                    writer["hot"] = value_for(round_, 0, 1000)
                    round_ += 1
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            # At least 300 reads, and on until a set of the writer has been seen (a busy
            # machine may run them all before the writer's first set lands): bounded.
            rounds: set[int] = set()
            reads = 0
            deadline = time.monotonic() + TIMEOUT
            while (reads < 300 or len(rounds) < 2) and time.monotonic() < deadline:
                rounds.add(check_value(reader["hot"], 0))
                reads += 1
        finally:
            stop.set()
            thread.join(30)
    assert errors == []
    assert len(rounds) > 1


@pytest.mark.parametrize("after", [3, 17, 40])
def test_a_writer_killed_at_any_moment_leaves_every_name_absent_or_whole(
    tmp_path: Path, after: int
) -> None:
    """SIGKILL sent by the parent while the writer is busy: every name is absent or whole."""
    location = tmp_path / "shelf"
    size = 256 * 1024
    process = child(location, "write", "--names", "5", "--rounds", "1000", "--size", str(size))
    assert process.stdout is not None
    done: list[tuple[int, int]] = []
    for line in process.stdout:
        done.append(tuple(map(int, line.split()[1:])))  # type: ignore[arg-type]
        if len(done) == after:
            process.kill()  # SIGKILL, wherever the writer is in its next set
            break
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    last = {index: round_ for round_, index in done}
    with Shelf[Any](location, max_items=1) as shelf:
        for index in range(5):
            value = shelf.get(f"n{index}")
            if value is None:
                assert index not in last
                continue
            round_ = check_value(value, index)
            assert round_ >= last.get(index, 0)
            assert value == value_for(round_, index, size)
