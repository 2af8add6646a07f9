"""PickleCodec passes the codec conformance suite."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from fb.codecs import PickleCodec
from fb.testing.codecs import CodecConformance

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
)
VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text() | st.integers(), inner)
        | st.frozensets(st.integers() | st.text(), max_size=5)
    ),
    max_leaves=20,
)


class TestPickleCodec(CodecConformance):
    """The default codec, at its default protocol."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> PickleCodec:
        return PickleCodec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return VALUES


class TestPickleProtocol4(TestPickleCodec):
    """An older protocol has the same name and passes the same suite."""

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> PickleCodec:
        return PickleCodec(protocol=4)


def test_protocols_share_a_name() -> None:
    """The protocol is recorded in the pickle stream, so it is not part of the name."""
    assert PickleCodec(protocol=4).name == PickleCodec().name == "pickle"


def test_protocol_is_checked() -> None:
    """A pickle protocol that does not exist is refused when the codec is built."""
    with pytest.raises(ValueError, match="protocol"):
        PickleCodec(protocol=9)
