"""fb.Shelf on local disk: the mapping, guards, restarts, names, size limit and expiry."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import fb
from fb import Shelf, _shelf_layout
from fb._shelf_index import name_digest
from fb.exceptions import (
    CodecError,
    CorruptBlobError,
    ForeignLocationError,
    InvalidKeyError,
    StoreClosedError,
)


@pytest.fixture(name="index_kind", autouse=True, params=["sqlite", "files"])
def fixture_index_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both name indexes: SQLite (local disk) and record files.

    Record files are what a shelf on a network filesystem keeps: the test's directory is
    made to look like one.
    """
    if request.param == "files":
        monkeypatch.setattr(_shelf_layout, "network_filesystem", lambda path: True)
    return str(request.param)


@pytest.fixture(name="location")
def fixture_location(tmp_path: Path) -> Path:
    """Where the test's shelf lives (not created yet)."""
    return tmp_path / "shelf"


def _record_count(location: Path, kind: str) -> int:
    """How many names the shelf at ``location`` has records for, expired ones included."""
    if kind == "files":
        return len([n for n in os.listdir(location / "names") if not n.startswith(".")])
    db = sqlite3.connect(location / "names.db")
    try:
        (count,) = db.execute("SELECT count(*) FROM names").fetchone()
    finally:
        db.close()
    return int(count)


def _set_accessed(location: Path, kind: str, name: str, when: float) -> None:
    """Make storage say ``name`` was last read at ``when``."""
    if kind == "files":
        os.utime(location / "names" / name_digest(name), (when, when))
        return
    db = sqlite3.connect(location / "names.db", isolation_level=None)
    try:
        db.execute("UPDATE names SET accessed = ?, created = ? WHERE name = ?", (when, when, name))
    finally:
        db.close()


@pytest.fixture(name="shelf")
def fixture_shelf(location: Path) -> Iterator[Shelf[object]]:
    """A shelf on a fresh local directory, closed after the test."""
    with Shelf[Any](location, max_items=8) as shelf:
        yield shelf


def test_a_set_value_reads_back(shelf: Shelf[object]) -> None:
    """A value set under a name is what a get of that name returns."""
    shelf["features/2026-12"] = {"rows": [1, 2, 3]}
    assert shelf["features/2026-12"] == {"rows": [1, 2, 3]}


def test_the_mapping_methods_work_like_a_dict(shelf: Shelf[object]) -> None:
    """contains, len, iter, get, pop, setdefault and del behave as on a dict."""
    shelf["a"] = 1
    shelf["b"] = 2
    assert "a" in shelf
    assert "z" not in shelf
    assert 3 not in shelf  # type: ignore[comparison-overlap]
    assert "" not in shelf
    assert len(shelf) == 2
    assert sorted(shelf) == ["a", "b"]
    assert shelf.get("z", "default") == "default"
    assert shelf.pop("a") == 1
    assert "a" not in shelf
    assert shelf.setdefault("c", 3) == 3
    assert shelf.setdefault("c", 4) == 3
    del shelf["b"]
    assert sorted(shelf) == ["c"]
    with pytest.raises(KeyError):
        shelf["b"]
    with pytest.raises(KeyError):
        del shelf["b"]


def test_replacing_a_name_deletes_its_old_blob(shelf: Shelf[object], location: Path) -> None:
    """A second set of one name leaves one blob at the location, the new one."""
    shelf["x"] = b"old" * 1000
    shelf["x"] = b"new" * 1000
    blobs = list((location / "blobs").glob("??/*"))
    assert len(blobs) == 1
    assert shelf["x"] == b"new" * 1000


def test_a_restart_finds_every_name(location: Path) -> None:
    """A new shelf on the same directory sees every name set before, bit-exact."""
    values = {f"item/{i}": os.urandom(1000 + i) for i in range(20)}
    with Shelf[Any](location, max_items=2) as shelf:
        for name, value in values.items():
            shelf[name] = value
        shelf.sync()
    with Shelf[Any](location, max_items=2) as again:
        assert sorted(again) == sorted(values)
        for name, value in values.items():
            assert again[name] == value


def test_the_load_guard_pins_the_value(shelf: Shelf[object]) -> None:
    """load() returns a read guard whose value stays in memory while it is held."""
    shelf["pinned"] = b"p" * 100
    for i in range(20):
        shelf[f"other/{i}"] = i  # pushes "pinned" out of an 8-item pool, unless pinned
    with shelf.load("pinned") as value:
        for i in range(20):
            shelf[f"more/{i}"] = i
        assert value == b"p" * 100
        assert shelf.pool.statistics().resident_items > 8
    with pytest.raises(KeyError):
        shelf.load("absent")


