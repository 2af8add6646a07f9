"""fb.Shelf's SQLite name index on local disk: the kind a location keeps, hostile files, errors."""

from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fb import Shelf
from fb._shelf_layout import network_filesystem
from fb.exceptions import UnsafeLocationError
from tests.fds import open_files_under


@pytest.fixture(name="location")
def fixture_location(tmp_path: Path) -> Path:
    """Where the test's shelf lives (not created yet)."""
    return tmp_path / "shelf"


def test_a_new_local_shelf_keeps_its_names_in_one_database(location: Path) -> None:
    """Sets write rows of names.db, not a file per name; another shelf reads them."""
    with Shelf[Any](location, max_items=1) as shelf:
        for i in range(20):
            shelf[f"n{i}"] = i
    assert not (location / "names").exists()
    db = sqlite3.connect(location / "names.db")
    try:
        (count,) = db.execute("SELECT count(*) FROM names").fetchone()
    finally:
        db.close()
    assert count == 20
    with Shelf[Any](location, max_items=1) as shelf:
        assert sorted(shelf) == sorted(f"n{i}" for i in range(20))
        assert shelf["n7"] == 7


def test_a_location_keeps_the_index_it_was_made_with(location: Path, tmp_path: Path) -> None:
    """The marker fixes the kind: "auto" follows it, naming the other kind is a ValueError."""
    with Shelf[Any](location, max_items=1, index="files") as shelf:
        shelf["a"] = 1
    with Shelf[Any](location, max_items=1) as shelf:  # auto: record files, as made
        shelf["b"] = 2
        assert sorted(shelf) == ["a", "b"]
    assert len(os.listdir(location / "names")) == 2
    assert not (location / "names.db").exists()
    with pytest.raises(ValueError, match="'files'"):
        Shelf[Any](location, max_items=1, index="sqlite")
    other = tmp_path / "other"
    with Shelf[Any](other, max_items=1, index="sqlite") as shelf:
        shelf["a"] = 1
    with pytest.raises(ValueError, match="'sqlite'"):
        Shelf[Any](other, max_items=1, index="files")
    with pytest.raises(ValueError, match="index must be one of"):
        Shelf[Any](tmp_path / "third", max_items=1, index="lmdb")


def test_a_link_planted_as_the_index_is_refused(location: Path, tmp_path: Path) -> None:
    """A symbolic link at names.db (or its log) is never followed: UnsafeLocationError."""
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = 1
    (location / "names.db-wal").unlink(missing_ok=True)
    (location / "names.db-wal").symlink_to(target)
    with pytest.raises(UnsafeLocationError, match=r"names\.db-wal"):
        Shelf[Any](location, max_items=1)
    assert target.read_bytes() == b""
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o700)
    (fresh / "names.db").symlink_to(target)
    with pytest.raises(UnsafeLocationError, match=r"names\.db"):
        Shelf[Any](fresh, max_items=1)
    assert target.read_bytes() == b""


def test_a_damaged_index_is_an_os_error_naming_it(location: Path) -> None:
    """An index that is not a database raises OSError with its path; the blobs stay, and
    the failed open leaves no connection (no file descriptor) behind."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = b"x" * 1000
    blobs = sorted((location / "blobs").glob("??/*"))
    for name in ("names.db-wal", "names.db-shm"):
        (location / name).unlink(missing_ok=True)
    (location / "names.db").write_bytes(b"not a database at all" * 200)
    with pytest.raises(OSError, match=r"names\.db") as info:
        Shelf[Any](location, max_items=1)
    assert not isinstance(info.value, UnsafeLocationError)
    assert sorted((location / "blobs").glob("??/*")) == blobs
    assert open_files_under(location) == []  # the traceback in `info` keeps every frame


def test_reads_by_other_threads_and_shelves_see_each_set(location: Path) -> None:
    """Each thread has its own connection; every set is seen by the next get anywhere."""
    with Shelf[Any](location, max_items=2) as writer, Shelf[Any](location, max_items=2) as reader:

        def work(offset: int) -> None:
            for i in range(50):
                writer[f"t{offset}-{i}"] = i
                assert reader[f"t{offset}-{i}"] == i

        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(work, t) for t in range(4)]:
                future.result(timeout=60)  # re-raises what failed in the thread
        assert len(reader) == 200


@pytest.mark.parametrize(
    ("mountinfo", "network"),
    [
        ("22 1 8:1 / / rw - ext4 /dev/vda rw\n", False),
        ("22 1 8:1 / / rw - ext4 /dev/vda rw\n40 22 0:50 / /mnt/data rw - nfs4 srv:/d rw\n", True),
        ("22 1 8:1 / / rw - ext4 /dev/vda rw\n40 22 0:50 / /mnt/dat rw - nfs4 srv:/d rw\n", False),
        ("22 1 8:1 / / rw - xfs /dev/vda rw\n41 22 0:51 / /mnt rw - fuse.sshfs h:/ rw\n", True),
        ("22 1 8:1 / / rw - cifs //h/s rw\n40 22 8:2 / /mnt/data rw - ext4 /dev/b rw\n", False),
    ],
)
def test_a_network_filesystem_is_told_from_mountinfo(mountinfo: str, network: bool) -> None:
    """The longest mount point above a path decides; NFS, SMB and FUSE count as network."""
    assert network_filesystem("/mnt/data/cache", mountinfo) is network


def test_connections_of_ended_threads_are_closed(location: Path) -> None:
    """Gets from many short-lived threads keep one connection per live thread, not per thread."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = 1
        seen: list[int] = []
        for _ in range(20):
            thread = threading.Thread(target=lambda: seen.append(shelf["a"]))
            thread.start()
            thread.join(30)
        assert seen == [1] * 20
        index = shelf._index
        assert len(index._connections) <= 2  # type: ignore[union-attr]  # this thread's and the last
