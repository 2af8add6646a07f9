"""ZstdCodec passes the codec conformance suite around several inner codecs."""

from __future__ import annotations

import io
from typing import Any

import pytest
import zstandard
from hypothesis import strategies as st

from fb.codecs import JsonCodec, MsgpackCodec, PickleCodec, ZstdCodec, get_codec
from fb.testing.codecs import CodecConformance

from . import test_json, test_msgpack, test_pickle


class TestZstdPickle(CodecConformance):
    """zstd around pickle, the wrapper's default inner codec."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> ZstdCodec:
        return ZstdCodec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return test_pickle.VALUES


class TestZstdMsgpack(CodecConformance):
    """zstd around msgpack at a high level, built from its spec."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> ZstdCodec:
        return ZstdCodec("msgpack", level=9)

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return test_msgpack.VALUES


class TestZstdJson(CodecConformance):
    """zstd around JSON at a negative (fast) level."""

    load_overhead = test_json.TestJsonCodec.load_overhead

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> ZstdCodec:
        return ZstdCodec(JsonCodec(), level=-5)

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return test_json.VALUES

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> list[str]:
        return test_json.TestJsonCodec.fixture_codec_large_value.__wrapped__(self)  # type: ignore[attr-defined, no-any-return]


def test_name_names_the_inner_codec() -> None:
    """The name is "zstd:" and the inner codec's name, whatever the level."""
    assert ZstdCodec().name == "zstd:pickle"
    assert ZstdCodec(MsgpackCodec(), level=1).name == ZstdCodec("msgpack").name == "zstd:msgpack"
    assert get_codec("zstd:msgpack") == ZstdCodec(MsgpackCodec())


def test_payload_is_a_zstd_frame() -> None:
    """Another zstd tool decompresses the payload to exactly what the inner codec writes."""
    value = {"numbers": list(range(1000)), "text": "zstd " * 1000}
    compressed, plain = io.BytesIO(), io.BytesIO()
    ZstdCodec(PickleCodec()).dump(value, compressed)
    PickleCodec().dump(value, plain)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed.getvalue()))
    assert reader.read() == plain.getvalue()
    assert len(compressed.getvalue()) < len(plain.getvalue()) // 3


def test_levels_read_each_other() -> None:
    """The level changes the payload, not how it is read."""
    buffer = io.BytesIO()
    ZstdCodec(level=12).dump(b"x" * 10_000, buffer)
    buffer.seek(0)
    assert ZstdCodec(level=1).load(buffer) == b"x" * 10_000


@pytest.mark.parametrize("level", [23, -(1 << 17) - 1])
def test_levels_out_of_range_are_refused(level: int) -> None:
    """zstd has no level above 22 or below -131072."""
    with pytest.raises(ValueError, match="level"):
        ZstdCodec(level=level)


def test_data_after_the_inner_value_is_refused() -> None:
    """A frame holding more than the inner codec's value is refused, as is junk after it."""
    compressor = zstandard.ZstdCompressor()
    plain = io.BytesIO()
    PickleCodec().dump("value", plain)
    with pytest.raises(ValueError, match="unexpected data"):
        ZstdCodec().load(io.BytesIO(compressor.compress(plain.getvalue() + b"more")))
    with pytest.raises(zstandard.ZstdError):
        ZstdCodec().load(io.BytesIO(compressor.compress(plain.getvalue()) + b"junk!"))
