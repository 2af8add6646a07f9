"""JsonCodec passes the codec conformance suite and writes strict, compact UTF-8 JSON."""

from __future__ import annotations

import io
import json
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fb.codecs import JsonCodec
from fb.testing.codecs import LARGE, CodecConformance

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


class TestJsonCodec(CodecConformance):
    """JSON values, as the standard library reads them back."""

    # The standard library parses a whole text: loading holds the text and the value.
    load_overhead: ClassVar[float] = 1.25

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> JsonCodec:
        return JsonCodec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return VALUES

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> list[str]:
        return [f"{index:08d}" * (1 << 13) for index in range((LARGE >> 16) + 16)]


def _encode(value: Any) -> bytes:
    buffer = io.BytesIO()
    JsonCodec().dump(value, buffer)
    return buffer.getvalue()


@given(VALUES)
def test_output_is_what_json_dumps_writes(value: Any) -> None:
    """Small values are written exactly as json.dumps writes them, compact and in UTF-8."""
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert _encode(value) == expected.encode("utf-8")


def test_big_values_are_written_piece_by_piece_as_plain_json() -> None:
    """A big dict of lists, long strings and non-ASCII text is written as json.dumps writes it."""
    value = {
        "text": 'é🙂"\\\n' * 300_000,
        "rows": [{"id": i, 1: [i, "x" * 100]} for i in range(20_000)],
        "blobs": ["z" * (1 << 20), "y" * (2 << 20)],
        3.5: None,
        True: "t",
        None: 1,
    }
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert _encode(value) == expected.encode("utf-8")


def test_tuples_come_back_as_lists_and_keys_as_strings() -> None:
    """What JSON cannot say changes as json's own round trip changes it."""
    buffer = io.BytesIO(_encode({"t": (1, 2), 5: "five"}))
    assert JsonCodec().load(buffer) == {"t": [1, 2], "5": "five"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")]])
def test_non_finite_floats_are_refused(value: Any) -> None:
    """NaN and infinities are not JSON, so they are refused rather than written."""
    with pytest.raises(ValueError, match="JSON compliant"):
        _encode(value)


def test_unsupported_values_are_refused() -> None:
    """A value JSON cannot represent raises TypeError, in small and in big containers."""
    with pytest.raises(TypeError):
        _encode({"a": {1, 2}})
    with pytest.raises(TypeError, match="keys must be"):
        _encode({(1, 2): "x" * (2 << 20)})


def test_extra_data_is_refused() -> None:
    """A payload holding two JSON values is not one value."""
    with pytest.raises(ValueError, match="Extra data"):
        JsonCodec().load(io.BytesIO(b"1 2"))
