"""A real third-party plugin, installed with pip, is found and used by name."""

from __future__ import annotations

import io
import uuid
from types import ModuleType
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st

from fb import BackingStore, FBPool
from fb.backends import available_backends, get_backend, open_backend
from fb.codecs import available_codecs, get_codec
from fb.exceptions import PluginNotFoundError
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


def test_backend_is_found_by_name(example_plugin: ModuleType) -> None:
    """get_backend("dictmem") returns the plugin's factory, which builds a working Strategy."""
    assert "dictmem" in available_backends()
    strategy = get_backend("dictmem")("rot13", "dictmem://found-by-name")
    assert isinstance(strategy, Strategy)
    assert isinstance(strategy, example_plugin.DictStore)
    store: Any = strategy
    key = uuid.uuid4()
    store.store(key, "attack at dawn")
    assert store.raw(key) == b"nggnpx ng qnja"
    assert store.load(key) == "attack at dawn"


def test_pool_spills_through_the_plugins(example_plugin: ModuleType) -> None:
    """A pool whose backend and codec both come from the plugin evicts and reloads values."""
    strategy = open_backend("dictmem://pool", codec="rot13")
    store: BackingStore[str] = BackingStore(strategy)
    try:
        pool: FBPool[str] = FBPool(store, max_items=1)
        first, second = pool.insert("first value"), pool.insert("second value")
        store.finished()
        with first.load() as value:
            assert value == "first value"
        with second.load() as value:
            assert value == "second value"
        first.close()
        second.close()
        store.finished()
    finally:
        store.close()


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
    assert get_backend("dictmem") is example_plugin.dict_backend
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
