"""NumpyCodec passes the codec conformance suite and writes payloads that numpy.load reads."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fb.codecs import NumpyCodec
from fb.testing.codecs import LARGE, CodecConformance

_DTYPES = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes()
    | hnp.unsigned_integer_dtypes()
    | hnp.floating_dtypes()
    | hnp.complex_number_dtypes()
    | hnp.datetime64_dtypes()
    | hnp.timedelta64_dtypes()
    | hnp.byte_string_dtypes()
    | hnp.unicode_string_dtypes()
    | st.just(np.dtype([("x", "<i4"), ("y", ">f8"), ("name", "S3")]))
)
_ARRAYS = hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))


def _layouts(array: np.ndarray[Any, Any]) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    return st.sampled_from(
        [array, np.asfortranarray(array), array.T, array[::2] if array.ndim else array]
    )


ARRAYS = _ARRAYS.flatmap(_layouts)


class TestNumpyCodec(CodecConformance):
    """Arrays of every classic dtype, shape and memory layout."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> NumpyCodec:
        return NumpyCodec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return ARRAYS

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> np.ndarray[Any, Any]:
        return np.random.default_rng(0).random(((LARGE >> 3) + (1 << 17),))

    def assert_same(self, actual: Any, expected: Any) -> None:
        assert type(actual) is np.ndarray
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        # Bit for bit: NaN payloads, signed zeros and NaT included.
        assert actual.tobytes() == expected.tobytes()


def _encode(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    NumpyCodec().dump(array, buffer)
    return buffer.getvalue()


@given(ARRAYS)
def test_payload_is_what_numpy_save_writes(array: np.ndarray[Any, Any]) -> None:
    """A payload is byte for byte the .npy file numpy.save writes, and numpy.load reads it."""
    expected = io.BytesIO()
    np.save(expected, array, allow_pickle=False)
    assert _encode(array) == expected.getvalue()
    loaded = np.load(io.BytesIO(_encode(array)), allow_pickle=False)
    # Compare the bytes: NaN != NaN inside structured fields defeats assert_array_equal.
    assert loaded.dtype == array.dtype
    assert loaded.shape == array.shape
    assert loaded.tobytes() == array.tobytes()


def test_fortran_order_is_kept() -> None:
    """A Fortran-ordered array comes back Fortran-ordered, without a copy in between."""
    array = np.asfortranarray(np.arange(24.0).reshape(4, 6))
    loaded = NumpyCodec().load(io.BytesIO(_encode(array)))
    assert loaded.flags.f_contiguous
    np.testing.assert_array_equal(loaded, array)


def test_object_arrays_are_refused_both_ways() -> None:
    """Object arrays would need pickle, so they are neither written nor read."""
    array = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(ValueError, match="allow_pickle"):
        _encode(array)
    pickled = io.BytesIO()
    np.save(pickled, array, allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        NumpyCodec().load(io.BytesIO(pickled.getvalue()))


def test_non_arrays_are_refused() -> None:
    """Lists and scalars are not arrays; the codec does not guess a dtype for them."""
    with pytest.raises(TypeError, match="numpy arrays"):
        NumpyCodec().dump([1, 2, 3], io.BytesIO())  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", [3, 20, -1])
def test_truncated_payloads_are_refused(cut: int) -> None:
    """A payload cut in its magic, its header or its data raises ValueError."""
    data = _encode(np.arange(10))
    with pytest.raises(ValueError):
        NumpyCodec().load(io.BytesIO(data[:cut]))


def test_trailing_bytes_are_refused() -> None:
    """Bytes after the array data are not part of an .npy payload."""
    with pytest.raises(ValueError, match="unexpected bytes"):
        NumpyCodec().load(io.BytesIO(_encode(np.arange(3)) + b"!"))


def test_format_3_headers_are_read() -> None:
    """Field names outside Latin-1 need .npy format 3.0, which numpy's own reader handles."""
    array = np.zeros(3, dtype=[("é€", "<i4")])
    with pytest.warns(UserWarning, match="format 3.0"):
        data = _encode(array)
    np.testing.assert_array_equal(NumpyCodec().load(io.BytesIO(data)), array)
