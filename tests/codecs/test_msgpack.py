"""MsgpackCodec passes the codec conformance suite and streams big values as plain MessagePack."""

from __future__ import annotations

import io
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fb.codecs import MsgpackCodec
from fb.testing.codecs import LARGE, CodecConformance

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner)
        | st.dictionaries(st.text() | st.binary() | st.integers(-(2**63), 2**63 - 1), inner)
    ),
    max_leaves=30,
)


class TestMsgpackCodec(CodecConformance):
    """MessagePack values; the large value is a top-level bytes (read straight into place)."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> MsgpackCodec:
        return MsgpackCodec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return VALUES


class TestMsgpackChunks(TestMsgpackCodec):
    """The large value is a dict holding a list of 1 MiB chunks, written piece by piece."""

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> dict[str, Any]:
        chunks = [bytes([index]) * (1 << 20) for index in range((LARGE >> 20) + 1)]
        return {"name": "chunks", "chunks": chunks, "text": "é" * (1 << 20)}


def _encode(value: Any) -> bytes:
    buffer = io.BytesIO()
    MsgpackCodec().dump(value, buffer)
    return buffer.getvalue()


@given(VALUES)
def test_output_is_what_packb_writes(value: Any) -> None:
    """Small values are written exactly as msgpack.packb writes them."""
    assert _encode(value) == msgpack.packb(value)


def test_big_values_are_plain_msgpack() -> None:
    """A big nested value written piece by piece is what msgpack.packb writes, byte for byte."""
    value = {
        "records": [{"id": i, "name": f"n{i}", "tags": [i, -i]} for i in range(30_000)],
        "blob": b"\x00\x01" * (1 << 20),
        "text": "é🙂" * (1 << 19),
        "ascii": "a" * (3 << 20),
        "nested": {"deep": [b"y" * (2 << 20), bytearray(b"z" * (1 << 20))]},
        7: (1, 2),
    }
    assert _encode(value) == msgpack.packb(value)


@pytest.mark.parametrize("size", [0, 255, 256, 65_535, 65_536, 3 << 20])
def test_top_level_bytes_and_str_round_trip(size: int) -> None:
    """Top-level bytes and str of every length class are read straight from the payload."""
    codec = MsgpackCodec()
    for value in (b"b" * size, "s" * size, "é" * size):
        data = _encode(value)
        assert data == msgpack.packb(value)
        assert codec.load(io.BytesIO(data)) == value


def test_tuples_come_back_as_lists() -> None:
    """MessagePack has one array type, so tuples come back as lists."""
    assert MsgpackCodec().load(io.BytesIO(_encode({"t": (1, (2, 3))}))) == {"t": [1, [2, 3]]}


@pytest.mark.parametrize("payload", [b"\x01\x02", b"\xc4\x02ab!", b"\xa1a\xc0"])
def test_trailing_bytes_are_refused(payload: bytes) -> None:
    """A payload with bytes after its one value is refused."""
    with pytest.raises(ValueError, match="unexpected bytes"):
        MsgpackCodec().load(io.BytesIO(payload))


@pytest.mark.parametrize("payload", [b"", b"\x92\x01", b"\xc5\x00", b"\xc6\x00\x00\x00\x09abc"])
def test_truncated_payloads_are_refused(payload: bytes) -> None:
    """An empty or cut payload raises ValueError."""
    with pytest.raises(ValueError, match=r"empty|truncated"):
        MsgpackCodec().load(io.BytesIO(payload))


def test_integers_beyond_64_bits_are_refused() -> None:
    """MessagePack integers have at most 64 bits."""
    with pytest.raises(OverflowError):
        _encode(2**64)
