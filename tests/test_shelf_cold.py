"""fb.Shelf's cold path on local disk: gets of names not in memory, straight from the location."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import Shelf
from fb._shelf_index import Record, name_digest
from fb.exceptions import CorruptBlobError


@pytest.fixture(name="location")
def fixture_location(tmp_path: Path) -> Path:
    """Where the test's shelf lives (not created yet)."""
    return tmp_path / "shelf"


@pytest.fixture(name="decodes")
def fixture_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the records decoded from storage during the test, in order."""
    seen: list[str] = []
    original = Record.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Record], data: bytes, accessed: float) -> Record | None:
        record: Record | None = original(cls, data, accessed)
        if record is not None:
            seen.append(record.name)
        return record

    monkeypatch.setattr(Record, "decode", classmethod(counting))
    return seen


def _cached_blobs(location: Path) -> list[Path]:
    return [p for p in (location / "cache").glob("*/??/*") if not p.name.startswith(".")]


def _on_load(shelf: Shelf[Any], hook: Callable[[UUID], None]) -> None:
    """Run ``hook(key)`` before every blob load of ``shelf`` (on the loading thread)."""
    strategy = shelf.store.strategy
    original = strategy.load

    def load(key: UUID) -> Any:
        hook(key)
        return original(key)

    strategy.load = load  # type: ignore[method-assign]


def test_a_cold_get_links_nothing_into_the_cache(location: Path) -> None:
    """A get of a name not in memory reads its blob where it is: no link or copy per get."""
    with Shelf[Any](location, max_items=4) as shelf:
        for i in range(3):
            shelf[f"n{i}"] = os.urandom(5000)
    with Shelf[Any](location, max_items=4) as shelf:
        for i in range(3):
            assert len(shelf[f"n{i}"]) == 5000
        shelf.store.finished()
        assert _cached_blobs(location) == []
        assert all(p.stat().st_nlink == 1 for p in (location / "blobs").glob("??/*"))


def test_a_value_evicted_after_a_cold_get_loads_again(location: Path) -> None:
    """A name read cold, pushed out of memory by others, loads again bit-exact."""
    values = {f"n{i}": os.urandom(3000 + i) for i in range(5)}
    with Shelf[Any](location, max_items=1) as shelf:
        for name, value in values.items():
            shelf[name] = value
    with Shelf[Any](location, max_items=1) as shelf:
        for _ in range(2):
            for name, value in values.items():
                assert shelf[name] == value
        assert shelf.pool.statistics().resident_items == 1


def test_a_cold_get_sees_a_name_another_shelf_replaced(location: Path) -> None:
    """A get sees a value another shelf set, of the same size (so a record of the same size)."""
    with Shelf[Any](location, max_items=0) as writer, Shelf[Any](location, max_items=4) as reader:
        for round_ in range(20):
            value = bytes([round_]) * 4000
            writer["x"] = value
            assert reader["x"] == value
            assert reader["x"] == value  # served from memory: the record did not change


def test_a_repeated_get_of_an_unchanged_name_decodes_no_record(
    location: Path, decodes: list[str]
) -> None:
    """With record files a stat tells a get that a record has not changed: not read again."""
    with Shelf[Any](location, max_items=1, index="files") as shelf:
        shelf["a"] = b"a" * 100
        shelf["b"] = b"b" * 100
    decodes.clear()
    with Shelf[Any](location, max_items=1, index="files") as shelf:
        for _ in range(3):
            assert shelf["a"] == b"a" * 100  # "b" pushes "a" out of memory: a cold get
            assert shelf["b"] == b"b" * 100
        shelf["c"] = 1
        assert shelf["c"] == 1  # this shelf's own set is known without a read
    assert sorted(decodes) == ["a", "b"]


def test_a_blob_replaced_between_record_and_load_gives_the_new_value(location: Path) -> None:
    """A get whose blob another shelf replaced after the record was read reads the record again."""
    with Shelf[Any](location, max_items=1) as writer:
        writer["x"] = b"old" * 1000
        with Shelf[Any](location, max_items=1) as reader:
            replaced: list[UUID] = []

            def replace_once(key: UUID) -> None:
                if not replaced:
                    replaced.append(key)
                    writer["x"] = b"new" * 1000  # deletes the blob the reader is about to load

            _on_load(reader, replace_once)
            assert reader["x"] == b"new" * 1000
            assert len(replaced) == 1


def test_a_blob_deleted_between_record_and_load_is_a_key_error(location: Path) -> None:
    """A get whose name another shelf deleted after the record was read raises KeyError."""
    with Shelf[Any](location, max_items=1) as writer:
        writer["x"] = b"old" * 1000
        with Shelf[Any](location, max_items=1) as reader:

            def delete(key: UUID) -> None:
                if "x" in writer:
                    del writer["x"]

            _on_load(reader, delete)
            with pytest.raises(KeyError):
                reader["x"]
            assert reader.get("x") is None


def test_a_signed_shelf_refuses_an_unsigned_blob_on_a_cold_get(location: Path) -> None:
    """A blob another shelf wrote without the secret key is refused on the cold path too."""
    with Shelf[Any](location, max_items=1) as unsigned:
        unsigned["a"] = [1, 2, 3]
    with Shelf[Any](location, max_items=1, secret_key="k" * 32) as signed:
        with pytest.raises(CorruptBlobError, match=r"not signed|signature"):
            signed["a"]
        signed["b"] = [4, 5]
    with Shelf[Any](location, max_items=1, secret_key="k" * 32) as signed:
        assert signed["b"] == [4, 5]


def test_an_altered_blob_is_refused_on_a_cold_get(location: Path) -> None:
    """A blob altered at the location raises CorruptBlobError naming it, never a wrong value."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = b"z" * 5000
    (blob,) = (location / "blobs").glob("??/*")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with Shelf[Any](location, max_items=1) as shelf, pytest.raises(CorruptBlobError) as info:
        shelf["a"]
    assert blob.name in str(info.value)