def test_async_twins_work(shelf: Shelf[object]) -> None:
    """aset, aget, aload, acontains, adelete and async_ do what their sync names do."""

    async def main() -> None:
        await shelf.aset("a", [1, 2])
        assert await shelf.aget("a") == [1, 2]
        assert await shelf.aget("missing", "d") == "d"
        async with shelf.aload("a") as value:
            assert value == [1, 2]
        assert await shelf.acontains("a")
        await shelf.async_()
        await shelf.adelete("a")
        assert not await shelf.acontains("a")

    asyncio.run(main())


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs", "a/../../b", ".fb-shelf", "\x00"])
def test_a_name_is_never_a_path(
    shelf: Shelf[object], location: Path, name: str, index_kind: str
) -> None:
    """A name that looks like a path is a row of names.db, or a file named by its hash."""
    shelf[name] = b"v"
    assert shelf[name] == b"v"
    if index_kind == "files":
        assert os.listdir(location / "names") == [name_digest(name)]
        assert sorted(os.listdir(location)) == [".fb-shelf", "blobs", "cache", "names"]
    else:
        assert sorted(os.listdir(location)) == [
            ".fb-shelf",
            "blobs",
            "cache",
            "names.db",
            "names.db-shm",
            "names.db-wal",
        ]
        assert _record_count(location, index_kind) == 1
    assert len(list((location / "blobs").glob("??/*"))) == 1


@pytest.mark.parametrize(
    ("name", "error"),
    [(b"bytes", TypeError), (1, TypeError), ("", InvalidKeyError), ("x" * 5000, InvalidKeyError)],
)
def test_bad_names_raise_typed_errors(shelf: Shelf[object], name: object, error: type) -> None:
    """A name that is not a non-empty string of at most 4096 bytes is refused, naming it."""
    with pytest.raises(error):
        shelf[name] = 1  # type: ignore[index]
    with pytest.raises(error):
        shelf[name]  # type: ignore[index]


def test_the_shelf_directory_is_created_private(location: Path, index_kind: str) -> None:
    """A new shelf directory and its subdirectories are mode 0700, its index files 0600."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = 1
        if index_kind == "sqlite":
            for name in ("names.db", "names.db-wal", "names.db-shm"):
                assert stat.S_IMODE((location / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(location.stat().st_mode) == 0o700
    subs = ("names", "blobs", "cache") if index_kind == "files" else ("blobs", "cache")
    for sub in subs:
        assert stat.S_IMODE((location / sub).stat().st_mode) == 0o700


def test_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    """A non-empty directory that is not a shelf is never adopted."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ForeignLocationError, match=r"notes\.txt"):
        Shelf[Any](tmp_path, max_items=1)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_mistyped_keyword_suggests_the_parameter(location: Path) -> None:
    """An unknown keyword is a TypeError naming the close parameter, or the options mapping."""
    with pytest.raises(TypeError, match="did you mean 'size_limit'"):
        Shelf[Any](location, size_limt=10)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="storage_options="):
        Shelf[Any](location, anon=True)  # type: ignore[call-arg]


def test_a_closed_shelf_refuses_work(location: Path) -> None:
    """After close(), gets and sets raise StoreClosedError; close() is idempotent."""
    shelf: Shelf[int] = Shelf[Any](location, max_items=1)
    shelf["a"] = 1
    shelf.close()
    shelf.close()
    with pytest.raises(StoreClosedError):
        shelf["a"]
    with pytest.raises(StoreClosedError):
        shelf["b"] = 2
    assert list((location / "cache").glob("*/??/*")) == []


def test_sync_makes_sets_durable_without_error(shelf: Shelf[object]) -> None:
    """sync() after sets and deletes leaves nothing waiting for the next barrier."""
    shelf["a"] = 1
    shelf["b"] = 2
    del shelf["a"]
    shelf.sync()
    assert shelf._tracked.unsynced == 0
    assert not getattr(shelf._index, "_unsynced", None)  # record files
    assert not getattr(shelf._index, "_pending", None)  # SQLite: access times written


