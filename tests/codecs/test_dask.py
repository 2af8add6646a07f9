"""DaskCodec: distributed's spill serialization as an fb codec."""

from __future__ import annotations

import io
import pickle
import threading
from typing import Any

import dask
import numpy as np
import pytest
from hypothesis import strategies as st

from fb.codecs import DaskCodec, get_codec
from fb.testing.codecs import CodecConformance

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


class TestDaskCodec(CodecConformance):
    """The codec at distributed's spill settings."""

    max_examples = 20
    # deserialize_bytes needs the whole blob in one buffer (as distributed's spill files
    # do), and a bytes value is then copied out of it: one full copy while loading.
    load_overhead = 1.1

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> DaskCodec:
        return DaskCodec()

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return VALUES


def roundtrip(codec: DaskCodec, value: object) -> tuple[object, bytes]:
    """Return ``value`` after dump and load, and the bytes in between."""
    file = io.BytesIO()
    codec.dump(value, file)
    data = file.getvalue()
    return codec.load(io.BytesIO(data)), data


def test_is_registered_as_dask() -> None:
    """get_codec("dask") builds the codec, named "dask"."""
    assert get_codec("dask") == DaskCodec()
    assert DaskCodec().name == "dask"


def test_encodes_a_class_plain_pickle_refuses() -> None:
    """A class defined in a function (like one in ``__main__``) goes through cloudpickle."""

    class Local:
        def __init__(self, n: int) -> None:
            self.n = n

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(Local(1))
    back, _ = roundtrip(DaskCodec(), Local(3))
    assert type(back).__name__ == "Local"
    assert back.n == 3  # type: ignore[attr-defined]


def test_numpy_array_roundtrips() -> None:
    """A numpy array comes back equal, through Dask's numpy serializer."""
    value = np.arange(10_000, dtype="f8")
    back, _ = roundtrip(DaskCodec(), value)
    assert np.array_equal(back, value)  # type: ignore[arg-type]
    assert back.dtype == value.dtype  # type: ignore[attr-defined]


def test_compression_follows_distributed_spill_setting() -> None:
    """The spill-compression setting is read at each dump; an explicit one wins."""
    value = b"x" * 1_000_000
    with dask.config.set({"distributed.worker.memory.spill-compression": "zlib"}):
        back, zipped = roundtrip(DaskCodec(), value)
    assert back == value
    assert len(zipped) < 100_000
    back, plain = roundtrip(DaskCodec(compression=False), value)
    assert back == value
    assert len(plain) > len(value)


def test_unserializable_value_raises() -> None:
    """A value Dask cannot serialize raises from dump (fb wraps it in CodecError)."""
    with pytest.raises(Exception, match=r"serialize|pickle"):
        DaskCodec().dump(threading.Lock(), io.BytesIO())
