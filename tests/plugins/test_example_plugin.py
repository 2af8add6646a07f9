"""A real third-party plugin, found through its entry points, is used by name and passes the kit."""

from __future__ import annotations

import io
import random
import sqlite3
import string
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st

import fb
from fb.backends import PreparedPath, available_backends, get_backend
from fb.blobformat import read_header
from fb.codecs import available_codecs, get_codec
from fb.exceptions import PluginNotFoundError
from fb.testing.backends import BackendSuite, PersistSuite
from fb.testing.codecs import LARGE, CodecConformance
from fb.typing import Codec, Strategy


def test_codec_is_found_by_name(example_plugin: ModuleType) -> None:
    """get_codec("rot13") builds the plugin's codec, and available_codecs lists it."""
    codec = get_codec("rot13")
    assert isinstance(codec, example_plugin.Rot13Codec)
    assert "rot13" in available_codecs()
    buffer = io.BytesIO()
    codec.dump("Hello, fb", buffer)
    assert buffer.getvalue() == b"Uryyb, so"


def test_codec_composes_with_built_in_wrappers(example_plugin: ModuleType) -> None:
    """A plugin codec is a spec like any other: zstd:rot13 compresses its output."""
    codec = get_codec("zstd:rot13")
    assert codec.name == "zstd:rot13"
    buffer = io.BytesIO()
    codec.dump("plugin " * 1000, buffer)
    buffer.seek(0)
    assert codec.load(buffer) == "plugin " * 1000


def test_backend_is_found_by_name(example_plugin: ModuleType, tmp_path: Path) -> None:
    """get_backend("exampledb") returns the plugin's factory, which builds a working Strategy."""
    assert "exampledb" in available_backends()
    strategy = get_backend("exampledb")("rot13", f"exampledb://{tmp_path}")
    assert isinstance(strategy, Strategy)
    assert isinstance(strategy, example_plugin.SqliteStore)
    store: Any = strategy
    key = uuid.uuid4()
    store.store(key, "attack at dawn")
    assert b"nggnpx ng qnja" in store.raw(key)
    assert read_header(store.raw(key)).codec == "rot13"  # framed as every fb blob
    assert store.load(key) == "attack at dawn"
    store.close()


def test_pool_spills_through_the_plugins(example_plugin: ModuleType, tmp_path: Path) -> None:
    """open_pool on the plugin's protocol spills and reloads values with the plugin's codec."""
    with fb.open_pool(f"exampledb://{tmp_path}", codec="rot13", max_items=1) as pool:
        assert isinstance(pool.store.strategy, example_plugin.SqliteStore)
        first, second = pool.insert("first value"), pool.insert("second value")
        pool.store.finished()
        with first.load() as value:
            assert value == "first value"
        with second.load() as value:
            assert value == "second value"


def test_open_pool_passes_the_secret_key(example_plugin: ModuleType, tmp_path: Path) -> None:
    """open_pool hands secret_key to the plugin's factory, whose blobs are then signed."""
    secret = b"sixteen bytes at least"
    with fb.open_pool(f"exampledb://{tmp_path}", max_items=0, secret_key=secret) as pool:
        handle = pool.insert("signed")
        pool.store.finished()
        strategy: Any = pool.store.strategy
        assert strategy.blobs.signed
        assert read_header(strategy.raw(handle.key)).flags & 1


def test_broken_entry_point_names_its_distribution(example_plugin: ModuleType) -> None:
    """The broken entry point raises PluginNotFoundError naming fb-plugin-example and the error."""
    assert "broken" in available_codecs()
    with pytest.raises(PluginNotFoundError) as caught:
        get_codec("broken")
    message = str(caught.value)
    assert "fb-plugin-example" in message
    assert "fb_plugin_example_missing" in message
    assert caught.value.name == "broken"
    assert isinstance(caught.value.__cause__, ImportError)


def test_broken_entry_point_breaks_nothing_else(example_plugin: ModuleType) -> None:
    """After the broken entry point failed, the plugin's and the built-in names still work."""
    with pytest.raises(PluginNotFoundError):
        get_codec("broken")
    assert get_codec("rot13").name == "rot13"
    assert get_codec("zstd:msgpack").name == "zstd:msgpack"
    assert get_backend("exampledb") is example_plugin.sqlite_backend
    with pytest.raises(PluginNotFoundError):
        get_codec("broken")


class TestRot13Conformance(CodecConformance):
    """The plugin's codec passes fb's conformance suite, as a plugin author would run it."""

    # Strings are immutable: the slices read back are joined, so loading holds them twice.
    load_overhead: ClassVar[float] = 1.25

    @pytest.fixture(name="codec")
    def fixture_codec(self, example_plugin: ModuleType) -> Codec[Any]:
        return get_codec("rot13")

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return st.text()

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> str:
        return "fb plugin " * ((LARGE >> 3) // 10 * 8 + (1 << 17))


class TestSqliteStoreConformance(BackendSuite, PersistSuite):
    """The plugin's backend passes every backend suite, given only fixtures and raw hooks."""

    @pytest.fixture(name="location")
    def fixture_location(self, example_plugin: ModuleType, tmp_path: Path) -> PreparedPath:
        return PreparedPath(tmp_path / "cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, tmp_path: Path) -> PreparedPath:
        (tmp_path / "persist").mkdir()
        return PreparedPath(tmp_path / "persist")

    def make_strategy(self, location: PreparedPath) -> Strategy[Any]:
        strategy: Strategy[Any] = get_backend("exampledb")(self.make_codec(), location)
        return strategy

    def _rows(self, location: PreparedPath, query: str, *args: Any) -> list[Any]:
        database = Path(location.root) / "blobs.sqlite"
        if not database.exists():
            return []
        connection = sqlite3.connect(database, isolation_level=None)
        try:
            return connection.execute(query, args).fetchall()
        finally:
            connection.close()

    def read_raw(self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID) -> bytes:
        (row,) = self._rows(location, "SELECT data FROM blobs WHERE key = ?", key.hex)
        return bytes(row[0])

    def write_raw(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID, data: bytes
    ) -> None:
        self._rows(location, "UPDATE blobs SET data = ? WHERE key = ?", data, key.hex)

    def blob_names(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID
    ) -> list[str]:
        rows = self._rows(location, "SELECT key FROM blobs WHERE key = ?", key.hex)
        return [f"blobs.sqlite#{row[0]}" for row in rows]


class TestSqliteStoreWithRot13(TestSqliteStoreConformance):
    """The same suites with the plugin's own codec: nothing in them assumes pickle."""

    def make_codec(self) -> Codec[Any]:
        return get_codec("rot13")

    def sample_values(self) -> list[Any]:
        return ["", "short", "ünïcödé " * 1000, "fb " * (2**20)]

    def sized_value(self, seed: int, size: int) -> Any:
        return "".join(random.Random(seed).choices(string.ascii_letters, k=size))

    def failing_value(self) -> Any:
        # Two slices of text: the first (1 MiB) is written, the second cannot be UTF-8.
        return "a" * (1 << 20) + "\ud800"