def test_size_limit_removes_least_recently_used_names(location: Path, index_kind: str) -> None:
    """Past size_limit, the names read or set least recently are removed first."""
    with Shelf[Any](location, max_items=2, size_limit=11_000) as shelf:
        for i in range(4):
            shelf[f"n{i}"] = os.urandom(2000)
        assert len(shelf) == 4
        past = time.time() - 100
        for i in range(4):
            _set_accessed(location, index_kind, f"n{i}", past + i)
        shelf._accessed.clear()
        shelf["n0"]  # read: n0 becomes the most recently used
        shelf["n4"] = os.urandom(4000)  # 12.3 KB stored with headers: n1 must go
        assert sorted(shelf) == ["n0", "n2", "n3", "n4"]
        assert len(list((location / "blobs").glob("??/*"))) == 4


def test_size_limit_never_removes_a_guarded_name(location: Path) -> None:
    """A name held by a live guard of this shelf survives a cull that would remove it."""
    with Shelf[Any](location, max_items=2, size_limit=5_000) as shelf:
        shelf["held"] = os.urandom(3000)
        with shelf.load("held") as value:
            shelf["new"] = os.urandom(3000)
            assert "held" in shelf
            assert len(value) == 3000
        shelf["newer"] = os.urandom(3000)
        assert "held" not in shelf


def test_expired_names_are_absent_and_culled(location: Path, index_kind: str) -> None:
    """A name past its expiry is not found, not listed, and cull() removes it."""
    with Shelf[Any](location, max_items=2, expire=3600) as shelf:
        shelf.set("short", 1, expire=0.001)
        shelf["long"] = 2
        deadline = time.monotonic() + 5
        while "short" in shelf and time.monotonic() < deadline:
            time.sleep(0.001)  # waiting for the clock to pass the expiry, not for a thread
        with pytest.raises(KeyError):
            shelf["short"]
        assert list(shelf) == ["long"]
        assert shelf.cull() == 1
        assert _record_count(location, index_kind) == 1


def test_bad_budgets_and_limits_raise(location: Path) -> None:
    """A negative size_limit or a non-positive expire is a ValueError."""
    with pytest.raises(ValueError, match="size_limit"):
        Shelf[Any](location, size_limit=-1)
    with pytest.raises(ValueError, match="expire"):
        Shelf[Any](location, expire=0)


def test_a_reader_keeps_its_value_when_another_shelf_replaces_it(location: Path) -> None:
    """A guard on a value survives another shelf replacing the name and deleting its blob."""
    with Shelf[Any](location, max_items=0) as writer, Shelf[Any](location, max_items=0) as reader:
        writer["x"] = b"one" * 1000
        with reader.load("x") as value:
            writer["x"] = b"two" * 1000
            assert value == b"one" * 1000
        assert reader["x"] == b"two" * 1000


def test_concurrent_threads_read_and_write_consistent_values(shelf: Shelf[object]) -> None:
    """Threads setting and getting one name each see a whole value someone set."""

    def work(n: int) -> None:
        for i in range(30):
            shelf["shared"] = (n, i, bytes([n]) * 1000)
            got = shelf["shared"]
            assert isinstance(got, tuple)
            assert got[2] == bytes([got[0]]) * 1000

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(work, n) for n in range(4)]:
            future.result(timeout=60)  # re-raises what failed in the thread
    assert len(list(shelf)) == 1


def test_a_dead_shelfs_cache_directory_is_taken_over(location: Path) -> None:
    """The next open reuses one cache directory a dead process left and removes the others."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = b"x"
    for name in ("0" * 32, "1" * 32):
        dead = location / "cache" / name
        dead.mkdir()
        (dead / ".fb-lock").touch()
    with Shelf[Any](location, max_items=1) as shelf:
        caches = os.listdir(location / "cache")
        assert len(caches) == 1
        assert shelf["a"] == b"x"
    assert list((location / "cache").glob("*/??/*")) == []  # no blob left in a cache


def test_shelf_is_exported() -> None:
    """fb.Shelf is public and listed in __all__."""
    assert fb.Shelf is Shelf
    assert "Shelf" in fb.__all__
    assert fb.__all__ == sorted(fb.__all__)


def test_a_signed_shelf_refuses_values_signed_with_another_key(location: Path) -> None:
    """With secret_key, a shelf opened with another key raises CorruptBlobError on load."""
    with Shelf[Any](location, max_items=0, secret_key="k" * 32) as shelf:
        shelf["a"] = [1, 2, 3]
    with Shelf[Any](location, max_items=0, secret_key="k" * 32) as shelf:
        assert shelf["a"] == [1, 2, 3]
    with (
        Shelf[Any](location, max_items=0, secret_key="x" * 32) as other,
        pytest.raises(CorruptBlobError),
    ):
        other["a"]
    with (
        Shelf[Any](location, max_items=0, codec="json") as unsigned,
        pytest.raises((CorruptBlobError, CodecError)),
    ):
        unsigned["a"]


# Record files only: SQLite rolls a killed commit back and leaves no file behind.
@pytest.mark.parametrize("index_kind", ["files"], indirect=True)
def test_old_record_temporaries_are_swept_on_open(location: Path, index_kind: str) -> None:
    """A record temporary a killed writer left is deleted by the next open once it is old."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = 1
    old = location / "names" / f".{name_digest('b')}.0badf00d.tmp"
    young = location / "names" / f".{name_digest('c')}.0badf00d.tmp"
    old.write_bytes(b"{}")
    young.write_bytes(b"{}")
    past = time.time() - 7200
    os.utime(old, (past, past))
    with Shelf[Any](location, max_items=1) as shelf:
        assert not old.exists()
        assert young.exists()
        assert list(shelf) == ["a"]