def test_records_of_two_quick_sets_differ_in_identity(location: Path) -> None:
    """Two sets of one name write records a stat tells apart, even of one size in one instant."""
    with Shelf[Any](location, max_items=1, index="files") as shelf:
        record = location / "names" / name_digest("x")
        idents = set()
        for i in range(10):
            shelf["x"] = i
            st = record.stat()
            idents.add((st.st_ino, st.st_mtime_ns, st.st_size))
        assert len(idents) == 10


def test_an_async_get_of_a_replaced_blob_gives_the_new_value(location: Path) -> None:
    """aload reads the record again when its blob was replaced after the record was read."""
    with Shelf[Any](location, max_items=1) as writer:
        writer["x"] = b"old" * 1000
        with Shelf[Any](location, max_items=1) as reader:
            replaced: list[UUID] = []

            def replace_once(key: UUID) -> None:
                if not replaced:
                    replaced.append(key)
                    writer["x"] = b"new" * 1000

            _on_load(reader, replace_once)

            async def get() -> Any:
                async with reader.aload("x") as value:
                    return value

            assert asyncio.run(get()) == b"new" * 1000
            assert len(replaced) == 1


def test_a_set_links_its_blob_without_per_blob_checks(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a shard is checked, a set into it places its blob with no lstat or probe."""
    with Shelf[Any](location, max_items=4) as shelf:
        for i in range(300):  # most shards of blobs/ placed into (and checked) once
            shelf[f"warm{i}"] = i
        checked = {p.name for p in (location / "blobs").iterdir() if p.is_dir()}
        lstats: list[str] = []
        original = os.lstat

        def counting(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            lstats.append(os.fspath(path))
            return original(path, *args, **kwargs)

        monkeypatch.setattr(os, "lstat", counting)
        for i in range(20):
            shelf[f"n{i}"] = i
        monkeypatch.undo()
        placed = [p for p in (location / "blobs").glob("??/*") if p.parent.name in checked]
        assert len(placed) > 300  # some of the 20 sets went to checked shards
        assert [p for p in lstats if "/blobs/" in p and p.split("/blobs/")[1][:2] in checked] == []
        for i in range(20):
            assert shelf[f"n{i}"] == i


def test_a_record_with_a_coarse_mtime_is_read_on_every_get(
    location: Path, decodes: list[str]
) -> None:
    """A record whose mtime is whole milliseconds (a coarse filesystem) is never known by stat."""
    with Shelf[Any](location, max_items=4, index="files") as shelf:
        shelf["a"] = 1
        record = location / "names" / name_digest("a")
        coarse = (time.time_ns() // 1_000_000) * 1_000_000
        os.utime(record, ns=(coarse, coarse))
        decodes.clear()
        for _ in range(3):
            assert shelf["a"] == 1
        assert decodes == ["a", "a", "a"]


def test_a_reader_never_sees_a_name_go_back_to_an_older_value(location: Path) -> None:
    """Gets of a name another shelf keeps replacing (same sizes) see its rounds in order."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with Shelf[Any](location, max_items=0) as writer, Shelf[Any](location, max_items=4) as reader:
        writer["hot"] = (0, b"v" * 1000)

        def write() -> None:
            try:
                round_ = 1
                while not stop.is_set() and round_ < 100_000:
                    writer["hot"] = (round_, b"v" * 1000)
                    round_ += 1
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            last, seen = -1, set[int]()
            deadline = time.monotonic() + 60
            while len(seen) < 50 and time.monotonic() < deadline:
                round_, body = reader["hot"]
                assert body == b"v" * 1000
                assert round_ >= last, f"round {round_} after round {last}"
                last = round_
                seen.add(round_)
        finally:
            stop.set()
            thread.join(30)
    assert errors == []
    assert len(seen) >= 2


def test_a_cold_get_counts_one_miss_and_one_load_then_hits(location: Path) -> None:
    """A name loaded with its new handle is resident: the next get and a guard are hits."""
    with Shelf[Any](location) as shelf:
        shelf["a"] = list(range(1000))
    with Shelf[Any](location) as shelf:
        value = shelf["a"]
        assert value == list(range(1000))
        first = shelf.pool.statistics()
        assert (first.misses, first.loads, first.hits, first.resident_items) == (1, 1, 0, 1)
        assert first.bytes_loaded > 0
        assert shelf["a"] is value
        with shelf.load("a") as held:
            assert held is value
        after = shelf.pool.statistics()
        assert (after.misses, after.loads, after.hits) == (1, 1, 2)


def test_a_guard_on_a_cold_name_pins_the_loaded_value(location: Path) -> None:
    """``load`` of a name not in memory gives a guard on the value loaded with its handle."""
    with Shelf[Any](location, max_items=1) as shelf:
        shelf["a"] = "first"
        shelf["b"] = "second"
    with Shelf[Any](location, max_items=1) as shelf:
        with shelf.load("a") as held:
            assert held == "first"
            assert shelf["b"] == "second"  # would evict "a", which the guard pins
            assert shelf.pool.statistics().resident_items == 2
        assert shelf.pool.statistics().loads == 2


def test_a_failed_cold_get_leaves_no_handle_and_names_the_blob(location: Path) -> None:
    """A cold get of an altered blob leaves the pool and the store as they were."""
    with Shelf[Any](location) as shelf:
        shelf["a"] = b"z" * 5000
        shelf["b"] = b"y" * 5000
    with Shelf[Any](location) as shelf:
        record = shelf._index.read("a")
        assert record is not None
        blob = location / "blobs" / record.key.hex[:2] / record.key.hex
        data = bytearray(blob.read_bytes())
        data[-20] ^= 1
        blob.write_bytes(bytes(data))
        with pytest.raises(CorruptBlobError) as info:
            shelf["a"]
        assert str(blob) in str(info.value)
        stats = shelf.pool.statistics()
        assert (stats.load_errors, stats.loads, stats.resident_items) == (1, 0, 0)
        assert shelf.store.blob_keys() == frozenset()  # no reference left behind
        assert "a" not in shelf._live
        assert shelf["b"] == b"y" * 5000
        other = shelf._index.read("b")
        assert other is not None
        assert shelf.store.blob_keys() == frozenset({other.key})
