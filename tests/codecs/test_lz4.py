"""Lz4Codec passes the codec conformance suite around several inner codecs."""

from __future__ import annotations

import io
from typing import Any

import lz4.frame
import numpy as np
import pytest
from hypothesis import strategies as st

from fb.codecs import Lz4Codec, MsgpackCodec, NumpyCodec, PickleCodec, get_codec
from fb.testing.codecs import CodecConformance

from . import test_msgpack, test_numpy, test_pickle


class TestLz4Pickle(CodecConformance):
    """lz4 around pickle, the wrapper's default inner codec."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> Lz4Codec:
        return Lz4Codec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return test_pickle.VALUES


class TestLz4Msgpack(CodecConformance):
    """lz4 (high-compression level) around msgpack, built from its spec."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> Lz4Codec:
        return Lz4Codec("msgpack", level=9)

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return test_msgpack.VALUES


class TestLz4Numpy(test_numpy.TestNumpyCodec):
    """lz4 around numpy: arrays of every layout, and a large one streamed."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> Lz4Codec:
        return Lz4Codec(NumpyCodec())


def test_name_names_the_inner_codec() -> None:
    """The name is "lz4:" and the inner codec's name, whatever the level."""
    assert Lz4Codec().name == "lz4:pickle"
    assert Lz4Codec(MsgpackCodec(), level=3).name == Lz4Codec("msgpack").name == "lz4:msgpack"
    assert get_codec("lz4:zstd:numpy").name == "lz4:zstd:numpy"


def test_payload_is_an_lz4_frame() -> None:
    """lz4.frame decompresses the payload to exactly what the inner codec writes."""
    value = np.zeros((512, 512))
    compressed, plain = io.BytesIO(), io.BytesIO()
    Lz4Codec(NumpyCodec()).dump(value, compressed)
    NumpyCodec().dump(value, plain)
    assert lz4.frame.decompress(compressed.getvalue()) == plain.getvalue()
    assert len(compressed.getvalue()) < len(plain.getvalue()) // 50


def test_truncated_frames_are_refused() -> None:
    """A frame cut short raises ValueError instead of returning part of a value."""
    buffer = io.BytesIO()
    Lz4Codec().dump(bytes(range(256)) * 1000, buffer)
    with pytest.raises(ValueError, match="truncated"):
        Lz4Codec().load(io.BytesIO(buffer.getvalue()[:-20]))


def test_data_after_the_frame_is_refused() -> None:
    """Bytes after the end of the LZ4 frame are not part of the payload."""
    buffer = io.BytesIO()
    Lz4Codec().dump("value", buffer)
    with pytest.raises(ValueError, match="after the LZ4 frame"):
        Lz4Codec().load(io.BytesIO(buffer.getvalue() + b"\x00"))


def test_data_after_the_inner_value_is_refused() -> None:
    """A frame holding more than the inner codec's value is refused."""
    plain = io.BytesIO()
    PickleCodec().dump("value", plain)
    with pytest.raises(ValueError, match="unexpected data"):
        Lz4Codec().load(io.BytesIO(lz4.frame.compress(plain.getvalue() + b"more")))


@pytest.mark.parametrize("store_size", [True, False])
def test_loads_reads_frames_with_or_without_a_stated_size(store_size: bool) -> None:
    """Frames that state their content size decode in one call; others stream; both load."""
    plain = io.BytesIO()
    PickleCodec().dump({"k": list(range(100))}, plain)
    frame = lz4.frame.compress(plain.getvalue(), store_size=store_size)
    assert Lz4Codec().loads(memoryview(frame)) == {"k": list(range(100))}


@pytest.mark.parametrize("tail", [b"\x00", b"more bytes after the frame"])
def test_loads_refuses_data_after_the_frame(tail: bytes) -> None:
    """The one-call path refuses what the streaming path refuses: bytes after the frame."""
    buffer = io.BytesIO()
    Lz4Codec().dump("value", buffer)
    with pytest.raises(ValueError, match="after the LZ4 frame"):
        Lz4Codec().loads(memoryview(buffer.getvalue() + tail))


def test_loads_refuses_a_frame_that_misstates_its_size() -> None:
    """A header whose content size is not what the frame holds does not decode quietly."""
    plain = io.BytesIO()
    PickleCodec().dump("value", plain)
    frame = bytearray(lz4.frame.compress(plain.getvalue()))
    frame[6] += 1  # the content size field (its header checksum now fails too)
    with pytest.raises((ValueError, RuntimeError)):
        Lz4Codec().loads(memoryview(bytes(frame)))


def test_levels_above_16_are_refused() -> None:
    """LZ4-HC stops at level 16."""
    with pytest.raises(ValueError, match="level"):
        Lz4Codec(level=17)