def test_sets_below_the_size_limit_rarely_list_the_index(location: Path) -> None:
    """With size_limit, a set lists the index only every 64 sets while under the limit."""
    with Shelf[Any](location, max_items=1, size_limit=10**9) as shelf:
        scans = []
        original = shelf._index.scan

        def counting() -> list[Any]:
            scans.append(1)
            return original()

        shelf._index.scan = counting  # type: ignore[method-assign]
        for i in range(130):
            shelf[f"n{i}"] = i
        assert 2 <= len(scans) <= 4


def test_a_cull_counts_what_another_shelf_stored(location: Path) -> None:
    """Blobs another shelf (process) stored count against the limit at the next listing."""
    with (
        Shelf[Any](location, max_items=1) as other,
        Shelf[Any](location, max_items=1, size_limit=20_000) as shelf,
    ):
        shelf["mine"] = os.urandom(1000)
        for i in range(5):
            other[f"theirs/{i}"] = os.urandom(5000)
        assert len(shelf) == 6
        assert shelf.cull() >= 1
        assert sum(1 for _ in shelf) < 6


def test_idle_handles_are_closed_past_cache_bytes(location: Path) -> None:
    """Names no longer in memory keep cache blobs only up to cache_bytes, oldest dropped first."""
    with Shelf[Any](location, max_items=1, cache_bytes=50_000) as shelf:
        for i in range(100):
            shelf[f"n{i}"] = os.urandom(2000)
        shelf.store.finished()  # closed handles' cache blobs are deleted in the background
        cached = list((location / "cache").glob("*/??/*"))
        assert len(cached) * 2000 <= 50_000 + 2 * 2100
        assert len(shelf._live) < 100
        assert "n99" in shelf._live  # the most recent stay
        assert shelf["n0"] is not None  # a dropped one loads again
    with pytest.raises(ValueError, match="cache_bytes"):
        Shelf[Any](location, cache_bytes=-1)


def test_refresh_serves_hot_names_without_reading_their_record(location: Path) -> None:
    """With refresh=, a get within that time answers from memory; without, it sees others' sets."""
    with (
        Shelf[Any](location, max_items=4) as writer,
        Shelf[Any](location, max_items=4, refresh=3600) as lazy,
        Shelf[Any](location, max_items=4) as strict,
    ):
        writer["x"] = 1
        assert lazy["x"] == 1
        assert strict["x"] == 1
        writer["x"] = 2
        assert strict["x"] == 2  # every get reads the record
        assert lazy["x"] == 1  # read within the last hour: served from memory
    with pytest.raises(ValueError, match="refresh"):
        Shelf[Any](location, refresh=-1)


def test_a_shelf_works_on_any_fsspec_filesystem() -> None:
    """A memory:// shelf stores, lists, reopens and culls like a local one."""
    url = f"memory://shelf-{uuid.uuid4().hex}"
    with Shelf[Any](url, max_items=1) as shelf:
        shelf["a"] = b"x" * 1000
        shelf["b"] = 2
        assert sorted(shelf) == ["a", "b"]
    with Shelf[Any](url, max_items=1, size_limit=100) as shelf:
        assert shelf["a"] == b"x" * 1000
        shelf["c"] = b"y" * 10
        assert sorted(shelf) == ["c"]
